"""How close the fp32 CPU training step is to what this core can do, beside DiffAE's own network.

The CPU speed goals compare two networks of the same architecture, so both do the same FLOPs per image. This
script measures what those FLOPs could run at here and what each side achieves:

- the fp32 matmul peak of one core (square products, 1024² and 2048²);
- the throughput of every convolution one training step runs (forward, and forward + backward), in the
  default NCHW layout and channels-last; the summed NCHW times bound the step from below, as if norms,
  activations, attention and the optimiser were free;
- the training step of ``dae`` and ``hdae_u`` (FLOPs counted by ``torch.utils.flop_counter``) and of DiffAE's
  network (``bench_diffae.py``, run unchanged in its own process), alternately for several rounds, with the CPU
  clock so another job on the machine does not count.

It then prints each side's achieved FLOP/s, and where a given ratio over the peer falls against that bound, so a goal such as "1.3× the peer's images/s at fp32" can be judged against the hardware.

    python benchmarks/cpu_ceiling.py                   # diffae32, batch 16, 1 thread, 3 rounds
    python benchmarks/cpu_ceiling.py --rounds 5 --goal 1.3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

os.environ["HDAE_BENCH_CLOCK"] = "cpu"  # bench._time reads it: this process's CPU time, not the wall clock
from hdae_core import bench  # noqa: E402

from vs_diffae import cpu_name, preset_shape, run_json  # noqa: E402


def _cpu_time(fn, repeats: int, warmup: int = 2) -> float:
    """Mean CPU seconds per call: ``hdae bench``'s own timer with its CPU clock."""
    return bench._time(fn, torch.device("cpu"), repeats, warmup, "mean")


