"""Speed benchmark: training throughput, decoder forward, DDIM costs, memory, FLOPs and utilisation."""
from __future__ import annotations

import json
import resource
import sys
import time

import torch

from .config import VARIANTS, ModelConfig
from .model import HDAE
from .optim import EMA, make_optimizer

CPU_PRESETS = ("tiny", "shapes32", "diffae32")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best(fn, device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls after ``warmup`` (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_flops(device: torch.device, dtype=torch.float32, n: int = 1024) -> float:
    """Achieved FLOP/s of a square matmul: the machine's practical peak for utilisation figures."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = _best(lambda: a @ b, device, repeats=5)
    return 2 * n**3 / t


def flops_per_image(model: HDAE, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[float, float]:
    """(training-step FLOPs, decoder-forward FLOPs) per image from ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(x, t, noise).mean().backward()
    train = fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    codes = model.encode(x).detach()
    with torch.no_grad(), FlopCounterMode(display=False) as fc2:
        model.decoder(x, t, codes)
    return train / len(x), fc2.get_total_flops() / len(x)


def bench_one(preset: str, variant: str, batch: int = 16, device: str | None = None,
              amp: str = "auto", repeats: int = 3, ddim_steps=(20, 100), ddim_batch: int = 4) -> dict:
    """Measure one preset × variant; returns a flat dict (one JSON line)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = ModelConfig.preset(preset, variant)
    torch.manual_seed(0)
    model = HDAE(cfg).to(dev)
    s = cfg.image_size
    x = (torch.rand(batch, 3, s, s, device=dev) * 2 - 1)
    t = torch.randint(0, 1000, (batch,), device=dev)
    noise = torch.randn_like(x)
    amp_dtype = {"auto": torch.bfloat16 if dev.type == "cuda" else None, "bf16": torch.bfloat16, "none": None}[amp]
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()

    opt = make_optimizer(model, 1e-4)
    ema = EMA(model, 0.9999, True)
    model.train()

    def train_step():
        # the step as train() runs it: autocast, backward, clipping, Adam, EMA
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(x, t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        ema.update(model)

    t_train = _best(train_step, dev, repeats)
    model.eval()
    codes = model.encode(x).detach()

    def fwd():
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model.decoder(x, t, codes)

    t_fwd = _best(fwd, dev, repeats)
    out = {
        "preset": preset, "variant": variant, "batch": batch, "device": str(dev),
        "dtype": "bf16" if amp_dtype is not None else "fp32",
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "train_img_s": batch / t_train,
        "decoder_fwd_ms_per_img": 1000 * t_fwd / batch,
    }
    xb, cb = x[:ddim_batch], codes[:ddim_batch]
    for n in ddim_steps:
        t_inv = _best(lambda: model.encode_stochastic(xb, cb, n), dev, 2)
        t_dec = _best(lambda: model.decode(xb, cb, n), dev, 2)
        out[f"ddim_invert_{n}_ms_per_img"] = 1000 * t_inv / ddim_batch
        out[f"ddim_decode_{n}_ms_per_img"] = 1000 * t_dec / ddim_batch
    # DDIM's overhead over its bare decoder passes at the same batch
    tb = torch.full((ddim_batch,), 500, device=dev)
    t_fwd_small = _best(lambda: torch.no_grad()(model.decoder)(xb, tb, cb), dev, repeats)
    n = ddim_steps[-1]
    out["ddim_overhead"] = out[f"ddim_decode_{n}_ms_per_img"] / (1000 * t_fwd_small / ddim_batch * n) - 1
    model.train()
    f_train, f_fwd = flops_per_image(model, x, t, noise)
    # the peak in the step's own precision; a larger product on a GPU, where 1024² is launch-bound
    peak = matmul_peak_flops(dev, amp_dtype or torch.float32, n=8192 if dev.type == "cuda" else 1024)
    out.update({
        "train_flops_per_img": f_train,
        "decoder_fwd_flops_per_img": f_fwd,
        "achieved_train_flop_s": f_train * out["train_img_s"],
        "matmul_peak_flop_s": peak,
        "utilisation": f_train * out["train_img_s"] / peak,
    })
    if dev.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def markdown_table(rows: list[dict]) -> str:
    cols = [("preset", "{}"), ("variant", "{}"), ("params", "{:,}"), ("train_img_s", "{:.1f}"),
            ("decoder_fwd_ms_per_img", "{:.2f}"), ("ddim_decode_20_ms_per_img", "{:.0f}"),
            ("ddim_invert_20_ms_per_img", "{:.0f}"), ("ddim_overhead", "{:+.1%}"), ("utilisation", "{:.1%}")]
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(f.format(r[c]) for c, f in cols) + " |" for r in rows)


def main(args) -> int:
    if args.json:
        if not (args.preset and args.variant):
            print("error: --json needs --preset and --variant", file=sys.stderr)
            return 2
        print(json.dumps(bench_one(args.preset, args.variant, args.batch, args.device)))
        return 0
    presets = [args.preset] if args.preset else list(CPU_PRESETS)
    variants = [args.variant] if args.variant else list(VARIANTS)
    rows = []
    from tqdm.auto import tqdm
    for p in tqdm(presets, desc="presets"):
        for v in variants:
            rows.append(bench_one(p, v, args.batch, args.device, repeats=2, ddim_steps=(20,), ddim_batch=4))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(markdown_table(rows))
    return 0
