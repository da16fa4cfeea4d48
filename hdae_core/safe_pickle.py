"""Load torch checkpoints from outside without running their code: an allow-listed unpickler.

``torch.load(weights_only=True)`` refuses PyTorch-Lightning's ``AttributeDict`` (the type of
every DiffAE checkpoint's ``hyper_parameters``), and ``weights_only=False`` runs whatever the
pickle names. ``safe_load`` passes ``torch.load`` a ``pickle_module`` whose ``find_class``
admits tensors, storages, dtypes and plain containers, turns attribute-dict / namespace
classes into plain dicts and Lightning's own classes into inert records, and refuses every
other global, so nothing outside the allow list is imported or called.
"""
from __future__ import annotations

import _compat_pickle
import collections
import importlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpointError", "safe_load", "SafeUnpickler"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint whose pickle names a global outside the allow list; nothing of it was run."""


# module -> names that are data constructors with no side effects
_ALLOWED: dict[str, frozenset[str]] = {
    "builtins": frozenset({"set", "frozenset", "list", "dict", "tuple", "int", "float", "complex",
                           "bool", "str", "bytes", "bytearray", "slice", "range"}),
    "collections": frozenset({"OrderedDict"}),
    "_codecs": frozenset({"encode"}),  # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
    "torch": frozenset({"Size", "Tensor", "device", "dtype", "finfo", "iinfo", "layout", "memory_format"}),
    "torch._utils": frozenset({
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass", "_rebuild_qtensor", "_rebuild_device_tensor_from_numpy",
        "_rebuild_nested_tensor",
    }),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch.nn.parameter": frozenset({"Parameter"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
}

# classes that only hold attributes or items: rebuilt as plain dicts, their module never imported
_DICT_LIKE_SUFFIXES = ("AttributeDict", "AttrDict", "EasyDict", "Namespace")
# frameworks whose own objects (callback states, loop states, DiffAE's enums) are kept as inert records
_INERT_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "choices.")


class _PlainDict(dict):
    """Stand-in for an attribute-dict or namespace; replaced by a plain ``dict`` after loading."""

    def __init__(self, *args, **kwargs):  # noqa: D107 - mirrors dict(...)
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (dict, list, tuple)):
            self.update(args[0])
        self.update(kwargs)

    def __setstate__(self, state):
        # namespaces carry their fields as __dict__ state (sometimes as (dict, slots))
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.update(state)


class _Inert(dict):
    """An object of a framework class, kept as data: no method of the real class ever runs."""

    _global = "?"
    _args: tuple = ()  # NEWOBJ builds instances without calling __init__
    _state: Any = None

    def __init__(self, *args, **kwargs):  # noqa: D107
        super().__init__()
        self._args, self._state = args, kwargs or None

    def __setstate__(self, state):
        self._state = state


_inert_classes: dict[str, type] = {}


def _inert_class(qualname: str) -> type:
    if qualname not in _inert_classes:
        _inert_classes[qualname] = type(qualname.rsplit(".", 1)[-1], (_Inert,), {"_global": qualname})
    return _inert_classes[qualname]


def _is_dtype_name(module: str, name: str) -> bool:
    return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)


def _resolve(module: str, name: str) -> Any:
    """The allowed global ``module.name``, imported only after the name passed the allow list."""
    if "Storage" in name and module in ("torch", "torch.storage"):
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type):
            return obj
    if _is_dtype_name(module, name) or name in _ALLOWED.get(module, ()):
        if module.startswith("numpy"):
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                pass
        else:
            return getattr(importlib.import_module(module), name)
    if name.endswith(_DICT_LIKE_SUFFIXES):
        return _PlainDict
    if f"{module}.".startswith(_INERT_PREFIXES):
        return _inert_class(f"{module}.{name}")
    raise UnsafeCheckpointError(f"refused global '{module}.{name}'")


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the allow list only."""

    source = "checkpoint"

    def find_class(self, module: str, name: str) -> Any:
        # protocol < 3 pickles spell Python 3 names the Python 2 way (__builtin__.set, copy_reg, ...)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _resolve(module, name)
        except UnsafeCheckpointError as e:
            raise UnsafeCheckpointError(
                f"{self.source}: {e}; the pickle asks for code outside the allow list "
                "(tensors, storages, dtypes and plain containers), so it was not loaded"
            ) from None


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    def __init__(self, source: str):
        self.Unpickler = type("SafeUnpickler", (SafeUnpickler,), {"source": source})
        self.__name__ = "hdae_core.safe_pickle"

    def load(self, file, **kwargs):
        return self.Unpickler(file, **kwargs).load()

    def loads(self, data, **kwargs):
        import io

        return self.Unpickler(io.BytesIO(data), **kwargs).load()


def _plain(obj: Any) -> Any:
    """Replace the stand-ins by plain dicts (recursively through containers)."""
    if isinstance(obj, _Inert):
        out: dict[str, Any] = {"__class__": obj._global}
        if obj._args:
            out["args"] = _plain(list(obj._args))
        if obj._state is not None:
            out["state"] = _plain(obj._state)
        if len(obj):
            out["items"] = {_plain_key(k): _plain(v) for k, v in obj.items()}
        return out
    if isinstance(obj, _PlainDict) or type(obj) is dict:
        return {_plain_key(k): _plain(v) for k, v in obj.items()}
    if type(obj) is collections.OrderedDict:
        # state dicts: keep the type, only walk values that may hold stand-ins
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        return collections.OrderedDict((_plain_key(k), _plain(v)) for k, v in obj.items())
    if type(obj) is list:
        return [_plain(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_plain(v) for v in obj)
    return obj


def _plain_key(k: Any) -> Any:
    # Lightning < 1.5 keys callback states by the callback's class
    if isinstance(k, type) and issubclass(k, _Inert):
        return k._global
    return k


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` a checkpoint from an untrusted source; attribute dicts come back as plain dicts.

    Raises ``UnsafeCheckpointError`` naming the refused global when the pickle would import or
    call anything outside the allow list; nothing of the refused global is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise RuntimeError(
            f"{path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which forbids the allow-listed unpickler "
            "this loader uses; unset it (the loader runs no code from the file either way)"
        )
    try:
        # memory-map zip checkpoints: optimizer states of big releases then cost no RAM until touched
        obj = torch.load(path, map_location=map_location, pickle_module=_PickleModule(str(path)),
                         weights_only=False, mmap=zipfile.is_zipfile(path))
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # a truncated zip, a stray text file, a pickle that builds nonsense
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    return _plain(obj)
