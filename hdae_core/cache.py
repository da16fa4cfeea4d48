"""Caches keyed by what they were fitted on: one path for every "load it, or fit it and keep it" in the studies.

A cache entry is a folder holding what was fitted (directions, an oracle, a latent DDIM, ...) and
``identity.json``: the identity of its inputs (a hash of the model's weights, the data and its split,
the fitting parameters). ``fetch`` uses an entry only when that identity equals the one asked for;
otherwise it refits, rewrites the entry and says why. ``identity.json`` is written last, so an entry
whose writing was interrupted has none and is refitted.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

__all__ = ["IDENTITY_FILE", "model_identity", "tensor_identity", "data_identity", "fetch", "shipped_or_fetch", "lookup",
           "agrees", "read_identity"]

IDENTITY_FILE = "identity.json"
T = TypeVar("T")


def tensor_identity(tensors: dict[str, torch.Tensor], extra: Any = None) -> str:
    """sha256 (first 16 hex digits) over named tensors (names, dtypes, shapes, bytes) and a JSON-able ``extra``."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # bytes through uint8: numpy has no bfloat16
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_identity(model: torch.nn.Module) -> str:
    """The identity of a model: a hash of its config and every tensor of its state (weights and buffers)."""
    config = getattr(model, "config", None)
    extra = config.to_dict() if hasattr(config, "to_dict") else type(model).__name__
    return tensor_identity(dict(model.state_dict()), extra)


def data_identity(src, split: str, n: int | None = None) -> dict[str, Any]:
    """The identity of the first ``n`` images of a study data split (``hdae_core.data.open_data``).

    Shapes: the world's size and the split's seed. The user's images: the folder, the attribute file and a
    hash of the split's image names, so another split, file or folder differs."""
    part = src.split(split)
    ident: dict[str, Any] = {"source": str(src.source), "image_size": int(src.size), "split": split,
                             "n": None if n is None else int(n)}
    if getattr(src, "ground_truth", False):
        ident["seed"] = int(part.seed)
    else:
        names = list(getattr(part, "names", []))[: n if n is not None else None]
        ident["attribute_file"] = getattr(src, "attribute_file", None)
        ident["names"] = hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()[:16]
    return ident


def _plain(v: Any) -> Any:
    """JSON round trip, so a tuple and a list (or an int and an equal float) compare as they are stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def read_identity(folder: str | Path) -> dict[str, Any] | None:
    """The identity recorded in a cache folder, or None when there is none (or it is unreadable)."""
    f = Path(folder) / IDENTITY_FILE
    try:
        out = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _difference(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def fetch(folder: str | Path, identity: dict[str, Any], fit: Callable[[], T], save: Callable[[T, Path], Any],
          load: Callable[[Path], T], what: str, refit: bool = False) -> tuple[T, str]:
    """(value, where): the entry in ``folder`` when its identity equals ``identity``, else ``fit()`` saved there.

    ``where`` says which, and when refitting, why (no entry, which identity fields differ, unreadable, asked).
    A folder that holds files but no identity record is not a cache entry: it is left alone and the value
    is fitted without being cached there.
    """
    folder = Path(folder)
    wanted = _plain(identity)
    stored = read_identity(folder)
    if refit:
        why = "refit asked for"
    elif stored is None:
        why = f"no {what} cached in {folder}"
    else:
        diff = _difference(stored, wanted)
        if not diff:
            try:
                return load(folder), f"{what} loaded from {folder} (recorded identity matches: {', '.join(sorted(wanted))})"
            except Exception as e:  # noqa: BLE001 - a damaged entry is refitted, and the reason is reported
                why = f"the {what} cached in {folder} could not be read ({type(e).__name__}: {e})"
        else:
            why = (f"the {what} cached in {folder} were fitted on another "
                   + ", ".join(f"{k} ({_short(stored.get(k))} there, {_short(wanted.get(k))} here)" for k in diff))
    t0 = time.perf_counter()
    value = fit()
    seconds = time.perf_counter() - t0
    if folder.exists() and stored is None and any(folder.iterdir()):
        return value, (f"{what} fitted here in {seconds:.0f} s ({why}); not cached: {folder} holds files "
                       f"that are not a cache entry")
    if folder.exists():
        (folder / IDENTITY_FILE).unlink(missing_ok=True)  # first: a crash below leaves an entry that is refitted
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save(value, folder)
    tmp = folder / (IDENTITY_FILE + ".tmp")
    tmp.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / IDENTITY_FILE)
    return value, f"{what} fitted here in {seconds:.0f} s ({why}); cached in {folder}"



def agrees(stored: Any, wanted: Any) -> bool:
    """``stored`` holds everything in ``wanted`` (dicts compared key by key, recursively; the rest by equality, as
    JSON stores them: a tuple is a list)."""
    wanted = _plain(wanted)
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(agrees(stored.get(k), v) for k, v in wanted.items())
    return stored == wanted


def lookup(folders, required: dict[str, Any], load: Callable[[Path], T], what: str) -> tuple[T | None, str]:
    """(value, where) from the first of ``folders`` whose recorded identity agrees with ``required`` on its keys,
    nested dicts included (other fields may differ: how many images, which seed), or (None, why) when none does."""
    wanted = _plain(required)
    seen = 0
    for folder in map(Path, folders):
        stored = read_identity(folder)
        if stored is None:
            continue
        seen += 1
        if agrees(stored, wanted):
            try:
                return load(folder), f"{what} loaded from {folder} (fitted on this model)"
            except Exception as e:  # noqa: BLE001 - a damaged entry is passed over, and the reason is reported
                return None, f"the {what} in {folder} could not be read ({type(e).__name__}: {e})"
    return None, f"none of {seen} cached {what} entries was fitted on this model" if seen else f"no cached {what}"


def shipped_or_fetch(shipped: str | Path | None, folder: str | Path, identity: dict[str, Any], fit: Callable[[], T],
                     save: Callable[[T, Path], Any], load: Callable[[Path], T], what: str,
                     refit: bool = False) -> tuple[T, str]:
    """(value, where): the entry shipped in ``shipped`` (read only, beside a model or in data/pretrained) when its
    recorded identity holds ``identity``, else ``fetch(folder, ...)``; ``refit`` skips the shipped one too."""
    if shipped is not None and not refit:
        got, why = lookup([Path(shipped)], identity, load, what)
        if got is not None:
            return got, why.replace("loaded from", "shipped in")
    return fetch(folder, identity, fit, save, load, what, refit=refit)
