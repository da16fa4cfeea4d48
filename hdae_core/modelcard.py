"""Ship a trained run as a demo model: EMA weights, metrics, a measured quality check and a model card."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ck
from .config import PRESETS, ModelConfig, TrainConfig
from .data import Shapes
from .data.source import is_shapes
from .evaluation import mean_colour_mse
from .hardware import describe_hardware
from .train import held_out_batch


@torch.no_grad()
def quality_check(model, n: int = 256, seed: int = 10_000, batch_size: int = 64, progress: bool = True,
                  images: torch.Tensor | None = None) -> dict:
    """The shipping bar on n held-out shapes (or on ``images``, the first n of them): random-x_T MSE at T = 20 and
    100, encoded-x_T MSE at T = 100.

    The encoded x_T comes from the model's default (refined) inversion; the same measure with DiffAE's
    inversion is reported beside it as ``mse_encoded_T100_diffae_inversion`` with its own verdict.
    """
    dev = next(model.parameters()).device
    if images is None:
        images = Shapes(size=model.config.image_size, seed=seed).batch(list(range(n)))["image"]
    x = images[:n].to(dev)
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g).to(dev)
    sums = {"mse_random_T20": 0.0, "mse_random_T100": 0.0, "mse_encoded_T100": 0.0,
            "mse_encoded_T100_diffae_inversion": 0.0}
    batches = range(0, n, batch_size)
    for i in tqdm(batches, desc="quality check", disable=not progress):
        xb, nb = x[i:i + batch_size], noise[i:i + batch_size]
        codes = model.encode(xb)
        for T in (20, 100):
            sums[f"mse_random_T{T}"] += (model.decode(nb, codes, T) - xb).pow(2).sum().item()
        for key, inversion in (("mse_encoded_T100", {}), ("mse_encoded_T100_diffae_inversion", {"refine": 0})):
            x_T = model.encode_stochastic(xb, codes, 100, **inversion)
            sums[key] += (model.decode(x_T, codes, 100) - xb).pow(2).sum().item()
    out = {k: v / x.numel() for k, v in sums.items()}
    out["mse_mean_colour_baseline"] = mean_colour_mse(x).mean().item()
    out["n_images"] = n
    random_ok = (out["mse_random_T20"] < out["mse_mean_colour_baseline"]
                 and out["mse_random_T100"] < out["mse_mean_colour_baseline"])
    out["passes"] = bool(random_ok and out["mse_encoded_T100"] <= 1e-3)
    out["passes_with_diffae_inversion"] = bool(random_ok and out["mse_encoded_T100_diffae_inversion"] <= 1e-3)
    return out


def preset_name(cfg: ModelConfig) -> str | None:
    """The preset ``cfg`` was built from (its variant and prediction aside), or None for another architecture."""
    for name, preset in PRESETS.items():
        if dataclasses.replace(preset, variant=cfg.variant, prediction=cfg.prediction) == cfg:
            return name
    return None


def check_export_destination(run_dir: str | Path, dest: str | Path, force: bool = False) -> None:
    """Refuse a destination that is the run folder, inside it or above it, or that holds anything but a checkpoint
    (which only ``force`` replaces); nothing is written."""
    run, to = Path(run_dir).resolve(), Path(dest).resolve()
    if to == run or run in to.parents or to in run.parents:
        raise ck.DestinationError(f"{dest}: is the run folder {run_dir}, inside it or above it; nothing was written, "
                                  "export into another folder")
    ck.check_destination(dest, replace=force, flag="--force")


RUN_FIELDS = ("step", "images", "wall_s")  # what `hdae train` records with each checkpoint, and the card quotes


def check_run_folder(run_dir: Path) -> None:
    """Refuse, naming what was given instead, a RUN that is not a run folder written by ``hdae train``."""
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: {'is a file' if run_dir.exists() else 'does not exist'}; `hdae export` takes "
                         f"a run folder written by `hdae train` (it holds checkpoint/ and metrics.csv)")
    if (run_dir / "checkpoint").is_dir():
        return
    if (run_dir / "config.json").is_file() and run_dir.name == "checkpoint":
        raise ValueError(f"{run_dir}: is the checkpoint inside a run; pass the run folder that holds it "
                         f"({run_dir.parent})")
    if (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir}: is a checkpoint folder, not a run folder; it needs no export (pass it as "
                         f"--checkpoint, or copy it)")
    raise ValueError(f"{run_dir}: no checkpoint/ in it; `hdae export` takes a run folder written by `hdae train`")


def check_export_record(run_dir: Path, extra: dict) -> None:
    """Refuse, before anything is written, a run folder whose checkpoint lacks what ``hdae train`` records with it
    (steps, images seen, wall time) or that has no ``metrics.csv``."""
    missing = [f for f in RUN_FIELDS if not isinstance(extra.get(f), (int, float))]
    if missing:
        raise ValueError(f"{run_dir / 'checkpoint'}: no {', '.join(missing)} recorded; `hdae export` takes a run folder "
                         f"written by `hdae train` (a bare checkpoint folder needs no export: pass it as --checkpoint "
                         f"or copy it); nothing was written")
    if not (run_dir / "metrics.csv").is_file():
        raise ValueError(f"{run_dir}: no metrics.csv (the training log the export copies); `hdae export` takes a run "
                         f"folder written by `hdae train`; nothing was written")


def export_run(run_dir: str | Path, dest: str | Path, command: str | list[str], n_eval: int = 256,
               progress: bool = True, device: str | None = None, note: str | None = None,
               force: bool = False) -> dict:
    """Copy a run's EMA model, metrics CSV and a model card with the quality check into ``dest``.

    ``command`` is the training command, or the commands in order when the run was resumed with
    other settings (e.g. a CPU start continued on a GPU at a larger batch). ``dest`` must be new or
    empty, or a checkpoint folder replaced with ``force``; the card describes the run's own config and data.
    """
    commands = [command] if isinstance(command, str) else list(command)
    if not commands or not all(c.strip() for c in commands):
        raise ValueError("export needs the training command(s) for the model card, got none")
    run_dir, dest = Path(run_dir), Path(dest)
    check_run_folder(run_dir)
    check_export_destination(run_dir, dest, force)
    meta = ck.read_config(run_dir / "checkpoint")
    extra = meta.get("extra") or {}
    check_export_record(run_dir, extra)
    model = ck.load(run_dir / "checkpoint", ema=True)
    train_cfg = TrainConfig.from_dict(extra["train"]) if isinstance(extra.get("train"), dict) else None
    shapes = train_cfg is None or is_shapes(train_cfg.data)
    held_out = None if shapes else held_out_batch(train_cfg, run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    q = quality_check(model.to(dev), n=n_eval, progress=progress, images=held_out)
    model.cpu()
    info = {"images_seen": extra["images"], "steps": extra["step"], "wall_s": extra["wall_s"],
            "hardware": extra.get("hardware") or describe_hardware(), "quality_check_on": describe_hardware(dev),
            "command": commands[0] if len(commands) == 1 else commands, "note": note, "quality": q}
    ck.save(model, dest, extra={"source_run": run_dir.name, **info, "train": extra.get("train")})
    shutil.copy(run_dir / "metrics.csv", dest / "metrics.csv")
    (dest / "quality.json").write_text(json.dumps(q, indent=2) + "\n")
    cfg = model.config
    prediction = ("The decoder predicts **v** (the paper's models predict ε; see the README, \"ε or v prediction\")."
                  if cfg.prediction == "v" else "The decoder predicts **ε**, as the paper's models do.")
    if len(commands) == 1:
        command_lines = f"- command: `{commands[0]}`"
    else:
        command_lines = "- commands, in order (each resumed the run where the one before stopped):\n" + "\n".join(
            f"  {i}. `{c}`" for i, c in enumerate(commands, 1))
    preset = preset_name(cfg)
    arch = (f"at preset `{preset}`" if preset else
            f"with its own architecture (model channels {cfg.model_channels}, multipliers "
            f"{','.join(map(str, cfg.channel_mult))})")
    if train_cfg is None:
        data = "on data the checkpoint does not record"
    elif shapes:
        data = f"on the built-in `Shapes(size={cfg.image_size}, seed={train_cfg.seed})`"
    else:
        data = f"on the images of `{train_cfg.data}`, less the {len(held_out)} held out for evaluation (`heldout.txt`)"
    if not meta.get("has_ema"):
        weights = "the run's weights; it kept no EMA"
    elif train_cfg is not None and train_cfg.ema_decay == 0:
        weights = "the run's weights: its EMA decay was 0"
    else:
        weights = "the EMA weights"
    checked_on = (f"{q['n_images']} held-out shapes, seed 10000" if shapes else
                  f"{q['n_images']} of the run's held-out images of `{train_cfg.data}`")
    card = f"""# {dest.name}

