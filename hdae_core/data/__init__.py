"""Data sets: the built-in Shapes set, image folders / DiffAE LMDBs, and CelebA-HQ attributes."""

from __future__ import annotations

import os
from pathlib import Path

from .celeba import CELEBA_ATTRIBUTES, AttributeImages, read_celeba_attributes
from .images import IMAGE_EXTENSIONS, BadImageError, ImageFolder, LMDBImages, write_lmdb
from .shapes import Shapes
from .attributes import read_attributes
from .source import FolderData, ShapesData, StudyData, open_data

__all__ = [
    "Shapes",
    "ImageFolder",
    "LMDBImages",
    "write_lmdb",
    "read_celeba_attributes",
    "CELEBA_ATTRIBUTES",
    "AttributeImages",
    "BadImageError",
    "IMAGE_EXTENSIONS",
    "make_dataset",
    "read_attributes",
    "open_data",
    "StudyData", "ShapesData", "FolderData",
]


def make_dataset(spec: str | os.PathLike | None, size: int, **kw):
    """None or "shapes" -> Shapes(size); an LMDB folder (holding data.mdb) -> LMDBImages; a folder -> ImageFolder."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "shapes"):
        return Shapes(size=size, **kw)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data set not found: {path} (expected 'shapes', an image folder or an LMDB folder)")
    if path.is_file() and path.name == "data.mdb":
        path = path.parent
    if path.is_dir() and (path / "data.mdb").is_file():
        return LMDBImages(path, size, **kw)
    if path.is_dir():
        return ImageFolder(path, size, **kw)
    raise ValueError(f"{path}: not a data set (expected 'shapes', an image folder or an LMDB folder with data.mdb)")
