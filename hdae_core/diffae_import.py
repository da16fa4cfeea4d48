"""Import official DiffAE checkpoints (autoencoder, ``latent.pkl``, attribute classifier) safely.

DiffAE's ``BeatGANsAutoencModel`` maps one-to-one onto the ``dae`` variant: ``encoder.*`` stays,
``time_embed.time_embed.N.*`` becomes ``decoder.time_embed.N.*`` and every other ``X`` becomes
``decoder.X``. The architecture is read from the weights' names and shapes and cross-checked with
the checkpoint's hyper-parameters; every file is read with ``safe_pickle.safe_load``, so nothing
in it runs.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from . import checkpoint as ckpt_io
from .config import DiffusionConfig, ModelConfig
from .directions import AttributeDirections, load_directions
from .data.celeba import CELEBA_ATTRIBUTES  # CelebA-HQ's 40 attributes in DiffAE's order
from .model import HDAE
from .safe_pickle import safe_load
from .stats import LatentStats

__all__ = [
    "CELEBA_ATTRIBUTES", "DiffAEImportError", "read_diffae_checkpoint",
    "config_from_diffae", "diffae_to_hdae", "hdae_to_diffae", "import_diffae", "import_latent_stats",
    "import_classifier", "import_diffae_folder", "main",
]

class DiffAEImportError(ValueError):
    """A file that is not the DiffAE checkpoint it is given as; the message names the file and the problem."""


# ---------------------------------------------------------------- names


def diffae_to_hdae(name: str) -> str:
    """DiffAE ``BeatGANsAutoencModel`` parameter name → ours (variant ``dae``)."""
    if name.startswith("encoder."):
        return name
    if name.startswith("time_embed.time_embed."):
        return "decoder.time_embed." + name[len("time_embed.time_embed."):]
    return "decoder." + name


def hdae_to_diffae(name: str) -> str:
    """Our ``dae`` parameter name → DiffAE's (the inverse of ``diffae_to_hdae``)."""
    if name.startswith("encoder."):
        return name
    if name.startswith("decoder.time_embed."):
        return "time_embed.time_embed." + name[len("decoder.time_embed."):]
    if name.startswith("decoder."):
        return name[len("decoder."):]
    raise ValueError(f"{name}: not a parameter of the dae variant's encoder or decoder")


# ---------------------------------------------------------------- reading


def read_diffae_checkpoint(path: str | Path) -> dict[str, Any]:
    """A DiffAE (PyTorch-Lightning) ``.ckpt`` as a plain dict, read without running code from it."""
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise DiffAEImportError(f"{path}: expected a checkpoint dict, found a {type(obj).__name__}")
    return obj


def _lightning_state(ck: Mapping[str, Any], source: str, what: str) -> Mapping[str, torch.Tensor]:
    sd = ck.get("state_dict") if isinstance(ck, Mapping) else None
    if not isinstance(sd, Mapping):
        keys = ", ".join(map(repr, list(ck)[:8])) if isinstance(ck, Mapping) else type(ck).__name__
        raise DiffAEImportError(
            f"{source}: not a DiffAE {what} checkpoint: expected a PyTorch-Lightning dict with a "
            f"'state_dict' entry (as DiffAE's last.ckpt), found {keys or 'an empty dict'}"
        )
    return sd


def _hparams(ck: Mapping[str, Any]) -> dict[str, Any]:
    hp = ck.get("hyper_parameters") or {}
    if not isinstance(hp, Mapping):
        return {}
    # DiffAE's enums (choices.*) arrive as inert records {"__class__": ..., "args": [value]}: keep the value
    return {k: v["args"][0] if isinstance(v, dict) and str(v.get("__class__", "")).startswith("choices.")
            and len(v.get("args", ())) == 1 else v for k, v in hp.items()}


