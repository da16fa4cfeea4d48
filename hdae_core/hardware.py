"""The machine a run or a benchmark used, in one line (model cards, bench tables), and the precision it runs at."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_hardware(device: torch.device | None = None) -> str:
    """CPU model and core count, the GPU's name when ``device`` is CUDA, and the torch version."""
    text = f"{cpu_name()}, {os.cpu_count()} CPU cores"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} ({text})"
    return f"{text}, torch {torch.__version__}"


AMP_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (auto | bf16 | fp16 | none) on ``device``: auto is bf16 on CUDA, none elsewhere."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be auto, {', '.join(AMP_DTYPES)}; got {amp!r}")
    return AMP_DTYPES[amp]
