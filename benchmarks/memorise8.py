"""Does the decoder follow its codes? Train a tiny HDAE on 8 shapes and decode them from random x_T.

    python benchmarks/memorise8.py --prediction eps --steps 1000
    python benchmarks/memorise8.py --prediction v --steps 1000

Prints, every --every steps, the MSE of decoding the 8 training images from random x_T with their
own codes, with another image's codes, and from their DDIM-inverted x_T (T = 20), beside the
mean-colour baseline. A decoder that follows its codes goes well below the baseline with its own
codes and stays far above it with another image's.
"""
from __future__ import annotations

import argparse
import time

import torch

from hdae_core import ModelConfig
from hdae_core.data import Shapes
from hdae_core.evaluation import mean_colour_mse
from hdae_core.model import HDAE


def evaluate(m: HDAE, x: torch.Tensor, steps: int = 20) -> dict[str, float]:
    m.eval()
    with torch.no_grad():
        codes = m.encode(x)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        own = m.decode(noise, codes, steps)
        other = m.decode(noise, torch.roll(codes, 1, 0), steps)
        enc = m.decode(m.encode_stochastic(x, codes, steps), codes, steps)
    m.train()
    return {name: (y - x).pow(2).mean().item() for name, y in (("random_own", own), ("random_other", other), ("encoded", enc))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prediction", default="eps", choices=["eps", "v"])
    ap.add_argument("--variant", default="hdae_u")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", args.variant, prediction=args.prediction)).train()
    x = Shapes(size=m.config.image_size, seed=0, length=8).batch(list(range(8)))["image"]
    baseline = mean_colour_mse(x).mean().item()
    opt = torch.optim.Adam(m.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        t = torch.randint(0, m.diffusion_config.T, (len(x),), generator=g)
        loss = m(x, t, torch.randn(x.shape, generator=g)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            r = evaluate(m, x)
            print(f"{args.prediction} {args.variant} step {step:5d} ({time.perf_counter() - t0:4.0f} s): "
                  f"random x_T, own codes {r['random_own']:.4f} | another image's codes {r['random_other']:.4f} | "
                  f"encoded x_T {r['encoded']:.4f} | mean-colour baseline {baseline:.4f}", flush=True)


if __name__ == "__main__":
    main()
