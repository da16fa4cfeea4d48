"""Load torch checkpoints from outside without running their code.

Two locks, both by exact name. First a static scan of every pickle in the file refuses any global
outside the allow list before anything is unpickled. Then ``torch.load(weights_only=True)`` reads the
file with torch's own restricted unpickler, which admits the same exact names (the Lightning and
DiffAE classes as inert stand-ins registered with ``torch.serialization.safe_globals``) and only
``'storage'`` persistent ids, so a legacy ``('module', …)`` record never reaches torch's
source-patch writer. Attribute dicts come back as plain dicts, framework objects as plain records.
"""
from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
import pickletools
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["UnsafeCheckpointError", "safe_load", "scan_globals", "ALLOWED_GLOBALS", "STAND_INS"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that asks for code outside the allow list; nothing of it was imported or run."""


_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
             "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4")
_DTYPES = sorted(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype))

# the data constructors torch itself writes; torch's weights_only unpickler resolves these names to
# the same objects (it admits a few more, such as legacy tensor classes, which the scan refuses)
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    [f"torch._utils.{f}" for f in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass", "_rebuild_qtensor", "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_nested_tensor")]
    + ["torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.serialization._get_layout",
       "torch.Size", "torch.Tensor", "torch.device", "collections.OrderedDict", "_codecs.encode",
       "builtins.set", "builtins.bytearray", "builtins.complex",
       "torch.UntypedStorage", "torch.storage.UntypedStorage", "torch.storage.TypedStorage"]
    + [f"torch.{s}Storage" for s in _STORAGES]
    + [f"torch.{d}" for d in _DTYPES]
    + [f"torch.{q}" for q in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                              "per_channel_symmetric", "per_channel_affine_float_qparams")]
)


class _Record:
    """An object of a framework class kept as data: none of the real class's code ever runs."""

    _global = "?"
    _args: tuple = ()  # NEWOBJ builds instances without calling __init__
    _state: Any = None

    def __init__(self, *args, **kwargs):  # REDUCE: the class called with its pickled arguments
        self._args, self._state = args, kwargs or None

    def __setstate__(self, state):  # BUILD
        self._state = state

    def __hash__(self):
        return id(self)


class _Namespace(_Record):
    """argparse-style namespaces: their fields arrive as ``__dict__`` state; replaced by a plain dict."""


def _plain_dict_class(qualname: str) -> type:
    # a dict subclass pickles as NEWOBJ + SETITEMS; __new__ returning a plain dict lets torch's
    # unpickler fill it (it sets items on exact dicts only) and leaves nothing to convert afterwards
    return type(qualname.rsplit(".", 1)[-1], (), {"__new__": staticmethod(lambda cls, *a, **k: {})})


def _record_class(qualname: str, base: type = _Record) -> type:
    return type(qualname.rsplit(".", 1)[-1], (base,), {"_global": qualname})


_DICT_CLASSES = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
)
_NAMESPACE_CLASSES = ("argparse.Namespace",)
# what Lightning keeps of DiffAE's callbacks and loops, and DiffAE's own enums (its choices.py)
_RECORD_CLASSES = tuple(
    f"{pkg}.{mod}" for pkg in ("pytorch_lightning", "lightning.pytorch") for mod in (
        "callbacks.model_checkpoint.ModelCheckpoint", "callbacks.lr_monitor.LearningRateMonitor",
        "callbacks.early_stopping.EarlyStopping", "callbacks.progress.ProgressBar",
        "callbacks.progress.tqdm_progress.TQDMProgressBar",
    )
) + tuple(f"choices.{c}" for c in (
    "TrainMode", "ManipulateMode", "ModelType", "ModelName", "ModelMeanType", "ModelVarType", "LossType",
    "GenerativeType", "OptimizerType", "Activation", "ManipulateLossType",
))

STAND_INS: dict[str, type] = {
    **{n: _plain_dict_class(n) for n in _DICT_CLASSES},
    **{n: _record_class(n, _Namespace) for n in _NAMESPACE_CLASSES},
    **{n: _record_class(n) for n in _RECORD_CLASSES},
}


