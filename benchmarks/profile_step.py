"""Profile one training step and one decoder forward (the ops that dominate), for a preset and variant.

    python benchmarks/profile_step.py --preset diffae32 --variant dae --batch 16 --threads 1 --out benchmarks/profiles/x.txt
"""
import io
import os
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from hdae_core import HDAE, ModelConfig
from hdae_core.train import EMA, make_optimizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="diffae32")
    ap.add_argument("--variant", default="dae")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (the table sums them)")
    ap.add_argument("--out", default=None, help="also write the tables to this file")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    text = io.StringIO()

    def show(title, prof):
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows)
        print(f"== {title}\n{table}", file=text)
    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset(a.preset, a.variant))
    opt, ema = make_optimizer(m, 1e-4), EMA(m, 0.9999, True)
    s = m.config.image_size
    x = torch.rand(a.batch, 3, s, s) * 2 - 1
    t = torch.randint(0, 1000, (a.batch,))
    noise = torch.randn_like(x)

    def step():
        loss = m(x, t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
        opt.step()
        ema.update(m)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    show(f"training step x{a.steps}: {a.preset} {a.variant} batch {a.batch}, {torch.get_num_threads()} threads, "
         f"torch {torch.__version__}", prof)
    codes = m.encode(x).detach()
    m.eval()
    with torch.no_grad():
        m.decoder(x, t, codes)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                m.decoder(x, t, codes)
    show(f"decoder forward x{a.steps}", prof)
    xb, cb = x[:4], codes[:4]
    m.decode(xb, cb, 10)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m.decode(xb, cb, 10)
    show("DDIM decode, 10 steps, batch 4", prof)
    print(text.getvalue())
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text.getvalue())


if __name__ == "__main__":
    main()
