"""Importing official DiffAE checkpoints: golden parity, architecture reading, stats, classifiers, safety."""
from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core import checkpoint as ckpt_io
from hdae_core.directions import load_directions
from hdae_core.diffae_import import (
    CELEBA_ATTRIBUTES, DiffAEImportError, config_from_diffae, diffae_to_hdae, hdae_to_diffae, import_classifier,
    import_diffae, import_diffae_folder, import_latent_stats, main, read_diffae_checkpoint,
)
from hdae_core.safe_pickle import UnsafeCheckpointError, safe_load
from hdae_core.stats import LatentStats

FIX = Path(__file__).parent / "fixtures" / "diffae"
CKPT, LATENT, CLS, GOLDEN = FIX / "tiny_last.ckpt", FIX / "tiny_latent.pkl", FIX / "tiny_cls.ckpt", FIX / "tiny_golden.pt"
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def ema_model():
    return import_diffae(CKPT)


def _err(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- golden parity


def test_ema_model_reproduces_every_golden_output(ema_model, golden):
    m = ema_model
    assert m.config.variant == "dae" and not m.training
    with torch.no_grad():
        codes = m.encode(golden["x0"])
        errs = {
            "cond": _err(codes[:, 0], golden["cond"]),
            "pred_eps": _err(m.decoder(golden["xt"], golden["t"], codes), golden["pred_eps"]),
            "render_T10": _err(m.decode(golden["x_T"], codes, 10), golden["render_T10"]),
            "encode_stochastic_T10": _err(m.encode_stochastic(golden["x0"], codes, 10, refine=0), golden["encode_stochastic_T10"]),
        }
    assert all(e < TOL for e in errs.values()), errs


def test_raw_model_reproduces_golden_outputs(golden):
    m = import_diffae(CKPT, ema=False)
    assert not m.training
    with torch.no_grad():
        codes = m.encode(golden["x0"])
        errs = {
            "cond_raw_model": _err(codes[:, 0], golden["cond_raw_model"]),
            "pred_eps_raw_model": _err(m.decoder(golden["xt"], golden["t"], codes), golden["pred_eps_raw_model"]),
        }
    assert all(e < TOL for e in errs.values()), errs
    # the EMA weights differ, so ema=True/False really pick different tensors
    assert _err(golden["cond"], golden["cond_raw_model"]) > 1e-3


def test_fixture_config_is_read_from_the_checkpoint(ema_model):
    want = json.loads((FIX / "config_tiny.json").read_text())
    c = ema_model.config
    assert (c.image_size, c.model_channels, list(c.channel_mult), list(c.enc_channel_mult)) == (
        want["image_size"], want["model_channels"], want["channel_mult"], want["enc_channel_mult"])
    assert list(c.attention_resolutions) == want["attention_resolutions"]
    assert (c.num_res_blocks, c.num_heads, c.embed_channels, c.code_dim, c.dropout) == (
        want["num_res_blocks"], want["num_heads"], want["embed_channels"], want["enc_out_channels"], want["dropout"])


# ---------------------------------------------------------------- released architectures


@pytest.mark.parametrize("res", [64, 128, 256])
def test_presets_map_one_to_one_onto_released_manifests(res):
    manifest = json.loads((FIX / f"manifest_ffhq{res}_autoenc.json").read_text())
    theirs = {k: tuple(v) for k, v in manifest["params"].items()}
    with torch.device("meta"):
        model = HDAE(ModelConfig.preset(f"ffhq{res}", "dae"))
    ours = {hdae_to_diffae(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(theirs)) == [] and sorted(set(theirs) - set(ours)) == []
    assert {k for k in ours if ours[k] != theirs[k]} == set()
    assert all(diffae_to_hdae(hdae_to_diffae(k)) == k for k in model.state_dict())


@pytest.mark.parametrize("res", [64, 128, 256])
def test_config_read_from_released_shapes_equals_preset(res):
    manifest = json.loads((FIX / f"manifest_ffhq{res}_autoenc.json").read_text())
    sd = {k: torch.empty(v, device="meta") for k, v in manifest["params"].items()}
    c = manifest["config"]
    hp = {"img_size": c["image_size"], "net_ch": c["model_channels"], "net_ch_mult": tuple(c["channel_mult"]),
          "net_enc_channel_mult": tuple(c["enc_channel_mult"]), "net_attn": tuple(c["attention_resolutions"]),
          "net_num_res_blocks": c["num_res_blocks"], "net_enc_num_res_blocks": c["num_res_blocks"],
          "net_beatgans_embed_channels": c["embed_channels"], "style_ch": c["enc_out_channels"],
          "net_beatgans_attn_head": 1, "dropout": 0.1, "model_name": "beatgans_autoenc"}
    assert config_from_diffae(hp, sd) == ModelConfig.preset(f"ffhq{res}", "dae")


# ---------------------------------------------------------------- sizes come from the weights


def _randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised convs would hide routing mistakes
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _diffae_style_ckpt(path: Path, raw: HDAE, ema: HDAE, hparams: dict | None) -> None:
    sd = {"model." + hdae_to_diffae(k): v for k, v in raw.state_dict().items()}
    sd |= {"ema_model." + hdae_to_diffae(k): v for k, v in ema.state_dict().items()}
    sd["x_T"] = torch.randn(2, 3, raw.config.image_size, raw.config.image_size)
    ck = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.5", "state_dict": sd}
    if hparams is not None:
        ck["hyper_parameters"] = hparams
    torch.save(ck, path)


OTHER = ModelConfig(image_size=32, model_channels=32, channel_mult=(1, 2, 2), enc_channel_mult=(1, 2, 4, 4),
                    attention_resolutions=(16,), num_res_blocks=1, enc_num_res_blocks=2, num_heads=2,
                    embed_channels=48, code_dim=24, dropout=0.0, variant="dae")
OTHER_HP = {"img_size": 32, "net_ch": 32, "net_ch_mult": (1, 2, 2), "net_enc_channel_mult": (1, 2, 4, 4),
            "net_attn": (16,), "net_num_res_blocks": 1, "net_enc_num_res_blocks": 2, "net_beatgans_attn_head": 2,
            "net_beatgans_embed_channels": 48, "style_ch": 24, "dropout": 0.0, "T": 1000,
            "model_name": "beatgans_autoenc", "beta_scheduler": "linear"}


def test_importer_reads_another_architecture_from_the_weights(tmp_path):
    raw, ema = HDAE(OTHER), HDAE(OTHER)
    _randomize(raw, 1)
    _randomize(ema, 2)
    _diffae_style_ckpt(tmp_path / "other.ckpt", raw, ema, OTHER_HP)
    got = import_diffae(tmp_path / "other.ckpt")
    assert got.config == OTHER
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([3, 700])
    with torch.no_grad():
        for ref, model in ((ema.eval(), got), (raw.eval(), import_diffae(tmp_path / "other.ckpt", ema=False))):
            codes = ref.encode(x)
            assert torch.equal(model.encode(x), codes)
            assert torch.equal(model.decoder(x, t, codes), ref.decoder(x, t, codes))


def test_hyperparameters_that_disagree_with_the_weights_are_refused(tmp_path):
    raw = HDAE(OTHER)
    _diffae_style_ckpt(tmp_path / "bad.ckpt", raw, raw, {**OTHER_HP, "net_ch_mult": (1, 2, 4)})
    with pytest.raises(DiffAEImportError, match=r"bad\.ckpt.*net_ch_mult: hyper-parameters say \(1, 2, 4\), weights say \(1, 2, 2\)"):
        import_diffae(tmp_path / "bad.ckpt")
    _diffae_style_ckpt(tmp_path / "stoch.ckpt", raw, raw, {**OTHER_HP, "net_autoenc_stochastic": True})
    with pytest.raises(DiffAEImportError, match="net_autoenc_stochastic"):
        import_diffae(tmp_path / "stoch.ckpt")


def test_without_hyperparameters_the_image_size_is_inferred():
    ck = read_diffae_checkpoint(CKPT)
    sd = {k[len("ema_model."):]: v for k, v in ck["state_dict"].items() if k.startswith("ema_model.")}
    with pytest.warns(UserWarning, match="assuming 16 px"):
        cfg = config_from_diffae(None, sd)
    assert cfg == config_from_diffae(ck["hyper_parameters"], sd)


def test_mismatching_weights_name_the_checkpoint_and_keys(tmp_path):
    raw = HDAE(OTHER)
    _diffae_style_ckpt(tmp_path / "cut.ckpt", raw, raw, OTHER_HP)
    ck = torch.load(tmp_path / "cut.ckpt", weights_only=True)
    del ck["state_dict"]["ema_model.out.2.bias"]
    ck["state_dict"]["ema_model.extra.weight"] = torch.zeros(1)
    torch.save(ck, tmp_path / "cut.ckpt")
    with pytest.raises(DiffAEImportError, match=r"cut\.ckpt.*missing: out\.2\.bias.*unexpected: extra\.weight"):
        import_diffae(tmp_path / "cut.ckpt")


# ---------------------------------------------------------------- other kinds of files


def test_checkpoints_of_another_kind_give_clear_errors(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(DiffAEImportError, match=r"plain\.pt: not a DiffAE autoencoder checkpoint.*'state_dict'"):
        import_diffae(tmp_path / "plain.pt")
    with pytest.raises(DiffAEImportError, match="attribute-classifier checkpoint"):
        import_diffae(CLS)
    with pytest.raises(DiffAEImportError, match="not a DiffAE autoencoder checkpoint"):
        import_diffae(LATENT)
    with pytest.raises(DiffAEImportError, match="not a DiffAE attribute-classifier checkpoint"):
        import_classifier(CKPT)
    with pytest.raises(DiffAEImportError, match="not a DiffAE latent.pkl"):
        import_latent_stats(CLS)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.ckpt: not a readable torch checkpoint"):
        import_diffae(tmp_path / "junk.ckpt")


# ---------------------------------------------------------------- latent statistics


def test_latent_stats_import_and_round_trip(tmp_path):
    stats = import_latent_stats(LATENT)
    raw = torch.load(LATENT, weights_only=False)  # our own fixture, trusted
    assert stats.shape == (1, 128) and stats.n == 64
    assert torch.equal(stats.mean[0], raw["conds_mean"]) and torch.equal(stats.std[0], raw["conds_std"])
    codes = raw["conds"][:, None]
    z = stats.standardize(codes)
    assert torch.equal(z, (codes - raw["conds_mean"]) / raw["conds_std"])  # DiffAE's arithmetic exactly
    assert torch.allclose(stats.destandardize(z), codes, atol=1e-5)
    stats.save(tmp_path)
    back = LatentStats.load(tmp_path)
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.std, stats.std) and back.n == 64
    with pytest.raises(ValueError, match=r"statistics are for codes \[L, D\] = \[1, 128\], got \[4, 2, 128\]"):
        stats.standardize(torch.zeros(4, 2, 128))


def test_latent_stats_from_codes():
    codes = torch.randn(50, 3, 8, generator=torch.Generator().manual_seed(0)) * 2 + 1
    codes[:, 1, 2] = 5.0  # a constant dimension must not divide by zero
    s = LatentStats.from_codes(codes)
    assert s.shape == (3, 8) and s.n == 50
    z = s.standardize(codes)
    assert torch.isfinite(z).all()
    assert torch.allclose(z.mean(0), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(s.destandardize(z), codes, atol=1e-5)


# ---------------------------------------------------------------- classifier


def test_attribute_names_follow_diffae_order():
    readme = (FIX / "README.md").read_text()
    listed = readme[readme.index("DiffAE's order:") + len("DiffAE's order:"):].replace("\n", " ").strip().rstrip(".")
    assert list(CELEBA_ATTRIBUTES) == [n.strip() for n in listed.split(",")]


def test_classifier_gives_one_direction_per_attribute():
    dirs = import_classifier(CLS)
    directions, names, stats = dirs
    sd = safe_load(CLS)["state_dict"]
    assert names == list(CELEBA_ATTRIBUTES) and len(names) == 40 and len(set(names)) == 40
    assert set(directions) == set(names)
    assert all(d.shape == (1, 128) for d in directions.values())
    assert torch.equal(directions["Smiling"][0], sd["ema_classifier.weight"][names.index("Smiling")])
    assert torch.equal(dirs.bias, sd["ema_classifier.bias"]) and dirs.weight.shape == (40, 1, 128)
    assert torch.equal(stats.mean, sd["conds_mean"]) and torch.equal(stats.std, sd["conds_std"])
    raw = import_classifier(CLS, ema=False)
    assert torch.equal(raw.directions["Young"][0], sd["classifier.weight"][-1])
    # a direction read by the classifier in the standardised space gives DiffAE's logits
    codes = torch.randn(5, 1, 128)
    logits = stats.standardize(codes).flatten(1) @ dirs.weight.flatten(1).T + dirs.bias
    want = ((codes[:, 0] - sd["conds_mean"]) / sd["conds_std"]) @ sd["ema_classifier.weight"].T + sd["ema_classifier.bias"]
    assert torch.allclose(logits, want, atol=1e-5)


# ---------------------------------------------------------------- folder + command


def test_import_folder_via_command(tmp_path, golden, capsys):
    out = tmp_path / "ffhq_tiny"
    assert main([str(CKPT), "--latent", str(LATENT), "--classifier", str(CLS), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = ckpt_io.read_config(out)
    assert meta["has_ema"] and meta["extra"]["source"]["format"] == "diffae"
    with torch.no_grad():
        assert _err(ckpt_io.load(out).encode(golden["x0"])[:, 0], golden["cond"]) < TOL
        assert _err(ckpt_io.load(out, ema=False).encode(golden["x0"])[:, 0], golden["cond_raw_model"]) < TOL
    stats = LatentStats.load(out)
    assert torch.equal(stats.mean, import_latent_stats(LATENT).mean)
    dirs = load_directions(out)
    ref = import_classifier(CLS)
    assert dirs.names == ref.names and torch.equal(dirs.weight, ref.weight) and torch.equal(dirs.bias, ref.bias)
    assert torch.equal(dirs.stats.mean, ref.stats.mean)
    assert json.loads((out / "directions.json").read_text())["names"] == list(CELEBA_ATTRIBUTES)


def test_import_folder_without_extras(tmp_path):
    out = import_diffae_folder(CKPT, tmp_path / "m")
    assert not (out / "latent_stats.safetensors").exists() and not (out / "directions.safetensors").exists()
    assert ckpt_io.load(out).config.variant == "dae"


# ---------------------------------------------------------------- safety


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("legacy", [False, True])
def test_code_in_a_checkpoint_is_refused_not_run(tmp_path, legacy):
    marker = tmp_path / "MARKER"
    ck = {"state_dict": {"model.x": torch.zeros(2)}, "hyper_parameters": {"a": _Evil(os.system, f"touch {marker}")}}
    torch.save(ck, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt: refused global '(posix|nt)\.system'"):
        safe_load(tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="refused global"):
        import_diffae(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("fn", [eval, exec, __import__, getattr])
def test_builtins_that_run_code_are_refused(tmp_path, fn):
    torch.save([_Evil(fn, "1")], tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=f"refused global 'builtins.{fn.__name__}'"):
        safe_load(tmp_path / "evil.pt")


@contextlib.contextmanager
def _fake_modules(*names):
    """Stand-in modules so that pickle can name classes of packages that are not installed."""
    full = sorted({".".join(n.split(".")[: i + 1]) for n in names for i in range(n.count(".") + 1)})
    saved = {m: sys.modules.get(m) for m in full}
    for m in full:
        sys.modules.setdefault(m, types.ModuleType(m))
    try:
        yield lambda module, name, base: _fake_class(module, name, base)
    finally:
        for m, v in saved.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v


def _fake_class(module, name, base):
    cls = type(name, (base,), {"__module__": module})
    setattr(sys.modules[module], name, cls)
    return cls


def test_lightning_objects_become_plain_data(tmp_path):
    mods = ["pytorch_lightning.utilities.parsing", "pytorch_lightning.callbacks.model_checkpoint", "choices"]
    with _fake_modules(*mods) as fake:
        ModelName = enum.Enum("ModelName", {"beatgans_autoenc": "beatgans_autoenc"}, module="choices")
        sys.modules["choices"].ModelName = ModelName
        AttributeDict = fake(mods[0], "AttributeDict", dict)
        ModelCheckpoint = fake(mods[1], "ModelCheckpoint", object)
        ns = argparse.Namespace()
        ns.lr = 0.1
        cb = ModelCheckpoint()
        cb.best_model_score = torch.tensor(1.5)
        hp = AttributeDict(img_size=16, net_ch_mult=(1, 2), model_name=ModelName.beatgans_autoenc)
        torch.save({"hyper_parameters": hp, "callbacks": {ModelCheckpoint: {"best": 1}}, "args": ns, "cb": cb},
                   tmp_path / "pl.ckpt")
    got = safe_load(tmp_path / "pl.ckpt")
    assert type(got["hyper_parameters"]) is dict and got["hyper_parameters"] == {
        "img_size": 16, "net_ch_mult": (1, 2),
        "model_name": {"__class__": "choices.ModelName", "args": ["beatgans_autoenc"]}}
    assert got["callbacks"] == {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": {"best": 1}}
    assert type(got["args"]) is dict and got["args"] == {"lr": 0.1}
    assert got["cb"]["__class__"] == "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    assert torch.equal(got["cb"]["state"]["best_model_score"], torch.tensor(1.5))


def test_fixture_hyperparameters_load_as_a_plain_dict():
    ck = read_diffae_checkpoint(CKPT)
    assert type(ck["hyper_parameters"]) is dict and ck["hyper_parameters"]["img_size"] == 16
    assert "pytorch_lightning" not in sys.modules
