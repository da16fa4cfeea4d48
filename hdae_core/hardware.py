"""One line naming the machine a run or a benchmark used (model cards, bench tables)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe_hardware(device: torch.device | None = None) -> str:
    """CPU model and core count, the GPU's name when ``device`` is CUDA, and the torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} CPU cores"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} ({text})"
    return f"{text}, torch {torch.__version__}"
