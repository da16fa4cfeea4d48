"""A destination that holds something is never destroyed: export, import-diffae, train and checkpoint.save write
only into a new or empty folder, or replace their own kind (a checkpoint, a run) when asked to with a flag; every
refusal is one line naming the folder (and the flag), with nothing touched."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hdae_core import HDAE, ModelConfig
from hdae_core import checkpoint as ck
from hdae_core import train as T
from hdae_core.cli import main

FIX = Path(__file__).parent / "fixtures" / "diffae"
TINY = ["train", "--preset", "tiny", "--variant", "dae", "--no-progress", "--no-tensorboard", "--eval-every", "0",
        "--steps", "2", "--batch", "2", "--log-every", "1"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(path: Path) -> Path:
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work\n")
    (path / "notes" / "a.txt").write_text("keep me\n")
    return path


def _one_line_refusal(capsys, argv, *words):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hdae: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def run(tmp_path):
    """A two-step training run folder (checkpoint with optimizer state, metrics.csv, train.json)."""
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------- checkpoint.save


def test_save_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    with pytest.raises(ck.DestinationError, match=r"mine: holds files that are not an hdae checkpoint"):
        ck.save(HDAE(ModelConfig.preset("tiny", "dae")), user)
    assert _snapshot(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary or moved-aside sibling left


def test_save_refuses_a_file_and_fills_an_empty_folder(tmp_path):
    f = tmp_path / "model"
    f.write_text("not a folder")
    with pytest.raises(ck.DestinationError, match="not a folder"):
        ck.save(HDAE(ModelConfig.preset("tiny", "dae")), f)
    assert f.read_text() == "not a folder"
    (tmp_path / "empty").mkdir()
    ck.save(HDAE(ModelConfig.preset("tiny", "dae")), tmp_path / "empty")
    assert ck.is_complete(tmp_path / "empty")


def test_recover_never_moves_a_foreign_folder_aside(tmp_path):
    ck.save(HDAE(ModelConfig.preset("tiny", "dae")), tmp_path / ".c.old-1-2", extra={"step": 3})
    user = _user_folder(tmp_path / "c")
    before = _snapshot(user)
    with pytest.raises(ck.DestinationError, match="not an hdae checkpoint"):
        ck.recover(tmp_path / "c", log=lambda *_: None)
    assert _snapshot(user) == before


# ---------------------------------------------------------------- hdae export


def test_export_into_a_foreign_folder_is_refused_untouched(run, tmp_path, capsys):
    user = _user_folder(tmp_path / "dest")
    before, run_before = _snapshot(user), _snapshot(run)
    _one_line_refusal(capsys, ["export", str(run), str(user), "--command", "hdae train", "--n-eval", "2",
                               "--device", "cpu", "--force"], str(user), "not an hdae checkpoint")
    assert _snapshot(user) == before and _snapshot(run) == run_before


def test_export_of_a_folder_not_written_by_train_is_refused_up_front(tmp_path, capsys):
    # a hand-made checkpoint records no steps, images or wall time: one line before anything is written
    hand = tmp_path / "hand"
    ck.save(HDAE(ModelConfig.preset("tiny", "dae")), hand / "checkpoint")
    (hand / "metrics.csv").write_text("step,loss\n")
    dest = tmp_path / "ship"
    _one_line_refusal(capsys, ["export", str(hand), str(dest), "--command", "hdae train", "--n-eval", "2",
                               "--device", "cpu"], "no step, images, wall_s recorded", "nothing was written")
    assert not dest.exists()


def test_export_says_what_a_run_folder_is_when_given_something_else(run, tmp_path, capsys):
    dest = tmp_path / "ship"
    argv = ["--command", "hdae train", "--n-eval", "2", "--device", "cpu"]
    _one_line_refusal(capsys, ["export", str(run / "checkpoint"), str(dest), *argv], "checkpoint inside a run",
                      str(run))
    (tmp_path / "empty").mkdir()
    _one_line_refusal(capsys, ["export", str(tmp_path / "empty"), str(dest), *argv], "no checkpoint/ in it")
    _one_line_refusal(capsys, ["export", str(tmp_path / "nowhere"), str(dest), *argv], "does not exist")
    assert not dest.exists()


def test_export_of_a_run_without_its_log_is_refused_up_front(run, tmp_path, capsys):
    (run / "metrics.csv").unlink()
    dest = tmp_path / "ship"
    _one_line_refusal(capsys, ["export", str(run), str(dest), "--command", "hdae train", "--n-eval", "2",
                               "--device", "cpu"], "no metrics.csv", "nothing was written")
    assert not dest.exists()


@pytest.mark.parametrize("where", ["run", "run/checkpoint", "run/sub", "."])
def test_export_into_or_around_the_run_is_refused_untouched(run, tmp_path, capsys, where):
    dest = run.parent / where
    before = _snapshot(run)
    _one_line_refusal(capsys, ["export", str(run), str(dest), "--command", "hdae train", "--n-eval", "2",
                               "--device", "cpu", "--force"], str(dest), "run folder")
    assert _snapshot(run) == before and not (run / "sub").exists()


def test_export_replaces_a_checkpoint_only_with_force(run, tmp_path, capsys):
    dest = tmp_path / "ship"
    argv = ["export", str(run), str(dest), "--command", "hdae train", "--n-eval", "2", "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    before = _snapshot(dest)
    _one_line_refusal(capsys, argv, str(dest), "already holds a checkpoint", "--force")
    assert _snapshot(dest) == before
    assert main(argv + ["--force"]) == 0
    assert ck.is_complete(dest) and (dest / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- hdae import-diffae


def test_import_diffae_refuses_a_foreign_folder_and_replaces_a_checkpoint_only_with_force(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    _one_line_refusal(capsys, ["import-diffae", str(FIX / "tiny_last.ckpt"), "--out", str(user), "--force"],
                      str(user), "not an hdae checkpoint")
    assert _snapshot(user) == before
    out = tmp_path / "m"
    assert main(["import-diffae", str(FIX / "tiny_last.ckpt"), "--out", str(out)]) == 0
    capsys.readouterr()
    _one_line_refusal(capsys, ["import-diffae", str(FIX / "tiny_last.ckpt"), "--out", str(out)],
                      str(out), "already holds a checkpoint", "--force")
    assert main(["import-diffae", str(FIX / "tiny_last.ckpt"), "--out", str(out), "--force"]) == 0
    assert ck.load(out).config.variant == "dae"


def test_import_diffae_arguments_are_one_line_errors(tmp_path, capsys):
    # its own options: one line naming the bad value, never argparse's usage text, nothing written
    out = tmp_path / "m"
    ckpt = str(FIX / "tiny_last.ckpt")
    _one_line_refusal(capsys, ["import-diffae", ckpt, "--out", str(out), "--image-size", "-5"], "--image-size",
                      "a positive integer")
    _one_line_refusal(capsys, ["import-diffae", ckpt], "--out")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"x")
    _one_line_refusal(capsys, ["import-diffae", str(folder), "--out", str(out)], "is a folder", "last.ckpt")
    assert not out.exists()


# ---------------------------------------------------------------- hdae train


def test_train_into_an_existing_run_needs_resume(run, capsys):
    before = _snapshot(run)
    _one_line_refusal(capsys, TINY + ["--out", str(run)], str(run), "already holds a training run", "--resume")
    after = _snapshot(run)
    after.pop(T.LOCK_FILE, None), before.pop(T.LOCK_FILE, None)
    assert after == before  # metrics.csv, checkpoint and train.json as they were
    assert main(TINY + ["--out", str(run), "--resume", "--steps", "3"]) == 0
    with open(run / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_train_into_a_foreign_folder_is_refused_even_with_resume(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    for extra in ([], ["--resume"]):
        _one_line_refusal(capsys, TINY + ["--out", str(user)] + extra, str(user), "not an hdae training run")
    assert _snapshot(user) == before


def test_train_into_a_checkpoint_folder_is_refused(tmp_path, capsys):
    ck.save(HDAE(ModelConfig.preset("tiny", "dae")), tmp_path / "ship")
    before = _snapshot(tmp_path / "ship")
    _one_line_refusal(capsys, TINY + ["--out", str(tmp_path / "ship"), "--resume"], "not an hdae training run")
    assert _snapshot(tmp_path / "ship") == before


def test_train_into_an_empty_folder_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(TINY + ["--out", str(tmp_path / "empty")]) == 0
    assert ck.read_config(tmp_path / "empty" / "checkpoint")["extra"]["step"] == 2


def test_the_library_starts_a_run_afresh_only_when_asked(run, tmp_path):
    cfg = T.TrainConfig(model=ModelConfig.preset("tiny", "dae"), out=str(run), steps=3, batch_size=2, log_every=1,
                        eval_every=0, progress=False, tensorboard=False)
    before = _snapshot(run)
    with pytest.raises(ck.DestinationError, match="already holds a training run; pass --resume"):
        T.train(cfg)
    assert {k: v for k, v in _snapshot(run).items() if k != T.LOCK_FILE} == \
        {k: v for k, v in before.items() if k != T.LOCK_FILE}
    with pytest.raises(ValueError, match="pass one of them"):
        T.train(cfg, resume=True, overwrite=True)
    (run / "grids").mkdir()
    (run / "grids" / "recon_0009999.png").write_bytes(b"stale")
    T.train(cfg, overwrite=True)
    with open(run / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert not (run / "grids" / "recon_0009999.png").exists()
    assert ck.read_config(run / "checkpoint")["extra"]["step"] == 3
