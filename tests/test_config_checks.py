"""Checkpoint configs and resumes are checked, not trusted: each bad file gets a CheckpointError naming file and field."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hdae_core import HDAE, ModelConfig
from hdae_core import checkpoint as ck
from hdae_core import train as T
from hdae_core.config import DiffusionConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = HDAE(ModelConfig.preset("tiny", "dae", prediction="v"))
    return ck.save(model, tmp_path_factory.mktemp("ck") / "checkpoint", ema=model, extra={"step": 1})


def _edited(saved, tmp_path, edit):
    import shutil

    path = tmp_path / "edited"
    shutil.copytree(saved, path)
    meta = json.loads((path / "config.json").read_text())
    edit(meta)
    (path / "config.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("field", ["prediction", "channel_mult", "variant", "model_channels"])
def test_required_model_fields_are_required(saved, tmp_path, field):
    path = _edited(saved, tmp_path, lambda m: m["model"].pop(field))
    with pytest.raises(ck.CheckpointError, match=rf"config\.json: .*required field.*'{field}'"):
        ck.load(path)


def test_a_config_without_norm_groups_still_loads_as_before(saved, tmp_path):
    path = _edited(saved, tmp_path, lambda m: m["model"].pop("norm_groups"))
    assert ck.load(path).config.norm_groups == 32  # what configs written before the field meant
    assert ck.load(path).config.prediction == "v"


@pytest.mark.parametrize("field,value,expect", [
    ("model_channels", 32.0, "expected int"),
    ("channel_mult", "12", "expected a list of int"),
    ("dropout", "x", "expected float"),
    ("num_res_blocks", True, "expected int"),
    ("attention_resolutions", [8.5], "expected a list of int"),
    ("variant", 3, "expected str"),
    ("dropout", 1.5, "dropout must be in"),
    ("code_dim", 0, "code_dim must be at least 1"),
])
def test_wrong_typed_fields_name_file_and_field(saved, tmp_path, field, value, expect):
    path = _edited(saved, tmp_path, lambda m: m["model"].__setitem__(field, value))
    with pytest.raises(ck.CheckpointError) as e:
        ck.load(path)
    msg = str(e.value)
    assert str(path / "config.json") in msg and field in msg and expect in msg


@pytest.mark.parametrize("edit,expect", [
    (lambda m: m["diffusion"].__setitem__("beta_schedule", "cosine"), "unsupported beta_schedule 'cosine'"),
    (lambda m: m["diffusion"].__setitem__("T", "1000"), "field 'T': expected int"),
    (lambda m: m.pop("diffusion"), "required field 'diffusion'"),
    (lambda m: m.__setitem__("format_version", 2), "format_version 2 is newer"),
    (lambda m: m.__setitem__("format_version", "1"), "'format_version' must be an integer"),
    (lambda m: m.__setitem__("model", [1, 2]), "field 'model' must be a JSON object"),
])
def test_schedule_and_format_are_checked(saved, tmp_path, edit, expect):
    with pytest.raises(ck.CheckpointError, match=expect):
        ck.load(_edited(saved, tmp_path, edit))


def test_diffusion_config_refuses_unsupported_schedules():
    with pytest.raises(ValueError, match="unsupported beta_schedule"):
        DiffusionConfig(beta_schedule="cosine")
    assert DiffusionConfig.from_dict({"T": 100, "beta_schedule": "linear"}).T == 100


def _cfg(out, **kw):
    base = dict(model=ModelConfig.preset("tiny", "dae"), out=str(out), steps=2, batch_size=2, lr=1e-3,
                log_every=1, eval_every=0, ckpt_every=2, progress=False, tensorboard=False)
    base.update(kw)
    return T.TrainConfig(**base)


def test_wrong_shape_optimizer_state_is_refused_on_resume(tmp_path):
    out = tmp_path / "run"
    T.train(_cfg(out))
    f = out / "checkpoint" / "optimizer.safetensors"
    flat = load_file(str(f))
    key = next(k for k in flat if k.endswith("::exp_avg") and flat[k].dim() == 2)
    flat[key] = flat[key][:1].clone()  # broadcastable, so Adam would take it silently
    save_file(flat, str(f))
    meta = json.loads((out / "checkpoint" / "config.json").read_text())
    meta["files"]["optimizer.safetensors"] = f.stat().st_size
    (out / "checkpoint" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError, match=rf"{key.replace('.', '[.]')} has shape .*does not belong"):
        T.train(_cfg(out, steps=4), resume=True)


def test_resume_onto_an_exported_model_says_what_to_do(tmp_path):
    out = tmp_path / "run"
    model = HDAE(ModelConfig.preset("tiny", "dae"))
    ck.save(model, out / "checkpoint", ema=model, extra={"source": "exported"})
    with pytest.raises(ck.CheckpointError, match="without training state.*start a new run with another --out"):
        T.train(_cfg(out), resume=True)


def test_optimizer_check_names_foreign_entries():
    params = dict(HDAE(ModelConfig.preset("tiny", "dae")).named_parameters())
    name = next(iter(params))
    with pytest.raises(ck.CheckpointError, match="not Adam state"):
        T.check_optimizer_tensors(params, {"nope::exp_avg": torch.zeros(1)})
    with pytest.raises(ck.CheckpointError, match="expected a floating-point"):
        T.check_optimizer_tensors(params, {f"{name}::exp_avg": torch.zeros(params[name].shape, dtype=torch.int64)})
    T.check_optimizer_tensors(params, {f"{name}::step": torch.tensor(3.0),
                                       f"{name}::exp_avg": torch.zeros(params[name].shape)})


def test_train_config_round_trips_and_reads_old_runs_strictly():
    from hdae_core.config import TrainConfig

    cfg = TrainConfig(model=ModelConfig.preset("tiny"), steps=7, lr=3e-4, data=None)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = cfg.to_dict()
    del old["diverge_factor"]  # a run written before the option existed
    assert TrainConfig.from_dict(old).diverge_factor == TrainConfig().diverge_factor
    with pytest.raises(ValueError, match=r"unknown fields \['learning_rate'\]"):
        TrainConfig.from_dict(dict(cfg.to_dict(), learning_rate=1e-4))
    with pytest.raises(TypeError, match="field 'steps': expected int"):
        TrainConfig.from_dict(dict(cfg.to_dict(), steps="7"))
    with pytest.raises(TypeError, match="'model' object"):
        TrainConfig.from_dict({"steps": 7})
