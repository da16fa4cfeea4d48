"""The notebooks are the source and are stored without outputs: JupyterLab's save hook and the same for files.

``make lab`` starts JupyterLab with ``pre_save_hook`` below, so a notebook saved there keeps its cells, ids and
tags and drops what a run adds (outputs, execution counts, per-cell run metadata). A notebook saved elsewhere:
``python -m hdae_core.notebooks notebooks/*.ipynb`` (``--check`` only reports).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import nbformat

KEPT_CELL_METADATA = ("tags",)  # papermill finds the parameters cell by its tag


def clean(nb: dict[str, Any]) -> dict[str, Any]:
    """Strip outputs, execution counts and run metadata in place (cell ids and tags stay); returns ``nb``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        meta = cell.get("metadata", {})
        cell["metadata"] = {k: meta[k] for k in KEPT_CELL_METADATA if k in meta}
    meta = nb.setdefault("metadata", {})
    # the interpreter's version and editor modes differ per machine: keep only the language
    meta["language_info"] = {"name": meta.get("language_info", {}).get("name", "python")}
    for k in [k for k in meta if k not in ("kernelspec", "language_info")]:
        del meta[k]
    return nb


def pre_save_hook(model: dict[str, Any], **kwargs: Any) -> None:
    """jupyter_server's ``FileContentsManager.pre_save_hook``: notebooks are written clean."""
    if model.get("type") == "notebook" and isinstance(model.get("content"), dict):
        clean(model["content"])


def clean_file(path: str | Path, check: bool = False) -> bool:
    """Whether ``path`` was not clean; rewritten clean unless ``check``."""
    path = Path(path)
    before = path.read_text()
    nb = clean(nbformat.reads(before, as_version=4))
    after = nbformat.writes(nb) + "\n"
    if after == before:
        return False
    if not check:
        path.write_text(after)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hdae_core.notebooks", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 when a notebook is not clean; change nothing")
    args = ap.parse_args(argv)
    dirty = [p for p in args.paths if clean_file(p, check=args.check)]
    for p in dirty:
        print(f"{p}: {'not clean' if args.check else 'cleaned'}")
    return 1 if dirty and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
