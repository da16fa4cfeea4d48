import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hdae_core import ModelConfig
from hdae_core import checkpoint as ck
from hdae_core import train as T

ROOT = Path(__file__).resolve().parents[1]


def cfg(out, **kw):
    base = dict(model=ModelConfig.preset("tiny", "hdae_u"), out=str(out), steps=8, batch_size=4, lr=1e-3,
                log_every=2, eval_every=0, ckpt_every=4, progress=False, tensorboard=False)
    base.update(kw)
    return T.TrainConfig(**base)


def losses(out):
    with open(Path(out) / "metrics.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    T.train(cfg(tmp_path / "a"))
    T.train(cfg(tmp_path / "b", steps=4))
    T.train(cfg(tmp_path / "b"), resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    a, b = ck.load(tmp_path / "a" / "checkpoint"), ck.load(tmp_path / "b" / "checkpoint")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_resume_with_other_model_is_refused(tmp_path):
    T.train(cfg(tmp_path / "a", steps=4))
    with pytest.raises(ValueError, match="another model config"):
        T.train(cfg(tmp_path / "a", model=ModelConfig.preset("tiny", "dae")), resume=True)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = T.batches

    def poisoned(dataset, c, start_step, device):
        for i, x in enumerate(real(dataset, c, start_step, device)):
            yield x if start_step + i < 5 else torch.full_like(x, float("nan"))

    monkeypatch.setattr(T, "batches", poisoned)
    with pytest.raises(T.TrainingDiverged, match=r"non-finite loss .* at step 5.*last good checkpoint"):
        T.train(cfg(tmp_path / "r"))
    meta = ck.read_config(tmp_path / "r" / "checkpoint")
    assert meta["extra"]["step"] == 4
    ck.load(tmp_path / "r" / "checkpoint")  # still loads


def test_a_busy_run_folder_is_refused_and_a_failed_run_releases_it(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    holder = T.lock_run_folder(out)  # another `hdae train` on the same folder
    with pytest.raises(T.RunFolderBusy, match=rf"another training run \(process {os.getpid()}\) is writing"):
        T.train(cfg(out, steps=2), resume=True)
    assert not (out / "checkpoint").exists()  # refused before anything was written
    holder.close()
    monkeypatch.setattr(T, "_train", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        T.train(cfg(out, steps=2))
    monkeypatch.undo()
    T.train(cfg(out, steps=2))  # the failed run let go of the folder
    assert (out / "checkpoint" / ck.CONFIG_FILE).exists()


@pytest.mark.slow
def test_checkpoint_killed_mid_write_keeps_previous(tmp_path, monkeypatch):
    T.train(cfg(tmp_path / "r", steps=4))
    before = (tmp_path / "r" / "checkpoint" / "model.safetensors").read_bytes()
    calls = {"n": 0}
    real = ck.save_file

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing")
        return real(*a, **k)

    monkeypatch.setattr(ck, "save_file", dying)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg(tmp_path / "r", steps=8), resume=True)
    assert (tmp_path / "r" / "checkpoint" / "model.safetensors").read_bytes() == before
    assert ck.read_config(tmp_path / "r" / "checkpoint")["extra"]["step"] == 4
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".") and p.name != T.LOCK_FILE) == []


def test_ema_warmup_follows_fast_at_start():
    m = torch.nn.Linear(2, 2)
    ema = T.EMA(m, decay=0.9999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    # warm-up decay 0.1 at the first update: the EMA moves 90 % of the way
    torch.testing.assert_close(ema.model.weight, m.weight - 0.1)
    assert T.EMA(m, 0.9999, warmup=False).current_decay() == 0.9999


def test_eval_writes_metrics_and_grid(tmp_path):
    T.train(cfg(tmp_path / "r", steps=4, eval_every=4, eval_size=4, eval_steps=2))
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    assert float(last["eval_mse_enc"]) >= 0 and float(last["eval_mse_rand"]) >= 0
    assert float(last["eval_lpips_rand"]) >= 0
    assert (tmp_path / "r" / "grids" / "recon_0000004.png").exists()


def test_grid_every_thins_the_grids_but_not_the_evaluations(tmp_path):
    T.train(cfg(tmp_path / "r", steps=6, eval_every=2, eval_size=2, eval_steps=2, grid_every=4))
    with open(tmp_path / "r" / "metrics.csv") as f:
        evals = [int(r["step"]) for r in csv.DictReader(f) if r["eval_mse_enc"]]
    assert evals == [2, 4, 6]
    assert sorted(p.name for p in (tmp_path / "r" / "grids").iterdir()) == ["recon_0000004.png", "recon_0000006.png"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        T.train(cfg(out, device="cpu"))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    T.train(cfg(tmp_path / "one", device="cpu"))
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, start_method="spawn")
    one, two = ck.load(tmp_path / "one" / "checkpoint", ema=False), ck.load(tmp_path / "two" / "checkpoint", ema=False)
    diff = max((a - b).abs().max().item() for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    # float reduction order differs between one process and an all-reduce; Adam at lr 1e-3 amplifies it a little
    assert diff < 1e-3, diff
    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in l1] == [s for s, _ in l2]
    for (_, a), (_, b) in zip(l1, l2):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.slow
def test_hdae_train_cli_needs_only_an_output_folder(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "hdae_core.cli", "train", "--preset", "tiny", "--steps", "2", "--batch", "2",
         "--eval-every", "0", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "checkpoint" / "model.safetensors").exists() and (out / "metrics.csv").exists()


def test_cached_batches_equal_rendered_batches():
    from hdae_core.data import Shapes

    ds = Shapes(size=16, seed=3, length=40)
    dev = torch.device("cpu")
    plain = T.batches(ds, cfg("unused", batch_size=8, cache_data="off"), start_step=3, device=dev)
    cached = T.batches(ds, cfg("unused", batch_size=8, cache_data="on"), start_step=3, device=dev)
    for _ in range(7):  # crosses an epoch boundary (5 steps per epoch)
        assert torch.equal(next(plain), next(cached))
    with pytest.raises(ValueError, match="cache_data"):
        next(T.batches(ds, cfg("unused", cache_data="yes"), 0, dev))


def test_render_cache_in_worker_processes_matches_batch():
    from hdae_core.data import Shapes

    ds = Shapes(size=8, seed=1, length=10)
    cache = T.render_cache(ds, torch.device("cpu"), workers=2, chunk=4, progress=False)
    assert torch.equal(cache, ds.batch(list(range(10)))["image"])


def test_time_limit_stops_with_checkpoint_and_evaluation(tmp_path):
    T.train(cfg(tmp_path / "a", steps=1000, max_minutes=1e-6, eval_every=500, eval_size=4, eval_steps=2))
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2]  # the first log step after the limit
    assert rows[-1]["eval_mse_enc"] != ""
    meta = ck.read_config(tmp_path / "a" / "checkpoint")
    assert meta["extra"]["step"] == 2 and "CPU cores" in meta["extra"]["hardware"]


def test_cli_maps_new_training_flags_to_the_config():
    from hdae_core.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "--out", "x", "--compile-mode", "reduce-overhead",
                                      "--cache-data", "on", "--max-minutes", "2.5"])
    cfg = train_config_from_args(args)
    assert cfg.compile and cfg.compile_mode == "reduce-overhead"
    assert cfg.cache_data == "on" and cfg.max_minutes == 2.5
    plain = train_config_from_args(build_parser().parse_args(["train", "--out", "x"]))
    assert not plain.compile and plain.cache_data == "auto" and plain.max_minutes == 0