def _select(state: Mapping[str, torch.Tensor], ema: bool, source: str) -> dict[str, torch.Tensor]:
    """The autoencoder's own weights (``ema_model.*`` or ``model.*``) without the prefix."""
    prefix = "ema_model." if ema else "model."
    sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not sd:
        prefixes = sorted({k.split(".", 1)[0] + "." for k in state})
        hint = ""
        if any(k.startswith(("classifier.", "ema_classifier.")) for k in state):
            hint = "; this looks like an attribute-classifier checkpoint (import it as the classifier)"
        elif not ema and any(k.startswith("ema_model.") for k in state):
            hint = "; it holds EMA weights only (use ema=True)"
        elif ema and any(k.startswith("model.") for k in state):
            hint = "; it holds no EMA weights (use ema=False for the raw model)"
        raise DiffAEImportError(
            f"{source}: no '{prefix}*' weights in state_dict (prefixes found: {', '.join(prefixes) or 'none'}){hint}"
        )
    if "encoder.out.3.weight" not in sd or "time_embed.time_embed.0.weight" not in sd:
        raise DiffAEImportError(
            f"{source}: the '{prefix}*' weights are not a DiffAE autoencoder (BeatGANsAutoencModel): "
            "no encoder.out.3.weight / time_embed.time_embed.0.weight (an unconditional or latent DDIM model?)"
        )
    return sd


# ---------------------------------------------------------------- architecture from weights


