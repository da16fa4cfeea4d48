"""Attribute files in any of three formats, read into one table: index = image file name, one column per attribute.

* CelebA's ``list_attr_celeba.txt`` and CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``: line 1 the image
  count, line 2 the names, then ``file v1 … vK`` with -1/1 values (``read_celeba_attributes``).
* A CSV (``.csv``, or any file whose first line has commas): a header with a file-name column (``filename``,
  ``file``, ``image``, ``image_id``, ``name`` or ``path``; else the first column), then one column per
  attribute. A column holding only 0/1 or only -1/1 is *binary* (read as 0/1); any other numbers make it
  *continuous* (a head-pose angle, an age in years), kept as float.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .celeba import read_celeba_attributes

if TYPE_CHECKING:
    import pandas as pd

FILENAME_COLUMNS = ("filename", "file", "image", "image_id", "image_name", "name", "path", "file_name")
BINARY, CONTINUOUS = "binary", "continuous"


def attribute_format(path: str | os.PathLike) -> str:
    """'csv' or 'celeba' (the two CelebA layouts share one format), from the name and the first line."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return "csv"
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    return "csv" if "," in first else "celeba"


def read_attributes(path: str | os.PathLike) -> tuple["pd.DataFrame", dict[str, str]]:
    """(table, kinds): the annotations of ``path`` in any supported format, and each column's kind (binary | continuous)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file not found: {path}")
    if attribute_format(path) == "celeba":
        df = read_celeba_attributes(path)
        return df, {str(c): BINARY for c in df.columns}
    return read_attribute_csv(path)


def read_attribute_csv(path: str | os.PathLike) -> tuple["pd.DataFrame", dict[str, str]]:
    """A CSV of a file-name column plus attribute columns: 0/1 or ±1 columns as binary 0/1, other numbers continuous."""
    import pandas as pd  # lazy: ~0.5 s, and `hdae train` imports this package

    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    if raw.shape[1] < 2:
        raise ValueError(f"{path}: expected a file-name column and at least one attribute column, "
                         f"got the columns {list(raw.columns)}")
    lower = {str(c).strip().lower(): c for c in raw.columns}
    key = next((lower[c] for c in FILENAME_COLUMNS if c in lower), raw.columns[0])
    files = raw[key].fillna("").str.strip()
    if (files == "").any():
        row = int(np.argmax((files == "").to_numpy())) + 2
        raise ValueError(f"{path}, line {row}: no file name in column {key!r}")
    dup = files[files.duplicated()]
    if len(dup):
        raise ValueError(f"{path}: {dup.iloc[0]!r} is annotated more than once")
    out, kinds = {}, {}
    for col in raw.columns:
        if col == key:
            continue
        name = str(col).strip()
        values = pd.to_numeric(raw[col].str.strip(), errors="coerce")
        bad = values.isna() & raw[col].notna() & (raw[col].str.strip() != "")
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise ValueError(f"{path}, line {i + 2}: {raw[col].iloc[i]!r} in column {name!r} is not a number")
        if values.isna().any():
            i = int(np.argmax(values.isna().to_numpy()))
            raise ValueError(f"{path}, line {i + 2}: no value in column {name!r} for {files.iloc[i]!r}")
        seen = set(np.unique(values.to_numpy()).tolist())
        if seen <= {0.0, 1.0} or seen <= {-1.0, 1.0}:
            out[name], kinds[name] = (values > 0).astype(np.int8), BINARY
        else:
            out[name], kinds[name] = values.astype(np.float32), CONTINUOUS
    df = pd.DataFrame(out)
    df.index = pd.Index(files.tolist(), name="image")
    return df, kinds