@pytest.mark.slow
def test_hardware_names_each_machine_once_across_resumes(tmp_path, monkeypatch):
    T.train(cfg(tmp_path / "a", steps=2))
    monkeypatch.setattr(T, "describe_hardware", lambda device=None: "machine B")
    T.train(cfg(tmp_path / "a", steps=4), resume=True)
    T.train(cfg(tmp_path / "a", steps=6), resume=True)
    hw = ck.read_config(tmp_path / "a" / "checkpoint")["extra"]["hardware"]
    assert hw.endswith("CPU cores, torch " + torch.__version__ + "; resumed on machine B")
    assert hw.count("resumed on") == 1


def test_optimizer_state_follows_parameter_layout_on_resume():
    # a run saved without channels-last resumes with it (a CPU run continued on CUDA): fused Adam
    # needs moments with the parameters' strides, and its step count beside the parameters
    from hdae_core.model import HDAE
    from hdae_core.train import load_optimizer_tensors, make_optimizer, optimizer_tensors

    torch.manual_seed(0)
    model = HDAE(ModelConfig.preset("tiny", variant="hdae_u"))
    opt = make_optimizer(model, 1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    flat = optimizer_tensors(model, opt)

    resumed = HDAE(ModelConfig.preset("tiny", variant="hdae_u"))
    resumed.load_state_dict(model.state_dict())
    resumed.to(memory_format=torch.channels_last)
    opt2 = make_optimizer(resumed, 1e-3)
    load_optimizer_tensors(resumed, opt2, flat)
    convs = [p for p in resumed.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert convs and all(not p.is_contiguous() for p in convs)  # channels-last took effect
    for p in resumed.parameters():
        st = opt2.state[p]
        assert st["exp_avg"].stride() == p.stride() and st["exp_avg_sq"].stride() == p.stride()
        assert st["step"].dtype == torch.float32
        assert st["step"].device == (p.device if opt2.defaults.get("fused") else torch.device("cpu"))
    by_name = dict(model.named_parameters())
    for name, p in resumed.named_parameters():
        torch.testing.assert_close(opt2.state[p]["exp_avg"], opt.state[by_name[name]]["exp_avg"])


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_stops_with_a_checkpoint_at_the_current_step(tmp_path, sig):
    # what `timeout`, a cluster scheduler or Ctrl-C sends: the run ends cleanly and loses no step.
    # Started the way a background shell starts it, with SIGINT ignored, which the run takes over.
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-c",
           "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
           "from hdae_core.cli import main; sys.exit(main(sys.argv[1:]))",
           "train", "--preset", "tiny", "--variant", "dae", "--steps", "100000", "--batch", "2",
           "--log-every", "1", "--eval-every", "0", "--ckpt-every", "100000", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(losses(out) if (out / "metrics.csv").exists() else []) < 3:
            time.sleep(0.2)
        p.send_signal(getattr(signal, sig))
        log, _ = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, log
    assert f"stopped by {sig}" in log
    step = ck.read_config(out / "checkpoint")["extra"]["step"]
    assert step >= 3 and step == losses(out)[-1][0]


def test_shapes_by_name_and_by_default_evaluate_on_the_same_held_out_images():
    by_default, by_name = T.held_out_batch(cfg("unused", eval_size=4)), T.held_out_batch(cfg("unused", data="shapes",
                                                                                          eval_size=4))
    assert torch.equal(by_default, by_name)
    training = T.training_set(cfg("unused", data="shapes")).batch([0, 1, 2, 3])["image"]
    assert not any(torch.equal(a, b) for a in by_name for b in training)


def _colour_folder(root, n=10):
    """``n`` images of one flat colour each, told apart by their red channel whichever way they are flipped."""
    from PIL import Image

    root.mkdir()
    for i in range(n):
        Image.new("RGB", (16, 16), (20 * i, 100, 50)).save(root / f"img{i:02d}.png")
    return root


def _reds(x):
    return sorted({round(((v + 1) * 127.5).item()) for v in x[:, 0].mean(dim=(1, 2))})


def test_a_folder_run_never_trains_on_its_held_out_images_and_lists_them(tmp_path, monkeypatch):
    data = _colour_folder(tmp_path / "imgs")
    seen = []
    real = T.batches

    def spy(dataset, c, start_step, device):
        for x in real(dataset, c, start_step, device):
            seen.append(x.clone())
            yield x

    monkeypatch.setattr(T, "batches", spy)
    out = tmp_path / "r"
    T.train(cfg(out, data=str(data), steps=6, batch_size=2, eval_size=3))  # 7 training images: 2 epochs
    names = (out / T.HELDOUT_FILE).read_text().split()
    assert len(names) == 3 and all((data / n).is_file() for n in names)
    held = {20 * int(n[3:5]) for n in names}
    trained = set(_reds(torch.cat(seen)))
    assert trained.isdisjoint(held) and len(trained) >= 6
    x_eval = T.held_out_batch(cfg(out, data=str(data), eval_size=3), out)
    assert set(_reds(x_eval)) == held


def test_resume_reads_the_held_out_list_back(tmp_path):
    data = _colour_folder(tmp_path / "imgs")
    out = tmp_path / "r"
    T.train(cfg(out, data=str(data), steps=2, batch_size=2, eval_size=3, ckpt_every=2))
    chosen = ["img09.png", "img00.png", "img04.png"]  # not what the seed picks: only read back can give these
    (out / T.HELDOUT_FILE).write_text("\n".join(chosen) + "\n")
    dataset, x_eval = T.run_data(cfg(out, data=str(data), eval_size=3), out)
    assert _reds(x_eval) == [0, 80, 180] and len(dataset) == 7
    assert 0 not in dataset.positions and 9 not in dataset.positions
    T.train(cfg(out, data=str(data), steps=4, batch_size=2, eval_size=3, ckpt_every=2), resume=True)
    assert (out / T.HELDOUT_FILE).read_text().split() == chosen
    (out / T.HELDOUT_FILE).write_text("gone.png\n")
    with pytest.raises(ValueError, match=r"heldout.txt: 1 held-out image\(s\) are not in .*gone.png"):
        T.train(cfg(out, data=str(data), steps=6, batch_size=2, eval_size=3), resume=True)


def test_an_lmdb_run_lists_its_held_out_keys(tmp_path):
    from hdae_core.data import write_lmdb

    write_lmdb(_colour_folder(tmp_path / "imgs"), tmp_path / "db", resolution=16, format="png")
    dataset, x_eval = T.run_data(cfg(tmp_path, data=str(tmp_path / "db"), eval_size=3), tmp_path)
    keys = (tmp_path / T.HELDOUT_FILE).read_text().split()
    assert len(keys) == 3 and all(k.startswith("16-") for k in keys) and len(dataset) == 7
    assert set(_reds(x_eval)) == {20 * int(k[3:]) for k in keys}
    assert not {int(k[3:]) for k in keys} & set(dataset.positions)


def test_a_folder_too_small_to_hold_out_is_refused(tmp_path):
    data = _colour_folder(tmp_path / "imgs", n=3)
    with pytest.raises(ValueError, match=r"imgs: 3 image\(s\) leave none to train on .*--eval-size 3"):
        T.train(cfg(tmp_path / "r", data=str(data), eval_size=3, batch_size=2))
