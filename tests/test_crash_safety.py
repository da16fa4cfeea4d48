"""A training run SIGKILLed at each stage of a checkpoint save loses nothing: --resume finds the newest
complete checkpoint (also one a save had moved aside or not yet renamed), removes the incomplete ones,
and the resumed run's losses, weights and EMA equal an uninterrupted run's."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hdae_core import ModelConfig
from hdae_core import checkpoint as ck
from hdae_core import train as T

ROOT = Path(__file__).resolve().parents[1]

# the child trains and SIGKILLs itself at STAGE of its NTH checkpoint save
CHILD = r"""
import os, signal, sys
stage, nth, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import torch
torch.set_num_threads(1)
from hdae_core import checkpoint as ck, train as T
from hdae_core.config import ModelConfig

state = {"saves": 0, "on": False, "renames": 0}
real_save, real_replace, real_save_file, real_rmtree = ck.save, os.replace, ck.save_file, ck.shutil.rmtree

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def save(*a, **k):
    state["saves"] += 1
    state["on"], state["renames"] = state["saves"] == nth, 0
    if state["on"] and stage == "before_save":
        die()
    r = real_save(*a, **k)
    if state["on"] and stage == "after_save":
        die()
    state["on"] = False
    return r

def replace(src, dst):
    if state["on"]:
        state["renames"] += 1
        if stage == "before_rename%d" % state["renames"]:
            die()
        real_replace(src, dst)
        if stage == "after_rename%d" % state["renames"]:
            die()
        return
    real_replace(src, dst)

def save_file(tensors, filename, metadata=None):
    real_save_file(tensors, filename, metadata=metadata)
    if state["on"] and stage == "during_write" and filename.endswith("ema.safetensors"):
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        die()

def rmtree(path, *a, **k):
    if state["on"] and stage == "during_cleanup":
        die()
    real_rmtree(path, *a, **k)

ck.save, ck.save_file, os.replace, ck.shutil.rmtree = save, save_file, replace, rmtree
cfg = T.TrainConfig(model=ModelConfig.preset("tiny", "hdae_u"), out=out, steps=6, batch_size=4, lr=1e-3,
                    log_every=1, eval_every=0, ckpt_every=2, progress=False, tensorboard=False)
T.train(cfg)
print("finished without being killed")
"""


def cfg(out, **kw):
    base = dict(model=ModelConfig.preset("tiny", "hdae_u"), out=str(out), steps=6, batch_size=4, lr=1e-3,
                log_every=1, eval_every=0, ckpt_every=2, progress=False, tensorboard=False)
    base.update(kw)
    return T.TrainConfig(**base)


def losses(out):
    with open(Path(out) / "metrics.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the child trains on one thread: the same float sums
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("uninterrupted")
        T.train(cfg(out))
    finally:
        torch.set_num_threads(n)
    return out


# stage -> the step whose checkpoint must survive (the kill hits the save of step 4)
STAGES = {
    "before_save": 2,       # killed at the step boundary, before the save begins
    "during_write": 2,      # half an ema.safetensors in the temporary folder
    "before_rename1": 4,    # the new folder complete but hidden, the old one in place
    "after_rename1": 4,     # the old folder moved aside, no checkpoint/ at all
    "after_rename2": 4,     # the new folder in place, the old one not yet removed
    "during_cleanup": 4,    # as above, killed as the removal starts
    "after_save": 4,        # the save finished
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_each_stage_of_a_save_loses_nothing(tmp_path, reference, one_thread, stage):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, stage, "2", str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    hidden = [q.name for q in out.iterdir() if q.name.startswith(".checkpoint.")]
    if stage in ("during_write", "before_rename1", "after_rename1", "after_rename2"):
        assert hidden, "the kill should have left a moved-aside or temporary folder"

    notes = []
    assert ck.recover(out / "checkpoint", log=notes.append)
    assert ck.read_config(out / "checkpoint")["extra"]["step"] == STAGES[stage], notes
    assert not [q.name for q in out.iterdir() if q.name.startswith(".checkpoint.")]

    T.train(cfg(out), resume=True)
    assert losses(out) == losses(reference)
    for ema in (True, False):
        a, b = ck.load(reference / "checkpoint", ema=ema), ck.load(out / "checkpoint", ema=ema)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), (ema, k)


def test_resume_finds_a_moved_aside_checkpoint_by_itself(tmp_path, one_thread):
    out = tmp_path / "run"
    T.train(cfg(out, steps=4))
    os.replace(out / "checkpoint", out / ".checkpoint.old-123-1")  # as a kill between the renames leaves it
    (out / ".checkpoint.tmp-abc").mkdir()  # an orphan of a kill during a write
    (out / ".checkpoint.tmp-abc" / "model.safetensors").write_bytes(b"\x00" * 10)
    T.train(cfg(out, steps=6), resume=True)
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4, 5, 6]
    assert ck.read_config(out / "checkpoint")["extra"]["step"] == 6
    assert sorted(q.name for q in out.iterdir() if q.name.startswith(".") and q.name != T.LOCK_FILE) == []


def test_an_incomplete_checkpoint_is_not_complete(tmp_path):
    model = __import__("hdae_core").HDAE(ModelConfig.preset("tiny", "dae"))
    path = ck.save(model, tmp_path / "c", ema=model, extra={"step": 3})
    assert ck.is_complete(path)
    f = path / "ema.safetensors"
    f.write_bytes(f.read_bytes()[:-5])
    assert not ck.is_complete(path)
    (path / "config.json").unlink()
    assert not ck.is_complete(path)
