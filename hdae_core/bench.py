"""Speed benchmark: training throughput, decoder forward, DDIM costs, memory, FLOPs and utilisation."""
from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from . import hardware
from .config import VARIANTS, ModelConfig
from .model import HDAE
from .optim import EMA, make_optimizer

CPU_PRESETS = ("tiny", "shapes32", "diffae32")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clock():
    """Wall time, or with HDAE_BENCH_CLOCK=cpu this process's CPU time: with one thread on a shared
    machine, the work a step costs, unaffected by time slices given to other jobs."""
    return time.process_time if os.environ.get("HDAE_BENCH_CLOCK") == "cpu" else time.perf_counter


def _time(fn, device, repeats: int, warmup: int = 1, stat: str = "best") -> float:
    """Wall time of one call after ``warmup`` calls: the best of ``repeats`` (the least disturbed by
    other load) or their mean (``stat="mean"``, how the DiffAE peer's benchmark times)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    clock = _clock()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return min(times) if stat == "best" else sum(times) / len(times)


def _best(fn, device, repeats: int, warmup: int = 1) -> float:
    return _time(fn, device, repeats, warmup, "best")


def matmul_peak_flops(device: torch.device, dtype=torch.float32, n: int = 1024) -> float:
    """Achieved FLOP/s of a square matmul: the machine's practical peak for utilisation figures."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = _best(lambda: a @ b, device, repeats=5)
    return 2 * n**3 / t


def flops_per_image(model: HDAE, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[float, float]:
    """(training-step FLOPs, decoder-forward FLOPs) per image from ``torch.utils.flop_counter``."""
    with FlopCounterMode(display=False) as fc:
        model(x, t, noise).mean().backward()
    train = fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    codes = model.encode(x).detach()
    with torch.no_grad(), FlopCounterMode(display=False) as fc2:
        model.decoder(x, t, codes)
    return train / len(x), fc2.get_total_flops() / len(x)


def ddim_overhead(model: HDAE, x: torch.Tensor, codes: torch.Tensor, steps: int, repeats: int = 3,
                  amp_dtype=None) -> dict:
    """DDIM decode and inversion time over the bare decoder forwards they call, measured as
    alternating pairs (sampler, then the same number of plain ``decoder(x_t, t, codes)`` calls)
    with the median ratio kept, so that load from elsewhere falls on both sides alike."""
    dev = x.device
    tb = torch.full((len(x),), 500, device=dev)
    calls = {"decode": steps, "invert": steps + 1}  # refine=1 inversion: one extra first call
    runs = {"decode": lambda: model.decode(x, codes, steps), "invert": lambda: model.encode_stochastic(x, codes, steps)}

    def bare(n):
        with torch.no_grad():
            for _ in range(n):
                model.decoder(x, tb, codes)

    out = {}
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for name, fn in runs.items():
            ratios, t_run = [], []
            fn()
            for _ in range(repeats):
                t_s = _time(fn, dev, 1, 0)
                t_b = _time(lambda: bare(calls[name]), dev, 1, 0)
                ratios.append(t_s / t_b)
                t_run.append(t_s)
            ratios.sort()
            t_run.sort()
            out[f"ddim_{name}_{steps}_ms_per_img"] = 1000 * t_run[len(t_run) // 2] / len(x)
            out[f"ddim_{name}_overhead"] = ratios[len(ratios) // 2] - 1
    out["ddim_overhead"] = out["ddim_decode_overhead"]
    return out


def bench_one(preset: str, variant: str, batch: int = 16, device: str | None = None,
              amp: str = "auto", repeats: int = 3, ddim_steps=(20, 100), ddim_batch: int = 4,
              channels_last: str = "auto", warmup: int = 1, timing: str = "best", flops: bool = True,
              compile: bool = False) -> dict:
    """Measure one preset × variant; returns a flat dict (one JSON line).

    ``amp``: auto (bf16 on CUDA, fp32 on CPU) | bf16 | none; ``channels_last``: auto (on for CUDA) | on | off,
    as ``train()`` decides them; ``timing``: best or mean of ``repeats`` after ``warmup`` calls.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = ModelConfig.preset(preset, variant)
    torch.manual_seed(0)
    model = HDAE(cfg).to(dev)
    s = cfg.image_size
    x = (torch.rand(batch, 3, s, s, device=dev) * 2 - 1)
    t = torch.randint(0, 1000, (batch,), device=dev)
    noise = torch.randn_like(x)
    amp_dtype = hardware.amp_dtype(amp, dev)
    cl = channels_last == "on" or (channels_last == "auto" and dev.type == "cuda")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train() sets it
        torch.cuda.reset_peak_memory_stats()
    if cl:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    opt = make_optimizer(model, 1e-4)
    ema = EMA(model, 0.9999, True)
    model.train()
    net = torch.compile(model) if compile else model

    def train_step():
        # the step as train() runs it: autocast, backward, clipping, Adam, EMA
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = net(x, t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        ema.update(model)

    t_train = _time(train_step, dev, repeats, warmup, timing)
    model.eval()
    codes = model.encode(x).detach()

    def fwd():
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model.decoder(x, t, codes)

    t_fwd = _time(fwd, dev, repeats, warmup, timing)
    out = {
        "preset": preset, "variant": variant, "batch": batch, "device": str(dev),
        "dtype": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32"),
        "channels_last": cl, "compile": compile,
        "timing": f"{timing} of {repeats} after {warmup}", "clock": "cpu" if _clock() is time.process_time else "wall",
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "train_img_s": batch / t_train,
        "decoder_fwd_ms_per_img": 1000 * t_fwd / batch,
    }
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    xb, cb = x[:ddim_batch], codes[:ddim_batch]
    for n in ddim_steps:
        out.update(ddim_overhead(model, xb, cb, n, repeats=max(repeats, 3), amp_dtype=amp_dtype))
    if flops:
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
            ("ddim_invert_20_ms_per_img", "{:.0f}"), ("ddim_decode_overhead", "{:+.1%}"),
            ("ddim_invert_overhead", "{:+.1%}"), ("utilisation", "{:.1%}")]
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(f.format(r[c]) for c, f in cols) + " |" for r in rows)


def _steps(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip() and v.strip() != "none")


def main(args) -> int:
    opts = dict(amp=getattr(args, "amp", "auto"), channels_last=getattr(args, "channels_last", "auto"),
                compile=getattr(args, "compile", False))
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.json:
        if not (args.preset and args.variant):
            print("error: --json needs --preset and --variant", file=sys.stderr)
            return 2
        print(json.dumps(bench_one(
            args.preset, args.variant, args.batch, args.device, repeats=getattr(args, "repeats", 3),
            ddim_steps=_steps(getattr(args, "ddim_steps", "20,100")), warmup=getattr(args, "warmup", 1),
            timing=getattr(args, "timing", "best"), flops=not getattr(args, "no_flops", False), **opts)))
        return 0
    presets = [args.preset] if args.preset else list(CPU_PRESETS)
    variants = [args.variant] if args.variant else list(VARIANTS)
    rows = []
    for p in tqdm(presets, desc="presets"):
        for v in variants:
            rows.append(bench_one(p, v, args.batch, args.device, repeats=2, ddim_steps=(20,), ddim_batch=4, **opts))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(markdown_table(rows))
    return 0
