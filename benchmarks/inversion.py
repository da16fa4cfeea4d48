"""How exactly does decoding undo the stochastic encoder? Round-trip MSE and time by inversion.

    python benchmarks/inversion.py                              # the shipped hdae_u, 64 held-out shapes
    python benchmarks/inversion.py --model shapes32_dae --n 256 --steps 20 100 --refine 0 1 2

For each DDIM step count T and each ``refine`` (0 = DiffAE's inversion, k = k residual corrections per
step, the package default being 1), prints the MSE of decode(encode_stochastic(x)) against x on held-out
shapes (seed 10000, the quality check's), the std of the inverted x_T, and the wall time of the inversion.
"""
from __future__ import annotations

import argparse
import time

import torch

from hdae_core import pretrained
from hdae_core.data import Shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes32_hdae_u", help="a shipped model's name or a checkpoint folder")
    ap.add_argument("--n", type=int, default=64, help="held-out images")
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    m = pretrained.load(args.model).eval()
    x = Shapes(size=m.config.image_size, seed=10_000).batch(list(range(args.n)))["image"]
    with torch.no_grad():
        codes = m.encode(x)
        print(f"{args.model} ({m.config.variant}, predicts {m.config.prediction}), {args.n} held-out shapes")
        print("| T | refine | round-trip MSE | x_T std | inversion s |")
        print("|---:|---:|---:|---:|---:|")
        for T in args.steps:
            for k in args.refine:
                t0 = time.perf_counter()
                x_T = m.encode_stochastic(x, codes, T, refine=k)
                dt = time.perf_counter() - t0
                mse = (m.decode(x_T, codes, T) - x).pow(2).mean().item()
                print(f"| {T} | {k} | {mse:.2e} | {x_T.std().item():.3f} | {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