def _indices(sd: Mapping[str, Any], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


def _is_res(sd, p: str) -> bool:
    return f"{p}.in_layers.2.weight" in sd


def _out_ch(sd, p: str) -> int:
    return int(sd[f"{p}.in_layers.2.weight"].shape[0])


def _in_ch(sd, p: str) -> int:
    return int(sd[f"{p}.in_layers.2.weight"].shape[1])


def _mult(ch: int, mc: int, where: str) -> int:
    if ch % mc:
        raise DiffAEImportError(f"{where}: {ch} channels are not a multiple of model_channels {mc}")
    return ch // mc


def _as_tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _encoder_layout(sd, hp: Mapping[str, Any], nrb: int, mc: int, source: str):
    """The semantic encoder's (ResBlocks per level, channel multipliers, levels with attention, levels without):
    the decoder's layout without an up path, its depth per level from the hyper-parameters."""
    enc_idx = _indices(sd, "encoder.input_blocks")
    enc_nrb = int(hp.get("net_enc_num_res_blocks") or nrb)
    enc_per = enc_nrb + 1
    if not enc_idx or enc_idx != list(range(len(enc_idx))) or len(enc_idx) % enc_per:
        raise DiffAEImportError(
            f"{source}: {len(enc_idx)} encoder input blocks do not split into levels of {enc_nrb} ResBlocks + a downsampler"
        )
    Le = len(enc_idx) // enc_per
    enc_mult, enc_attn_levels, enc_plain_levels = [], set(), set()
    for level in range(Le):
        chans = set()
        for k in range(enc_nrb):
            b = f"encoder.input_blocks.{1 + level * enc_per + k}"
            chans.add(_out_ch(sd, f"{b}.0"))
            (enc_attn_levels if f"{b}.1.qkv.weight" in sd else enc_plain_levels).add(level)
        if len(chans) != 1:
            raise DiffAEImportError(f"{source}: encoder level {level} has ResBlocks of {sorted(chans)} channels")
        c = chans.pop()
        if level < Le - 1:
            down = f"encoder.input_blocks.{(level + 1) * enc_per}.0"
            if not _is_res(sd, down) or _in_ch(sd, down) != c or _out_ch(sd, down) != c:
                raise DiffAEImportError(f"{source}: encoder block {down} is not a downsampling ResBlock of {c} channels")
        enc_mult.append(_mult(c, mc, f"{source}: encoder level {level}"))
    return enc_nrb, enc_mult, enc_attn_levels, enc_plain_levels


def config_from_diffae(hparams: Mapping[str, Any] | None, state_dict: Mapping[str, torch.Tensor],
                       image_size: int | None = None, source: str = "checkpoint") -> ModelConfig:
    """The ``dae`` ModelConfig of a DiffAE autoencoder, read from its weights' names and shapes.

    ``state_dict`` holds DiffAE's names (``input_blocks.…``, ``encoder.…``); the hyper-parameters
    give what the weights cannot (heads, dropout, image size) and are checked against the weights.
    """
    hp = dict(hparams or {})
    sd = state_dict
    if "time_embed.time_embed.0.weight" not in sd or "encoder.out.3.weight" not in sd:
        raise DiffAEImportError(f"{source}: not a DiffAE autoencoder state dict (no time_embed / encoder.out weights)")
    _check_supported(hp, source)
    embed, mc = (int(s) for s in sd["time_embed.time_embed.0.weight"].shape)
    in_channels = int(sd["input_blocks.0.0.weight"].shape[1])
    code_dim = int(sd["encoder.out.3.weight"].shape[0])

    # decoder: levels from the upsampling ResBlocks that close every up-path level but the finest
    out_idx = _indices(sd, "output_blocks")
    in_idx = _indices(sd, "input_blocks")
    up = [j for j in out_idx if any(_is_res(sd, f"output_blocks.{j}.{k}") for k in (1, 2))]
    L = len(up) + 1
    if not out_idx or len(out_idx) % L or out_idx != list(range(len(out_idx))):
        raise DiffAEImportError(f"{source}: {len(out_idx)} output blocks do not split into {L} levels")
    per = len(out_idx) // L
    nrb = per - 1
    if up != [per * (i + 1) - 1 for i in range(L - 1)] or nrb < 1:
        raise DiffAEImportError(f"{source}: upsampling blocks at {up} do not fit {L} levels of {per} output blocks")
    if in_idx != list(range(L * per)):
        raise DiffAEImportError(
            f"{source}: {len(in_idx)} input blocks for {L} levels of {nrb} ResBlocks "
            f"(expected {L * per}; unequal down/up depths are not supported)"
        )
    channel_mult, attn_levels, plain_levels = [], set(), set()
    for level in range(L):
        chans = set()
        blocks = [f"output_blocks.{j}" for j in range((L - 1 - level) * per, (L - level) * per)]
        blocks += [f"input_blocks.{1 + level * per + k}" for k in range(nrb)]
        for b in blocks:
            chans.add(_out_ch(sd, f"{b}.0"))
            (attn_levels if f"{b}.1.qkv.weight" in sd else plain_levels).add(level)
        if len(chans) != 1:
            raise DiffAEImportError(f"{source}: decoder level {level} has ResBlocks of {sorted(chans)} channels")
        channel_mult.append(_mult(chans.pop(), mc, f"{source}: decoder level {level}"))
    if "middle_block.1.qkv.weight" not in sd or "encoder.middle_block.1.qkv.weight" not in sd:
        raise DiffAEImportError(f"{source}: a middle block without attention (autoenc_mid_attn=False) is not supported")

    enc_nrb, enc_mult, enc_attn_levels, enc_plain_levels = _encoder_layout(sd, hp, nrb, mc, source)
    Le = len(enc_mult)

    if image_size is None:
        image_size = hp.get("img_size")
    if image_size is None:
        # every released DiffAE encoder ends at 4 px; the weights themselves carry no resolution
        image_size = 4 * 2 ** (Le - 1)
        warnings.warn(f"{source}: no img_size in the hyper-parameters; assuming {image_size} px "
                      "(the encoder ending at 4 px, as in every released DiffAE config)", stacklevel=2)
    image_size = int(image_size)
    res = {level: image_size // 2 ** level for level in range(max(L, Le))}
    attn = {res[l] for l in attn_levels} | {res[l] for l in enc_attn_levels}
    clash = attn & ({res[l] for l in plain_levels} | {res[l] for l in enc_plain_levels})
    if clash:
        raise DiffAEImportError(f"{source}: attention at {sorted(clash)} px in some blocks but not in others "
                                "(separate encoder attention resolutions are not supported)")
    attention_resolutions = tuple(sorted(attn, reverse=True))

    cfg = ModelConfig(
        image_size=image_size, in_channels=in_channels, model_channels=mc, channel_mult=tuple(channel_mult),
        enc_channel_mult=tuple(enc_mult), attention_resolutions=attention_resolutions, num_res_blocks=nrb,
        enc_num_res_blocks=None if enc_nrb == nrb else enc_nrb, num_heads=int(hp.get("net_beatgans_attn_head") or 1),
        embed_channels=embed, code_dim=code_dim, dropout=float(hp.get("dropout", 0.1)), variant="dae",
    )
    _cross_check(cfg, hp, sd, set(res.values()), source)
    return cfg


def _check_supported(hp: Mapping[str, Any], source: str) -> None:
    """Refuse DiffAE options whose networks the ``dae`` variant does not compute."""
    problems = []

    def want(key, ok, what):
        if key in hp and hp[key] is not None and not ok(hp[key]):
            problems.append(f"{key}={hp[key]!r} ({what})")

    want("model_name", lambda v: v == "beatgans_autoenc", "only the autoencoder beatgans_autoenc is supported")
    want("net_enc_use_time", lambda v: not v, "a time-conditioned encoder")
    want("net_autoenc_stochastic", lambda v: not v, "a stochastic encoder")
    want("beatgans_rescale_timesteps", lambda v: not v, "rescaled timesteps")
    want("net_beatgans_resnet_two_cond", lambda v: bool(v), "ResBlocks without the code modulation")
    want("net_enc_pool", lambda v: v == "adaptivenonzero", "only the 'adaptivenonzero' pooling head")
    want("net_resblock_updown", lambda v: bool(v), "conv/pool resampling instead of ResBlock up/down")
    want("beta_scheduler", lambda v: v == "linear", "only the linear β schedule")
    want("net_num_input_res_blocks", lambda v: v == hp.get("net_num_res_blocks"), "unequal down/up depths")
    want("net_enc_attn", lambda v: set(_as_tuple(v)) == set(_as_tuple(hp.get("net_attn", v))),
         "separate encoder attention resolutions")
    want("net_beatgans_resnet_cond_channels", lambda v: v == hp.get("style_ch", v), "a code width other than style_ch")
    if problems:
        raise DiffAEImportError(f"{source}: unsupported DiffAE settings: {'; '.join(problems)}")


def _cross_check(cfg: ModelConfig, hp: Mapping[str, Any], sd, reachable: set[int], source: str) -> None:
    """Raise when the hyper-parameters and the weights describe different networks."""
    cond_w = sd.get("input_blocks.1.0.cond_emb_layers.1.weight")
    if cond_w is not None and int(cond_w.shape[1]) != cfg.code_dim:
        raise DiffAEImportError(f"{source}: encoder emits {cfg.code_dim}-d codes but the decoder reads "
                                f"{int(cond_w.shape[1])}-d ones")
    checks = [
        ("net_ch", cfg.model_channels, int),
        ("net_ch_mult", cfg.channel_mult, lambda v: tuple(_as_tuple(v))),
        ("net_enc_channel_mult", cfg.enc_channel_mult, lambda v: tuple(_as_tuple(v))),
        ("net_num_res_blocks", cfg.num_res_blocks, int),
        ("net_enc_num_res_blocks", cfg.enc_num_res_blocks or cfg.num_res_blocks, int),
        ("net_beatgans_embed_channels", cfg.embed_channels, int),
        ("style_ch", cfg.code_dim, int),
        ("net_attn", set(cfg.attention_resolutions), lambda v: set(_as_tuple(v)) & reachable),
    ]
    bad = []
    for key, got, conv in checks:
        if hp.get(key) is not None:
            claimed = conv(hp[key])
            if claimed != got:
                bad.append(f"{key}: hyper-parameters say {claimed}, weights say {got}")
    if bad:
        raise DiffAEImportError(f"{source}: hyper-parameters disagree with the weights ({'; '.join(bad)})")
    for b in [k[: -len(".qkv.weight")] for k in sd if k.endswith(".qkv.weight")]:
        if int(sd[f"{b}.qkv.weight"].shape[1]) % cfg.num_heads:
            raise DiffAEImportError(f"{source}: {b} has {int(sd[f'{b}.qkv.weight'].shape[1])} channels, "
                                    f"not divisible into net_beatgans_attn_head={cfg.num_heads} heads")


# ---------------------------------------------------------------- models


def _build(cfg: ModelConfig, dcfg: DiffusionConfig, sd: Mapping[str, torch.Tensor], source: str) -> HDAE:
    model = HDAE(cfg, dcfg)
    mapped = {diffae_to_hdae(k): v for k, v in sd.items()}
    # name every key as DiffAE's file spells it
    parts = ckpt_io.state_mismatch(model.state_dict(), mapped, show=6,
                                   name=lambda k: hdae_to_diffae(k) if k.startswith(("encoder.", "decoder.")) else k)
    if parts:
        raise DiffAEImportError(f"{source}: weights do not map onto the dae model {cfg} ({' | '.join(parts)})")
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _diffusion_config(hp: Mapping[str, Any]) -> DiffusionConfig:
    return DiffusionConfig(T=int(hp.get("T") or 1000))


def _models(ck: Mapping[str, Any], source: str, image_size: int | None, which: Sequence[bool]) -> list[HDAE | None]:
    state = _lightning_state(ck, source, "autoencoder")
    hp = _hparams(ck)
    out, cfg = [], None
    for ema in which:
        if ema and not any(k.startswith("ema_model.") for k in state) and len(which) > 1:
            out.append(None)  # a folder import keeps the raw model alone
            continue
        sd = _select(state, ema, source)
        if cfg is None:
            cfg = config_from_diffae(hp, sd, image_size=image_size, source=source)
        out.append(_build(cfg, _diffusion_config(hp), sd, f"{source} ({'ema_model' if ema else 'model'})"))
    return out


def import_diffae(path: str | Path, ema: bool = True, image_size: int | None = None) -> HDAE:
    """A DiffAE autoencoder ``.ckpt`` as our ``dae`` model in eval mode: EMA weights, or ``model.*`` with ema=False."""
    ck = read_diffae_checkpoint(path)
    return _models(ck, str(path), image_size, [ema])[0]


# ---------------------------------------------------------------- latent statistics


def _stat(t: Any, name: str, source: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() not in (1, 2) or (t.dim() == 2 and t.shape[0] != 1):
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise DiffAEImportError(f"{source}: {name} should be a [D] or [1, D] tensor, got {shape}")
    return t.detach().float().reshape(1, -1).clone()


def import_latent_stats(path: str | Path) -> LatentStats:
    """DiffAE's ``latent.pkl`` (``conds``, ``conds_mean``, ``conds_std``) as LatentStats of codes [1, D]."""
    obj = safe_load(path)
    if not isinstance(obj, Mapping) or "conds_mean" not in obj or "conds_std" not in obj:
        found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
        raise DiffAEImportError(f"{path}: not a DiffAE latent.pkl: expected 'conds_mean' and 'conds_std', found {found}")
    mean, std = _stat(obj["conds_mean"], "conds_mean", str(path)), _stat(obj["conds_std"], "conds_std", str(path))
    if mean.shape != std.shape:
        raise DiffAEImportError(f"{path}: conds_mean {list(mean.shape)} and conds_std {list(std.shape)} differ in shape")
    conds = obj.get("conds")
    return LatentStats(mean, std, n=int(conds.shape[0]) if isinstance(conds, torch.Tensor) else None)


# ---------------------------------------------------------------- attribute classifier


def import_classifier(path: str | Path, ema: bool = True, names: Sequence[str] | None = None) -> AttributeDirections:
    """DiffAE's ClsModel checkpoint: a direction [1, D] per CelebA-HQ attribute, its bias and the code statistics.

    The classifier reads codes standardised with its ``conds_mean``/``conds_std`` (DiffAE's manipulation
    does so too), so the directions live in that standardised space.
    """
    ck = read_diffae_checkpoint(path)
    state = _lightning_state(ck, str(path), "attribute-classifier")
    prefix = "ema_classifier." if ema else "classifier."
    w, b = state.get(prefix + "weight"), state.get(prefix + "bias")
    if w is None or b is None or "conds_mean" not in state or "conds_std" not in state:
        hint = " (an autoencoder checkpoint? import it as the checkpoint)" if any(
            k.startswith(("model.", "ema_model.")) for k in state) else ""
        raise DiffAEImportError(f"{path}: not a DiffAE attribute-classifier checkpoint: state_dict lacks "
                                f"{prefix}weight/bias or conds_mean/conds_std{hint}")
    if w.dim() != 2 or b.shape != (w.shape[0],):
        raise DiffAEImportError(f"{path}: {prefix}weight {list(w.shape)} / bias {list(b.shape)} are not a Linear layer")
    mean, std = _stat(state["conds_mean"], "conds_mean", str(path)), _stat(state["conds_std"], "conds_std", str(path))
    if mean.shape[1] != w.shape[1]:
        raise DiffAEImportError(f"{path}: classifier reads {w.shape[1]}-d codes but conds_mean is {mean.shape[1]}-d")
    names = list(names) if names is not None else list(CELEBA_ATTRIBUTES)
    if len(names) != w.shape[0]:
        raise DiffAEImportError(f"{path}: the classifier has {w.shape[0]} outputs but {len(names)} attribute "
                                "names were given (pass names= for a classifier not over CelebA-HQ's 40)")
    w = w.detach().float()
    hp = _hparams(ck)
    meta = {"classifier": "ema_classifier" if ema else "classifier",
            "manipulate_znormalize": hp.get("manipulate_znormalize")}
    return AttributeDirections({n: w[i].reshape(1, -1).clone() for i, n in enumerate(names)}, names,
                               LatentStats(mean, std), b.detach().float().clone(), meta)


# ---------------------------------------------------------------- folder


def import_diffae_folder(ckpt: str | Path, out: str | Path, latent: str | Path | None = None,
                         classifier: str | Path | None = None, image_size: int | None = None,
                         force: bool = False) -> Path:
    """Convert a DiffAE release into our checkpoint folder (raw + EMA), with latent stats and directions when given.

    ``out`` must be new or empty, or a checkpoint folder replaced with ``force``; anything else is refused untouched."""
    ckpt, out = Path(ckpt), Path(out)
    ckpt_io.check_destination(out, replace=force, flag="--force")
    ck = read_diffae_checkpoint(ckpt)
    raw, ema = _models(ck, str(ckpt), image_size, [False, True])
    hp = _hparams(ck)
    source = {"format": "diffae", "checkpoint": ckpt.name, "name": hp.get("name"),
              "epoch": ck.get("epoch"), "global_step": ck.get("global_step"),
              "latent": Path(latent).name if latent else None,
              "classifier": Path(classifier).name if classifier else None}
    stats = dirs = None
    if latent is not None:
        stats = import_latent_stats(latent)
        _check_width(stats.shape, raw, latent)
    if classifier is not None:
        dirs = import_classifier(classifier)
        _check_width(dirs.stats.shape, raw, classifier)
    del ck
    ckpt_io.save(raw, out, ema=ema, extra={"source": source})
    if stats is None and dirs is not None:
        stats = dirs.stats
    if stats is not None:
        stats.save(out, extra={"source": str(Path(latent).name if latent else Path(classifier).name)})
    if dirs is not None:
        dirs.meta["source"] = Path(classifier).name
        dirs.save(out)
    return out


def _check_width(shape, model: HDAE, path) -> None:
    want = (model.num_levels, model.code_dim)
    if tuple(shape) != want:
        raise DiffAEImportError(f"{path}: statistics for codes {list(shape)} do not fit the autoencoder's codes {list(want)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``hdae import-diffae CKPT [--latent PKL] [--classifier CKPT] --out DIR [--force]``."""
    from .cli import POSITIVE_INT, Parser, UserError  # here: the command line imports this module

    p = Parser(
        prog="hdae import-diffae",
        description="Convert an official DiffAE autoencoder checkpoint (last.ckpt), optionally with its "
                    "latent.pkl and attribute classifier, into an hdae checkpoint folder. Nothing in the "
                    "files is executed: they are read with an allow-listed unpickler.",
    )
    p.add_argument("checkpoint", type=Path, help="DiffAE autoencoder checkpoint, e.g. ffhq128_autoenc_130M/last.ckpt")
    p.add_argument("--latent", type=Path, help="DiffAE latent.pkl (code statistics) of the same autoencoder")
    p.add_argument("--classifier", type=Path, help="DiffAE attribute classifier, e.g. ffhq128_autoenc_cls/last.ckpt")
    p.add_argument("--image-size", type=POSITIVE_INT,
                   help="override the image size (read from the hyper-parameters otherwise)")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint folder (new or empty)")
    p.add_argument("--force", action="store_true", help="replace the checkpoint already in --out")
    args = p.parse_args(argv)
    for flag, path in (("checkpoint", args.checkpoint), ("--latent", args.latent), ("--classifier", args.classifier)):
        if path is not None and path.is_dir():
            found = sorted(path.glob("*.ckpt" if flag != "--latent" else "*.pkl"))
            raise UserError(f"{flag} {path}: is a folder; pass the file in it"
                            + (f", e.g. {found[0]}" if found else ""))
    out = import_diffae_folder(args.checkpoint, args.out, latent=args.latent, classifier=args.classifier,
                               image_size=args.image_size, force=args.force)
    meta = ckpt_io.read_config(out)
    m = meta["model"]
    print(f"wrote {out}: dae {m['image_size']} px, channel_mult {tuple(m['channel_mult'])}, "
          f"codes [1, {m['code_dim']}], EMA {'yes' if meta['has_ema'] else 'no'}"
          + (", latent stats" if (out / "latent_stats.safetensors").exists() else "")
          + (f", {len(load_directions(out).names)} attribute directions" if args.classifier else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
