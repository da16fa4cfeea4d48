"""Every command-line mistake gets one line naming the argument and what it allows, exit 2, no traceback;
training faults stop the run with the last good checkpoint; bad and small images are handled and counted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hdae_core import ModelConfig
from hdae_core import checkpoint as ck
from hdae_core import train as T
from hdae_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train", "--preset", "tiny", "--variant", "dae", "--no-progress", "--eval-every", "0"]


def _run(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("extra,argument,allowed", [
    (["--batch", "-4"], "--batch", "a positive integer"),
    (["--batch", "0"], "--batch", "a positive integer"),
    (["--ckpt-every", "0"], "--ckpt-every", "a positive integer"),
    (["--log-every", "0"], "--log-every", "a positive integer"),
    (["--steps", "0"], "--steps", "a positive integer"),
    (["--steps", "-5"], "--steps", "a positive integer"),
    (["--steps", "ten"], "--steps", "a positive integer"),
    (["--eval-size", "0"], "--eval-size", "a positive integer"),
    (["--eval-every", "-1"], "--eval-every", "an integer >= 0"),
    (["--lr", "0"], "--lr", "a finite number > 0"),
    (["--lr", "nan"], "--lr", "a finite number > 0"),
    (["--ema-decay", "1.5"], "--ema-decay", "< 1"),
    (["--workers", "-2"], "--workers", "an integer >= 0"),
    (["--max-minutes", "-1"], "--max-minutes", ">= 0"),
    (["--model-json", "{bad"], "--model-json", "not valid JSON"),
    (["--model-json", "[1]"], "--model-json", "expected a JSON object"),
    (["--model-json", '{"nope": 1}'], "--model-json", "unknown field"),
    (["--model-json", '{"model_channels": 32.0}'], "--model-json", "expected int"),
    (["--model-json", '{"dropout": 2.0}'], "--model-json", "dropout must be in"),
    (["--data", "/no/such/folder"], "--data", "does not exist"),
    (["--device", "tpu9"], "--device", "expected cpu, cuda"),
])
def test_bad_train_arguments_get_one_line(tmp_path, capsys, extra, argument, allowed):
    rc, err = _run(capsys, TINY + ["--out", str(tmp_path / "o")] + extra)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("hdae: error: "), err
    assert argument in err and allowed in err and "Traceback" not in err


def test_out_that_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, err = _run(capsys, TINY + ["--out", str(f)])
    assert rc == 2 and "argument --out" in err and "is a file" in err
    rc, err = _run(capsys, TINY + ["--out", "/proc/hdae-run"])  # a read-only file system, even for root
    assert rc == 2 and "argument --out" in err and "writable folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    rc, err = _run(capsys, TINY + ["--out", str(ro / "run")])
    assert rc == 2 and "argument --out" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    rc, err = _run(capsys, TINY + ["--out", str(tmp_path / "o"), "--device", "cuda"])
    assert rc == 2 and "argument --device" in err and "CUDA is not available" in err


def test_bench_and_export_arguments(tmp_path, capsys):
    rc, err = _run(capsys, ["bench", "--batch", "0"])
    assert rc == 2 and "argument --batch" in err
    rc, err = _run(capsys, ["export", str(tmp_path / "none"), str(tmp_path / "d"), "--command", "x"])
    assert rc == 2 and "does not exist" in err


def test_errors_after_parsing_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    out = tmp_path / "o"
    model = __import__("hdae_core").HDAE(ModelConfig.preset("tiny", "dae"))
    ck.save(model, out / "checkpoint", ema=model, extra={})
    rc, err = _run(capsys, TINY + ["--out", str(out), "--resume", "--steps", "2", "--batch", "2"])
    assert rc == 2 and err.startswith("hdae: error: ") and "without training state" in err
    assert err.count("\n") == 1
    with pytest.raises(ck.CheckpointError):
        main(TINY + ["--out", str(out), "--resume", "--steps", "2", "--batch", "2", "--debug"])


@pytest.mark.slow
def test_exploding_loss_stops_like_a_non_finite_one(tmp_path, capsys):
    out = tmp_path / "o"
    rc, err = _run(capsys, TINY + ["--out", str(out), "--steps", "30", "--batch", "2", "--lr", "1e10",
                                   "--ckpt-every", "1", "--log-every", "1"])
    assert rc == 2 and "loss exploded at step" in err and "last good checkpoint" in err, err
    step = ck.read_config(out / "checkpoint")["extra"]["step"]
    assert 1 <= step < 30
    ck.load(out / "checkpoint")


def test_a_healthy_run_is_not_stopped_by_the_explosion_check(tmp_path):
    cfg = T.TrainConfig(model=ModelConfig.preset("tiny", "dae"), out=str(tmp_path / "o"), steps=12, batch_size=2,
                        lr=1e-3, log_every=4, eval_every=0, ckpt_every=12, progress=False, tensorboard=False)
    T.train(cfg)
    assert ck.read_config(tmp_path / "o" / "checkpoint")["extra"]["step"] == 12


def test_train_config_refuses_impossible_values():
    for kw in ({"batch_size": -4}, {"ckpt_every": 0}, {"log_every": 0}, {"steps": 0}, {"lr": 0.0}):
        with pytest.raises(ValueError, match=next(iter(kw)).replace("_", "_")):
            T.TrainConfig(**kw)


def _image_folder(root: Path, n_good=6):
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n_good):
        arr = (torch.rand(20, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr, "RGB").save(root / f"{i:02d}.png")
    Image.new("L", (20, 20), 128).save(root / "gray.png")
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(root / "rgba.png")
    Image.new("P", (20, 20)).save(root / "palette.png")
    Image.new("RGB", (3, 3), (200, 10, 10)).save(root / "tiny3x3.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


@pytest.mark.slow
def test_bad_images_error_skip_and_convert(tmp_path, capsys):
    data = tmp_path / "imgs"
    _image_folder(data)
    # 11 files, 5 steps an epoch: 12 steps meet every file
    base = TINY + ["--data", str(data), "--steps", "12", "--batch", "2", "--eval-size", "2", "--log-every", "12"]
    rc, err = _run(capsys, base + ["--out", str(tmp_path / "a")])
    assert rc == 2 and err.startswith("hdae: error: ") and ".png" in err and err.count("\n") == 1, err

    rc = main(base + ["--out", str(tmp_path / "b"), "--on-bad-image", "skip"])
    out = capsys.readouterr()
    assert rc == 0
    assert "skipped 4 unusable image(s)" in out.out, out.out + out.err
    assert "upscaled" in out.out and "3x3" in out.out

    rc = main(base + ["--out", str(tmp_path / "c"), "--on-bad-image", "skip", "--convert-images"])
    out = capsys.readouterr()
    assert rc == 0 and "skipped 1 unusable image(s)" in out.out, out.out + out.err


@pytest.mark.slow
def test_a_negative_batch_in_a_real_process_exits_at_once(tmp_path):
    # it used to spin forever at full CPU, deaf to SIGTERM
    p = subprocess.run([sys.executable, "-m", "hdae_core.cli", *TINY, "--out", str(tmp_path / "o"), "--batch", "-4"],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "hdae: error: argument --batch: expected a positive integer, got '-4'"