def _numpy_globals() -> dict[str, Any]:
    """numpy arrays in latent statistics: the array rebuild, ndarray and dtype, by exact name."""
    reconstruct = getattr(np, "_core", np.core).multiarray._reconstruct
    out = {"numpy.core.multiarray._reconstruct": reconstruct, "numpy._core.multiarray._reconstruct": reconstruct,
           "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    # numpy 2 builds each dtype as an instance of its own class (numpy.dtypes.Float32DType, ...); numbers only
    for code in "?bBhHiIlLqQefdgFDG":
        cls = type(np.dtype(code))
        if cls is not np.dtype:
            out[f"numpy.dtypes.{cls.__name__}"] = cls
    return out


_NAME_OPS = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _python3_name(module: str, name: str) -> str:
    # protocol-2 pickles spell Python 3 names the Python 2 way (__builtin__.set); mapped as torch maps them
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _scan_pickle(data, found: list[str], source: str) -> None:
    """Append each global one pickle names to ``found``; refuse globals spelt any way but GLOBAL."""
    strings: list[str] = []  # string pushes, to name what a STACK_GLOBAL would import
    memo: dict[Any, str] = {}
    n_memo, last = 0, None
    for op, arg, _ in pickletools.genops(data):
        pushed = None
        if op.name == "GLOBAL":
            found.append(_python3_name(*arg.split(" ", 1)))
        elif op.name in _STRING_OPS:
            pushed = arg if isinstance(arg, str) else repr(arg)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            key = n_memo if op.name == "MEMOIZE" else arg
            n_memo += op.name == "MEMOIZE"
            if last is not None:
                memo[key] = last
            pushed = last
        elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
            pushed = memo[arg]
        elif op.name in _NAME_OPS:
            if op.name == "INST":
                name = _python3_name(*arg.split(" ", 1))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = ".".join(strings[-2:])
            else:
                name = f"<{op.name}>"
            raise UnsafeCheckpointError(
                f"{source}: refused global '{name}': the pickle names it with {op.name}, which this loader "
                "never resolves (torch writes protocol-2 GLOBALs), so it was not loaded")
        if pushed is not None and op.name not in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            strings.append(pushed)
        last = pushed


def scan_globals(path: str | os.PathLike) -> list[str]:
    """Every global named by the pickles of a torch file (zip or legacy), read without unpickling anything."""
    path = Path(path)
    found: list[str] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.endswith(("constants.pkl", "/code/")) or "/code/" in n for n in names):
                raise UnsafeCheckpointError(f"{path}: refused global '<TorchScript archive>': a TorchScript "
                                            "program, not a checkpoint of tensors")
            for n in names:
                if n.endswith(".pkl"):
                    _scan_pickle(z.read(n), found, str(path))
        return found
    with open(path, "rb") as f:
        # the legacy format: magic number, protocol, system info, the object, the storage keys
        for _ in range(5):
            _scan_pickle(f, found, str(path))
    return found


def _check(path: Path) -> None:
    if tarfile.is_tarfile(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: a torch < 0.4 tar checkpoint (or another tar archive); this loader reads "
                         "zip and legacy-pickle checkpoints only")
    allowed = ALLOWED_GLOBALS | set(STAND_INS) | set(_numpy_globals())
    try:
        names = scan_globals(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # a stray text file, a truncated pickle, a zip with a broken member
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    for name in names:
        if name not in allowed:
            raise UnsafeCheckpointError(
                f"{path}: refused global '{name}'; the pickle asks for code outside the allow list "
                "(tensors, storages, dtypes, plain containers and inert stand-ins for Lightning's "
                "attribute dicts and callbacks), so nothing of it was loaded")


def _plain(obj: Any) -> Any:
    """Replace the stand-ins by plain dicts (recursively through containers)."""
    if isinstance(obj, _Namespace):
        state = obj._state
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        return {_plain_key(k): _plain(v) for k, v in (state or {}).items()} if isinstance(state, dict) else {}
    if isinstance(obj, _Record):
        out: dict[str, Any] = {"__class__": obj._global}
        if obj._args:
            out["args"] = _plain(list(obj._args))
        if obj._state is not None:
            out["state"] = _plain(obj._state)
        return out
    if type(obj) is dict:
        return {_plain_key(k): _plain(v) for k, v in obj.items()}
    if type(obj) is collections.OrderedDict:
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # a state dict: keep it as it is
        return type(obj)((_plain_key(k), _plain(v)) for k, v in obj.items())
    if type(obj) is list:
        return [_plain(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_plain(v) for v in obj)
    return obj


def _plain_key(k: Any) -> Any:
    # Lightning < 1.5 keys callback states by the callback's class
    if isinstance(k, type) and issubclass(k, _Record):
        return k._global
    return k


_TORCH_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")
_TORCH_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\n|$)", re.S)
# what torch's weights-only unpickler says when it refuses rather than fails to read
_TORCH_REFUSALS = ("Unsupported global", "Trying to load unsupported GLOBAL", "Only persistent_load of storage",
                   "persistent_load id must be", "Can only", "Trying to call reduce", "Unsupported operand")


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` a checkpoint from an untrusted source; attribute dicts come back as plain dicts.

    Raises ``UnsafeCheckpointError`` naming the refused global when the file would import or call
    anything outside the allow list (checked before unpickling, and again by torch's weights-only
    unpickler), ``ValueError`` when it is not a readable torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    _check(path)
    safe = [(cls, name) for name, cls in STAND_INS.items()] + [(obj, n) for n, obj in _numpy_globals().items()]
    try:
        with torch.serialization.safe_globals(safe):
            # memory-map zip checkpoints: optimizer states of big releases then cost no RAM until touched
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        text = str(e)
        detail = _TORCH_DETAIL.search(text)
        detail = detail.group(1) if detail else (text.splitlines() or [""])[0]
        m = _TORCH_GLOBAL.search(text)
        if m:
            raise UnsafeCheckpointError(f"{path}: refused global '{m.group(1)}'; nothing of it was loaded") from None
        if isinstance(e, pickle.UnpicklingError) and detail.startswith(_TORCH_REFUSALS):
            raise UnsafeCheckpointError(f"{path}: refused: {detail}; nothing of it was loaded") from None
        # a truncated zip, a storage record that names no storage type, a wrong-sized storage
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {detail})") from None
    return _plain(obj)
