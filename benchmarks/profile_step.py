"""Profile one training step and one decoder forward (the ops that dominate), for a preset and variant.

    python benchmarks/profile_step.py --preset diffae32 --variant dae --batch 16
"""
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
    a = ap.parse_args()
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
        step()
    print(f"== training step: {a.preset} {a.variant} batch {a.batch}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    codes = m.encode(x).detach()
    m.eval()
    with torch.no_grad():
        m.decoder(x, t, codes)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            m.decoder(x, t, codes)
    print("== decoder forward")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
