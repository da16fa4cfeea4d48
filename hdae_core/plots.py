"""Figures: image grids, curves, ECDFs and level heatmaps."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] → uint8 [B, H, W, 3]."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(rows: Sequence[torch.Tensor], scale: int = 1, pad: int = 1) -> Image.Image:
    """A grid image: one row per tensor [N, 3, H, W] in [-1, 1], with white padding."""
    rows = [to_uint8(r) for r in rows]
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = img
    im = Image.fromarray(canvas)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def save_grid(path: str | Path, rows: Sequence[torch.Tensor], scale: int = 1) -> Path:
    """Write an image grid PNG (see ``image_grid``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, scale=scale).save(path)
    return path
