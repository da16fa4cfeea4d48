"""Benchmark: Shapes images per second on one core (batch() and per-item __getitem__)."""

import argparse
import json
import time

import torch

from hdae_core.data import Shapes


def rate(fn, n_images: int, repeats: int = 3) -> float:
    """Best-of-`repeats` images per second for fn(), which produces n_images images."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for size in args.sizes:
        ds = Shapes(size=size)
        ds.batch(range(8))  # warm-up
        batch_rate = rate(lambda: ds.batch(range(args.batch)), args.batch)
        item_rate = rate(lambda: [ds[i] for i in range(args.items)], args.items)
        results[size] = {"batch_img_s": round(batch_rate), "getitem_img_s": round(item_rate)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