def matmul_peak(n: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _cpu_time(lambda: a @ b, repeats=max(3, 8 * (1024 // n) ** 3))


def conv_layers(preset: str, variant: str) -> dict[tuple[int, int, int, int, int], int]:
    """{(in channels, out channels, input resolution, kernel, stride): count} of every convolution one training
    forward of ``variant`` runs (encoder and decoder)."""
    from hdae_core.config import ModelConfig
    from hdae_core.model import HDAE

    cfg = ModelConfig.preset(preset, variant)
    model = HDAE(cfg)
    seen: dict[tuple[int, int, int, int, int], int] = {}

    def hook(mod, inp, out):
        key = (mod.in_channels, mod.out_channels, inp[0].shape[-1], mod.kernel_size[0], mod.stride[0])
        seen[key] = seen.get(key, 0) + 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) is torch.nn.Conv2d]
    x = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    model(x, torch.zeros(2, dtype=torch.long), torch.zeros_like(x))
    for h in handles:
        h.remove()
    return seen


def conv_throughput(cin: int, cout: int, size: int, batch: int, channels_last: bool, kernel: int = 3,
                    stride: int = 1) -> tuple[float, float, float]:
    """(forward FLOP/s, forward + backward FLOP/s, forward + backward seconds) of one convolution."""
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    x = torch.randn(batch, cin, size, size)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out = size // stride
    flops = 2 * batch * out * out * cin * cout * kernel * kernel
    with torch.no_grad():
        fwd = _cpu_time(lambda: conv(x), repeats=10)
    xg = x.clone().requires_grad_(True)
    both = _cpu_time(lambda: conv(xg).sum().backward(), repeats=5)
    return flops / fwd, 3 * flops / both, both  # backward: the input's and the weight's gradients


def ours(preset: str, variant: str, batch: int, steps: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "hdae_core.cli", "bench", "--preset", preset, "--variant", variant, "--batch",
           str(batch), "--json", "--device", "cpu", "--threads", str(threads), "--amp", "none", "--channels-last",
           "off", "--repeats", str(steps), "--warmup", "2", "--timing", "mean", "--ddim-steps", "none"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HDAE_BENCH_CLOCK="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return run_json(cmd, env, f"hdae bench {variant}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default=os.environ.get("HDAE_PEERS", str(ROOT.parent / "shared" / "peers")))
    ap.add_argument("--preset", default="diffae32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--goal", type=float, default=1.3, help="the train ratio over the peer to judge (default 1.3)")
    ap.add_argument("--json", default=None, help="write the summary as one JSON line to this file")
    a = ap.parse_args()
    torch.set_num_threads(1)
    peer_script = Path(a.peers) / "bench_diffae.py"
    if not peer_script.exists():
        raise SystemExit(f"no {peer_script}: give --peers (a folder with bench_diffae.py and diffae/) or HDAE_PEERS")

    print(f"machine: {cpu_name()}, torch {torch.__version__}, 1 thread, fp32, CPU clock\n")
    peaks = {n: matmul_peak(n) for n in (1024, 2048)}
    peak = max(peaks.values())
    for n, p in peaks.items():
        print(f"matmul {n}²: {p / 1e9:6.1f} GFLOP/s")
    print(f"\nevery convolution of one {a.preset} dae training step at batch {a.batch}, GFLOP/s (share of the "
          f"matmul peak); the NCHW forward + backward times, summed, bound the step from below:")
    print(f"  {'layers':6s} {'in→out @ res, k':20s} {'NCHW fwd':>14s} {'NCHW fwd+bwd':>14s} {'NHWC fwd':>14s} "
          f"{'NHWC fwd+bwd':>14s}")
    conv_s = 0.0
    for (cin, cout, size, k, st), n in sorted(conv_layers(a.preset, "dae").items(), key=lambda kv: -kv[0][2]):
        cells = []
        for cl in (False, True):
            f, fb, secs = conv_throughput(cin, cout, size, a.batch, cl, k, st)
            if not cl:
                conv_s += n * secs
            cells += [f"{f / 1e9:6.1f} ({f / peak:4.0%})", f"{fb / 1e9:6.1f} ({fb / peak:4.0%})"]
        name = f"{cin}→{cout} @ {size}, {k}" + (f"/{st}" if st > 1 else "")
        print(f"  {n:4d}×  {name:20s} " + " ".join(f"{c:>14s}" for c in cells))
    conv_bound = a.batch / conv_s
    print(f"  convolutions alone, NCHW: {conv_s * 1000:.0f} ms a step = at most {conv_bound:.2f} img/s")

    peer_cmd = [sys.executable, "-c", "import runpy, sys, time; time.perf_counter = time.process_time; "
                "runpy.run_path(sys.argv[1], run_name='__main__')", str(peer_script)]
    peer_env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", THREADS="1", BATCH=str(a.batch),
                    STEPS=str(a.steps), **preset_shape(a.preset))
    rows = {"peer": [], "dae": [], "hdae_u": []}
    flops = {}
    print(f"\ntraining step, {a.rounds} rounds alternating, mean of {a.steps} steps after 2 warm-up steps:")
    for r in range(a.rounds):
        order = ["peer", "dae", "hdae_u"] if r % 2 == 0 else ["hdae_u", "dae", "peer"]
        for who in order:
            m = run_json(peer_cmd, peer_env, "peer") if who == "peer" else ours(a.preset, who, a.batch, a.steps, 1)
            rows[who].append(m["train_img_s"])
            if who != "peer":
                flops[who] = m["train_flops_per_img"]
            if who == "dae":
                params_dae = m["params"]
            if who == "peer":
                params_peer = m.get("params")
            print(f"  round {r + 1} {who:7s} {m['train_img_s']:6.2f} img/s", flush=True)
    if params_peer is not None and params_peer != params_dae:
        print(f"  note: the peer has {params_peer} parameters, dae {params_dae}: FLOPs may differ")
    med = {k: statistics.median(v) for k, v in rows.items()}
    achieved = {"peer": med["peer"] * flops["dae"], "dae": med["dae"] * flops["dae"],
                "hdae_u": med["hdae_u"] * flops["hdae_u"]}
    print(f"\nFLOPs per training image: dae {flops['dae'] / 1e9:.2f} G (the peer: the same architecture), "
          f"hdae_u {flops['hdae_u'] / 1e9:.2f} G (ratio dae/hdae_u {flops['dae'] / flops['hdae_u']:.3f})")
    for who in ("peer", "dae", "hdae_u"):
        print(f"  {who:7s} {med[who]:6.2f} img/s = {achieved[who] / 1e9:6.1f} GFLOP/s = {achieved[who] / peak:4.0%} "
              f"of the matmul peak")
    goal_img_s = a.goal * med["peer"]
    print(f"  dae / peer {med['dae'] / med['peer']:.3f}; {a.goal}× the peer is {goal_img_s:.2f} img/s, "
          f"{goal_img_s / conv_bound:.0%} of the {conv_bound:.2f} img/s that dae's convolutions alone allow "
          f"(with norms, activations, attention and the optimiser free); dae now reaches "
          f"{med['dae'] / conv_bound:.0%} of it")
    print(f"  hdae_u / dae {med['hdae_u'] / med['dae']:.3f}; equal FLOP/s would give "
          f"{flops['dae'] / flops['hdae_u']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": cpu_name(), "torch": torch.__version__, "matmul_peak": peaks, "conv_bound_img_s": conv_bound,
            "img_s": med, "rounds": rows, "train_flops_per_img": flops, "achieved_flop_s": achieved,
            "goal": a.goal, "goal_img_s": goal_img_s}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
