"""Test data built on the spot: Shapes rendered to a PNG folder, with attribute files in the three formats."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hdae_core.data import Shapes

# the attributes written to the files: renamed, so a report that names them cannot have taken Shapes' names
RENAMED = {"red": "Red_Object", "large": "Big_Object", "striped": "Striped", "left_side": "On_The_Left"}


def shapes_folder(root: Path, n: int = 40, size: int = 32, seed: int = 5, prefix: str = "") -> dict:
    """Render ``n`` shapes as ``root/{prefix}{i:05d}.png``; their file names, attributes and horizontal positions."""
    root.mkdir(parents=True, exist_ok=True)
    data = Shapes(size=size, seed=seed)
    b = data.batch(range(n))
    u8 = ((b["image"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    files = []
    for i in range(n):
        name = f"{prefix}{i:05d}.png"
        Image.fromarray(u8[i]).save(root / name)
        files.append(name)
    cols = [data.attribute_names.index(a) for a in RENAMED]
    pos_x = b["factors"][:, data.factor_names.index("pos_x")].numpy()
    return {"files": files, "attributes": b["attributes"][:, cols].numpy(), "names": list(RENAMED.values()),
            "pos_x": pos_x}


def celeba_file(path: Path, files, values: np.ndarray, names, jpg_unpadded: bool = False) -> Path:
    """list_attr_celeba.txt (or, with ``jpg_unpadded``, CelebAMask-HQ's anno file: '7.jpg' rows) in ±1."""
    lines = [str(len(files)), " ".join(names)]
    for f, row in zip(files, values):
        key = f"{int(Path(f).stem)}.jpg" if jpg_unpadded else f
        lines.append(key + "  " + " ".join("1" if v > 0.5 else "-1" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_file(path: Path, files, values: np.ndarray, names, continuous: dict | None = None) -> Path:
    """A CSV: filename, the first half of the columns as 0/1, the rest as ±1, plus continuous columns."""
    header = ["filename"] + list(names) + list(continuous or {})
    rows = [",".join(header)]
    half = len(names) // 2
    for i, f in enumerate(files):
        vals = [str(int(v > 0.5)) if j < half else ("1" if v > 0.5 else "-1") for j, v in enumerate(values[i])]
        vals += [f"{float(c[i]):.4f}" for c in (continuous or {}).values()]
        rows.append(",".join([f] + vals))
    path.write_text("\n".join(rows) + "\n")
    return path
