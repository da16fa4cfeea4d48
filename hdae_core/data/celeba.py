"""CelebA / CelebA-HQ attribute annotations and images paired with them."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import ImageFolder, _check_on_error

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
]


def read_celeba_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """Read list_attr_celeba.txt or CelebAMask-HQ-attribute-anno.txt: index = file name, one 0/1 int8 column per attribute."""
    # Layout of both: line 1 the image count, line 2 the attribute names, then
    # "file v1 ... vK" with values -1/1 separated by one or more spaces (0 is read as absent too).
    import pandas as pd  # imported here: it is slow to import and only needed for annotations

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file not found: {path}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count on line 1 and attribute names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}, line 1: expected the number of images, got {lines[0].strip()[:40]!r}") from None
    names = lines[1].split()
    if not names:
        raise ValueError(f"{path}, line 2: expected the attribute names")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}, line 2: the attribute name {name!r} appears twice; give every column its own name")
        seen.add(name)
    k = len(names)
    files, values, line_of = [], [], {}
    for n, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != k + 1:
            raise ValueError(
                f"{path}, line {n}: expected {k + 1} fields (file name + {k} attribute values), got {len(fields)}"
            )
        if fields[0] in line_of:
            raise ValueError(f"{path}, line {n}: {fields[0]!r} already annotated on line {line_of[fields[0]]}")
        line_of[fields[0]] = n
        files.append(fields[0])
        values.append(fields[1:])
    if len(files) != count:
        raise ValueError(f"{path}: line 1 says {count} images but {len(files)} annotation rows follow")
    arr = _parse_values(values, names, path, files, line_of)
    df = pd.DataFrame(arr.astype(np.int8), index=pd.Index(files, name="image"), columns=names)
    return df


def _parse_values(values: list[list[str]], names: list[str], path: Path, files: list[str], line_of: dict) -> np.ndarray:
    """The -1/0/1 tokens as a boolean array (True = present); names the first line and column with another token."""
    arr = np.array(values, dtype=str).reshape(len(values), len(names))
    present = arr == "1"
    ok = (present | (arr == "-1") | (arr == "0")).all(axis=1)
    if not ok.all():
        i = int(np.argmin(ok))
        j = next(j for j, v in enumerate(values[i]) if v not in ("-1", "0", "1"))
        raise ValueError(f"{path}, line {line_of[files[i]]} ({files[i]!r}), column {names[j]!r}: "
                         f"value {values[i][j]!r}; expected -1 or 1")
    return present


# How a row names an image, most exact first. A row that names a folder ("a/1.png") is matched by path
# only; a bare name may match by file name, by stem (another extension: CelebA-HQ's rows say .jpg) or by
# number (zero padding ignored: "12.jpg" ~ "00012.png"), and only where that key belongs to one image
# and one row, so "1.png" never labels both "1.png" and "0001.png", nor "a/1.png" and "b/1.png".
MATCH_LEVELS = ("path", "path without extension", "file name", "stem", "number")


def _clean(name: str) -> str:
    path = name.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _match_key(name: str, level: str) -> str | None:
    """The key of ``name`` (a relative posix path) at a matching level; None where the level does not apply."""
    if level == "path":
        return name
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    stem = base[:dot] if dot > 0 else base  # as PurePosixPath.stem: '.hidden' has no extension
    if level == "path without extension":
        return name[: len(name) - len(base) + len(stem)]
    if level == "file name":
        return base
    if level == "stem":
        return stem
    return str(int(stem)) if stem.isascii() and stem.isdigit() else None


def match_rows(rows: list[str], files: list[str]) -> tuple[dict[int, int], dict[int, str]]:
    """({image index: row index}, {image index: why its row is ambiguous}) for row names and image paths."""
    from collections import defaultdict

    rows = [_clean(r) for r in rows]
    bare = [r for r in range(len(rows)) if "/" not in rows[r]]
    row_of_image: dict[int, int] = {}
    used: set[int] = set()
    ambiguous: dict[int, str] = {}
    for level in MATCH_LEVELS:
        eligible = range(len(rows)) if level.startswith("path") else bare
        by_row, by_image = defaultdict(list), defaultdict(list)
        for r in eligible:
            k = _match_key(rows[r], level)
            if k is not None:
                by_row[k].append(r)
        for i, f in enumerate(files):
            k = _match_key(f, level)
            if k is not None:
                by_image[k].append(i)
        for k, images in by_image.items():
            candidates = by_row.get(k, [])
            for i in images:
                if i in row_of_image or not candidates:
                    continue
                if len(candidates) == 1 and len(images) == 1:
                    if candidates[0] not in used:
                        row_of_image[i] = candidates[0]
                        used.add(candidates[0])
                elif len(candidates) > 1:
                    ambiguous.setdefault(i, f"rows {rows[candidates[0]]!r} and {rows[candidates[1]]!r} both "
                                            f"match it by {level}")
                elif candidates[0] not in used:
                    ambiguous.setdefault(i, f"row {rows[candidates[0]]!r} matches {len(images)} images by {level}, "
                                            f"e.g. {files[images[0]]!r} and {files[images[1]]!r}")
    return row_of_image, {i: why for i, why in ambiguous.items() if i not in row_of_image}


def _relative(name: str, root) -> str:
    """A row naming an absolute path inside ``root``, as a path relative to it; any other row as written."""
    if root is None or not os.path.isabs(name):
        return name
    try:
        rel = os.path.relpath(os.path.realpath(name), os.path.realpath(root))
    except ValueError:  # another drive
        return name
    return name if rel.startswith("..") else Path(rel).as_posix()


class AttributeImages(Dataset):
    """Images paired with attribute rows: items get `attributes` (float32 0/1 vector, order `attribute_names`)."""
    # `images` is a dataset (an ImageFolder, LMDBImages, ...) or a folder (read with ImageFolder at
    # `size`); `attributes` a DataFrame from read_celeba_attributes or the annotation file's path.
    # match="name" pairs by relative path, or by file name / stem / number where that is unique (see
    # MATCH_LEVELS; needs `images.files`); "index" pairs image i with row i (DiffAE's CelebA-HQ LMDB keeps the
    # annotation order); "auto" picks "name" when the data set has files. An image without a
    # row raises ValueError naming it, or with on_error="skip" is logged, listed in `skipped`, and left out.

    def __init__(
        self,
        images,
        attributes,
        size: int | None = None,
        columns: list[str] | None = None,
        on_error: str = "raise",
        match: str = "auto",
        **image_kwargs,
    ):
        self.on_error = _check_on_error(on_error)
        if isinstance(images, (str, os.PathLike)):
            if size is None:
                raise ValueError("pass size= when images is a folder")
            images = ImageFolder(images, size, on_error=on_error, **image_kwargs)
        elif image_kwargs:
            raise TypeError(f"image options {sorted(image_kwargs)} only apply when images is a folder")
        self.images = images
        df = attributes if hasattr(attributes, "columns") else read_celeba_attributes(attributes)
        if columns is not None:
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise KeyError(f"attributes {missing} not in the annotations ({len(df.columns)} columns)")
            df = df[list(columns)]
        self.attribute_names = [str(c) for c in df.columns]
        values = df.to_numpy(dtype=np.float32)
        if match == "auto":
            match = "name" if hasattr(images, "files") else "index"
        self.skipped: dict[str, str] = {}
        self.unused_rows = 0  # rows that label no image
        if match == "name":
            if not hasattr(images, "files"):
                raise ValueError(f"match='name' needs a data set with .files; {type(images).__name__} has none")
            root = getattr(images, "root", None)
            row_names = [_relative(str(name), root) for name in df.index]
            row_of_image, ambiguous = match_rows(row_names, list(images.files))
            keep = sorted(row_of_image)
            rows = [row_of_image[i] for i in keep]
            self.unused_rows = len(df) - len(rows)
            missing = [i for i in range(len(images.files)) if i not in row_of_image]
            if missing:
                first = missing[0]
                example = os.path.join(str(root or ""), images.files[first])
                why = f" ({ambiguous[first]})" if first in ambiguous else ""
                message = f"{len(missing)} of {len(images.files)} images have no attribute row, e.g. {example}{why}"
                if self.on_error == "raise":
                    raise ValueError(message + "; pass on_error='skip' to leave them out")
                log.warning("skipping: %s", message)
                for i in missing:
                    reason = f"ambiguous: {ambiguous[i]}" if i in ambiguous else "no attribute row"
                    self.skipped[os.path.join(str(root or ""), images.files[i])] = reason
        elif match == "index":
            if len(images) != len(df):
                raise ValueError(
                    f"match='index' pairs image i with row i, but there are {len(images)} images and {len(df)} rows"
                )
            keep, rows = list(range(len(images))), list(range(len(df)))
        else:
            raise ValueError(f"match must be 'auto', 'name' or 'index', got {match!r}")
        if not keep:
            raise ValueError("no image has an attribute row")
        self.indices = np.asarray(keep, dtype=np.int64)
        self.values = values[np.asarray(rows, dtype=np.int64)]
        self.names = [str(df.index[r]) for r in rows]
        self._position = {int(j): p for p, j in enumerate(self.indices)}

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"AttributeImages({self.images!r}, {len(self)} annotated, {len(self.attribute_names)} attributes)"

    def __getitem__(self, index: int) -> dict:
        """{'image', 'attributes' [A] float32 0/1, 'index' (position here, of the image actually returned)}."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for AttributeImages of length {n}")
        index %= n
        for offset in range(n):
            item = dict(self.images[int(self.indices[(index + offset) % n])])
            # a skipping image set may hand back another image; its own row must follow it
            pos = self._position.get(int(item["index"]))
            if pos is not None:
                item["attributes"] = torch.from_numpy(self.values[pos])
                item["index"] = pos
                return item
        raise RuntimeError("no usable annotated image")
