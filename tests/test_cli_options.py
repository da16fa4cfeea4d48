"""`hdae train` has one option per TrainConfig field, and its defaults are TrainConfig's."""
from __future__ import annotations

import dataclasses

import pytest

from hdae_core import ModelConfig
from hdae_core.cli import TRAIN_OPTIONS, build_parser, main, train_config_from_args
from hdae_core.train import TrainConfig


def _train_actions():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    return {a.dest: a for a in sub.choices["train"]._actions}


def test_every_train_config_field_has_an_option():
    actions = _train_actions()
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "model" and f.name not in actions]
    assert missing == []
    for name in ("preset", "variant", "model_json", "prediction"):  # the model's options
        assert name in actions
    assert set(TRAIN_OPTIONS) <= {f.name for f in dataclasses.fields(TrainConfig)}  # no stale spelling left behind


def test_defaults_agree_with_train_config(tmp_path):
    cfg = train_config_from_args(build_parser().parse_args(["train", "--out", str(tmp_path)]))
    want = TrainConfig(out=str(tmp_path), model=ModelConfig.preset("shapes32", "hdae_u"))
    assert cfg == want


def test_kept_flag_names_and_the_new_ones(tmp_path):
    argv = ["train", "--out", str(tmp_path), "--batch", "8", "--workers", "2", "--no-ema-warmup", "--no-progress",
            "--no-tensorboard", "--grad-clip", "0.5", "--eval-steps", "7", "--grid-every", "300",
            "--diverge-factor", "0", "--convert-images", "--on-bad-image", "skip", "--amp", "none"]
    cfg = train_config_from_args(build_parser().parse_args(argv))
    assert (cfg.batch_size, cfg.num_workers, cfg.grad_clip, cfg.eval_steps, cfg.grid_every) == (8, 2, 0.5, 7, 300)
    assert not cfg.ema_warmup and not cfg.progress and not cfg.tensorboard and cfg.convert_images
    assert cfg.diverge_factor == 0 and cfg.on_bad_image == "skip" and cfg.amp == "none"


@pytest.mark.parametrize("extra,allowed", [
    (["--grad-clip", "0"], "a finite number > 0"),
    (["--eval-steps", "0"], "a positive integer"),
    (["--grid-every", "-1"], "an integer >= 0"),
    (["--diverge-factor", "inf"], ">= 0"),
    (["--amp", "fp8"], "invalid choice"),
])
def test_new_options_are_checked_while_parsing(tmp_path, capsys, extra, allowed):
    rc = main(["train", "--out", str(tmp_path)] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"hdae: error: argument {extra[0]}") and allowed in err