Variant `{cfg.variant}` {arch} ({cfg.image_size} px), trained {data}.
{prediction}
Files: `config.json` + `model.safetensors` ({weights}), `metrics.csv` (the training log),
`quality.json` (the check below).

{command_lines}
- images seen: {info['images_seen']:,} ({info['steps']:,} steps)
- wall time: {info['wall_s'] / 3600:.2f} h
- hardware: {info['hardware']}
- quality check run on: {info['quality_check_on']}
{f"- note: {note}" + chr(10) if note else ""}
## Quality check ({checked_on}; MSE on the [-1, 1] scale)

| measure | value |
|---|---|
| random x_T, T = 20 | {q['mse_random_T20']:.4f} |
| random x_T, T = 100 | {q['mse_random_T100']:.4f} |
| encoded x_T, T = 100 (refined inversion, the default) | {q['mse_encoded_T100']:.2e} |
| encoded x_T, T = 100 (DiffAE's inversion) | {q['mse_encoded_T100_diffae_inversion']:.2e} |
| baseline: each image replaced by its mean colour | {q['mse_mean_colour_baseline']:.4f} |

The bar: random-x_T MSE below the mean-colour baseline (the codes carry the image's content),
and encoded-x_T MSE at T = 100 at most 1e-3. This model **{'passes' if q['passes'] else 'does not yet pass'}** it
with the default inversion, and **{'passes' if q['passes_with_diffae_inversion'] else 'does not pass'}** it with DiffAE's.
"""
    (dest / "README.md").write_text(card)
    return info
