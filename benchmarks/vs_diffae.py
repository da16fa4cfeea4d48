"""This project against DiffAE's own network, side by side on this machine.

Runs DiffAE's benchmark (``bench_diffae.py`` from the peers folder, its code unchanged, in its own
process) and ``hdae bench`` alternately, round after round, each in a fresh process with the same
thread count, batch, architecture and timing (mean of STEPS steps after 2 warm-up steps). Prints
every measurement, the per-round ratios and their medians, and names the machine.

    python benchmarks/vs_diffae.py                       # diffae32, batch 16, 3 rounds, 2 threads
    python benchmarks/vs_diffae.py --rounds 5 --threads 1 --json out.jsonl
    python benchmarks/vs_diffae.py --peers /path/to/peers --amp bf16

The peers folder defaults to ../shared/peers beside the repository root (HDAE_PEERS overrides).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine(threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    flags = cpu_flags()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads,
            "torch": out.stdout.strip() or "?", "python": platform.python_version(),
            "bf16_isa": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16")) or None}


def run_json(cmd: list[str], env: dict, label: str) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        raise SystemExit(f"{label} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return json.loads(lines[-1])


def preset_shape(preset: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from hdae_core.config import ModelConfig

    c = ModelConfig.preset(preset)
    return {"SIZE": str(c.image_size), "CH": str(c.model_channels),
            "MULT": ",".join(map(str, c.channel_mult)), "ENC_MULT": ",".join(map(str, c.enc_channel_mult))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default=os.environ.get("HDAE_PEERS", str(ROOT.parent / "shared" / "peers")),
                    help="folder holding bench_diffae.py and diffae/ (default ../shared/peers)")
    ap.add_argument("--preset", default="diffae32")
    ap.add_argument("--variants", default="dae,hdae_u", help="comma-separated; the first is compared with the peer")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement, after 2 warm-up steps")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--amp", default="none", choices=["none", "bf16"], help="our autocast (the peer runs fp32)")
    ap.add_argument("--ddim-steps", default="20", help="DDIM steps for our sampler overhead ('none' skips)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: both sides time with this process's CPU time instead of the wall clock (one thread "
                         "only); on a machine shared with other jobs, the work each step costs")
    ap.add_argument("--json", default=None, help="append every measurement and the summary as JSON lines")
    a = ap.parse_args()
    if a.clock == "cpu" and a.threads != 1:
        raise SystemExit("--clock cpu needs --threads 1 (CPU time of several threads counts their waiting too)")

    peer_script = Path(a.peers) / "bench_diffae.py"
    if not peer_script.exists():
        raise SystemExit(f"no {peer_script}: give --peers (a folder with bench_diffae.py and diffae/) or HDAE_PEERS")
    variants = [v for v in a.variants.split(",") if v]
    base = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), HDAE_BENCH_CLOCK=a.clock,
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # the peer's script runs unchanged; with --clock cpu its timer reads CPU time, as ours then does
    peer_cmd = [sys.executable, str(peer_script)] if a.clock == "wall" else [
        sys.executable, "-c", "import runpy, sys, time; time.perf_counter = time.process_time; "
        "runpy.run_path(sys.argv[1], run_name='__main__')", str(peer_script)]
    peer_env = dict(base, THREADS=str(a.threads), BATCH=str(a.batch), STEPS=str(a.steps), **preset_shape(a.preset))
    ours_cmd = lambda v: [sys.executable, "-m", "hdae_core.cli", "bench", "--preset", a.preset, "--variant", v,
                          "--batch", str(a.batch), "--json", "--device", "cpu", "--threads", str(a.threads),
                          "--amp", a.amp, "--channels-last", "off", "--repeats", str(a.steps), "--warmup", "2",
                          "--timing", "mean", "--ddim-steps", a.ddim_steps, "--no-flops"]
    info = machine(a.threads)
    print(f"machine: {info['cpu']}, {info['cores']} cores, {a.threads} threads, torch {info['torch']}, "
          f"python {info['python']}, bf16 instructions: {', '.join(info['bf16_isa'] or ['none'])}")
    print(f"{a.preset}, batch {a.batch}, ours {a.amp if a.amp != 'none' else 'fp32'} / peer fp32, "
          f"{a.rounds} rounds alternating, each number the mean of {a.steps} steps after 2 warm-up steps, "
          f"{'CPU time' if a.clock == 'cpu' else 'wall clock'}\n")
    sink = open(a.json, "a") if a.json else None
    rounds = []
    for r in range(a.rounds):
        # alternate who goes first, so a drift in the machine's load falls on both sides
        order = ["peer"] + variants if r % 2 == 0 else variants[::-1] + ["peer"]
        res = {}
        for who in order:
            if who == "peer":
                res[who] = run_json(peer_cmd, peer_env, "peer")
            else:
                res[who] = run_json(ours_cmd(who), base, f"hdae bench {who}")
            m = res[who]
            print(f"round {r + 1} {who:8s} train {m['train_img_s']:7.2f} img/s   decoder forward "
                  f"{m['decoder_fwd_ms_per_img']:7.2f} ms/img", flush=True)
            if sink:
                sink.write(json.dumps({"round": r + 1, "who": who, **m}) + "\n")
        first = variants[0]
        ratios = {f"{first} train / peer": res[first]["train_img_s"] / res["peer"]["train_img_s"],
                  f"{first} forward time / peer": res[first]["decoder_fwd_ms_per_img"] / res["peer"]["decoder_fwd_ms_per_img"]}
        for v in variants[1:]:
            ratios[f"{v} train / {first}"] = res[v]["train_img_s"] / res[first]["train_img_s"]
            ratios[f"{v} train / peer"] = res[v]["train_img_s"] / res["peer"]["train_img_s"]
        for v in variants:
            for k in ("ddim_decode_overhead", "ddim_invert_overhead"):
                if k in res[v]:
                    ratios[f"{v} {k.replace('_', ' ')}"] = res[v][k]
        rounds.append(ratios)
        print("  " + "   ".join(f"{k} {x:.3f}" for k, x in ratios.items()) + "\n", flush=True)

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"medians over {a.rounds} rounds ({info['cpu']}, {a.threads} threads, torch {info['torch']}, {a.clock} clock):")
    for k, x in med.items():
        per = ", ".join(f"{r[k]:.3f}" for r in rounds)
        print(f"  {k:34s} {x:7.3f}   ({per})")
    if sink:
        sink.write(json.dumps({"summary": med, "rounds": rounds, "machine": info, "preset": a.preset,
                               "batch": a.batch, "amp": a.amp, "clock": a.clock}) + "\n")
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
