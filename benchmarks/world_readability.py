"""Can every Shapes attribute be read from the pixels? A small CNN, 12k images, a few epochs, held-out AUROC."""
import argparse
import json
import time

import torch

from hdae_core.data import Shapes
from hdae_core.oracle import attribute_auroc, train_oracle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=12_000)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = int(args.epochs * args.n_train / 64)
    t0 = time.perf_counter()
    oracle, _ = train_oracle(size=args.size, n_train=args.n_train, steps=steps, n_test=args.n_test, progress=False)
    held_out = Shapes(args.size, seed=0, length=args.n_train + args.n_test, correlation=None)
    b = held_out.batch(range(args.n_train, args.n_train + args.n_test))
    auroc = attribute_auroc(oracle, b["image"], b["attributes"])
    tiers = {n: "structure" if n in Shapes.structure_attributes else "appearance" for n in auroc}
    print(f"{'attribute':20s} {'tier':10s} AUROC (chance 0.5, bar 0.97)")
    for n, v in auroc.items():
        print(f"{n:20s} {tiers[n]:10s} {v:.4f}")
    print(json.dumps({"min_auroc": min(auroc.values()), "bar": 0.97, "passed": min(auroc.values()) >= 0.97,
                      "n_train": args.n_train, "steps": steps, "seconds": round(time.perf_counter() - t0, 1),
                      "auroc": auroc}))


if __name__ == "__main__":
    main()
