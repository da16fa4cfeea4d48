"""Attribute files in any of three formats, read into one table: index = image file name, one column per attribute.

* CelebA's ``list_attr_celeba.txt`` and CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``: line 1 the image
  count, line 2 the names, then ``file v1 … vK`` with -1/1 values (``read_celeba_attributes``).
* A CSV (``.csv``, or any file whose first line has commas): a header with a file-name column (``filename``,
  ``file``, ``image``, ``image_id``, ``name`` or ``path``; else the first column), then one column per
  attribute. A column holding only 0/1 or only -1/1 is *binary* (read as 0/1); any other numbers make it
  *continuous* (a head-pose angle, an age in years), kept as float.
"""
from __future__ import annotations

import csv
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
    header, lines, rows = _read_csv(path)
    k = len(header)
    columns = [_stripped(c) for c in zip(*rows)] if rows else [[] for _ in range(k)]
    # a trailing comma on every line makes a last column with neither name nor values: not an attribute
    cols = [j for j in range(k) if header[j] or any(columns[j])]
    for j in cols:
        if not header[j]:
            raise ValueError(f"{path}, line 1: column {j + 1} holds values but has no name")
    if len(cols) < 2:
        sep = next((f" (separated by {c!r}? use commas)" for c in ";\t|" if c in header[cols[0]]), "") if cols else ""
        raise ValueError(f"{path}: expected a file-name column and at least one attribute column, "
                         f"got the columns {[header[j] for j in cols]}{sep}")
    if not rows:
        raise ValueError(f"{path}: a header but no rows")
    lower = {header[j].lower(): j for j in cols}
    key = next((lower[c] for c in FILENAME_COLUMNS if c in lower), cols[0])
    files = columns[key]
    first_line: dict[str, int] = {}
    for f, n in zip(files, lines):
        if not f:
            raise ValueError(f"{path}, line {n}: no file name in column {header[key]!r}")
        if f in first_line:
            raise ValueError(f"{path}, line {n}: {f!r} is annotated again (first on line {first_line[f]})")
        first_line[f] = n
    out, kinds = {}, {}
    for j in cols:
        if j == key:
            continue
        name = header[j]
        cells = columns[j]
        tokens = set(cells)
        if tokens <= {"0", "1"} or tokens <= {"-1", "1"}:  # the common case, without parsing 200k numbers
            out[name], kinds[name] = (np.asarray(cells) == "1").astype(np.int8), BINARY
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            values = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
            # text, inf, nan and what float32 can't hold (1e39) would surface later as a NaN in a classifier
            bad = ~np.isfinite(values) | ~np.isfinite(values.astype(np.float32))
        if bad.any():
            i = int(np.argmax(bad))
            where = f"{path}, line {lines[i]} ({files[i]!r}), column {name!r}"
            if cells[i] == "":
                raise ValueError(f"{where}: no value; every image needs one in every attribute column")
            raise ValueError(f"{where}: {cells[i]!r} is not a finite number")
        seen = set(np.unique(values).tolist())
        if seen <= {0.0, 1.0} or seen <= {-1.0, 1.0}:
            out[name], kinds[name] = (values > 0).astype(np.int8), BINARY
        else:
            out[name], kinds[name] = values.astype(np.float32), CONTINUOUS
    df = pd.DataFrame(out, index=pd.Index(files, name="image"))
    return df, kinds


def _stripped(cells: tuple[str, ...]) -> list[str]:
    """A column's cells without surrounding spaces (checked once per distinct value: most columns hold a few)."""
    if all(c == c.strip() for c in set(cells)):
        return list(cells)
    return [c.strip() for c in cells]


def _read_csv(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """(column names, each row's line number, the rows' cells as written), blank lines left out; one-line errors."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [c.strip() for c in next(reader, [])]
            if not any(header):
                raise ValueError(f"{path}: empty; expected a header line of column names")
            _check_names(header, path)
            lines, rows = [], []
            for fields in reader:
                if not any(fields):  # skipinitialspace leaves a blank cell empty
                    continue
                if len(fields) > len(header) and not any(c.strip() for c in fields[len(header):]):
                    fields = fields[:len(header)]  # trailing commas
                if len(fields) != len(header):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(fields)} fields, "
                                     f"but the header names {len(header)} columns")
                lines.append(reader.line_num)
                rows.append(fields)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a readable CSV (not UTF-8 text: {e})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    return header, lines, rows


def _check_names(header: list[str], path: Path) -> None:
    """Refuse a column name written twice (pandas would rename the second 'smiling.1', a new attribute)."""
    seen: dict[str, str] = {}
    for n in header:
        if not n:
            continue
        if n.lower() in seen:
            if seen[n.lower()] == n:
                raise ValueError(f"{path}, line 1: the column name {n!r} appears twice; "
                                 "give every column its own name")
            raise ValueError(f"{path}, line 1: the column names {seen[n.lower()]!r} and {n!r} differ only in case; "
                             "give every column its own name")
        seen[n.lower()] = n
