"""Checkpoints as folders: ``config.json`` + ``model.safetensors`` (+ ``ema.safetensors``); nothing is unpickled."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import DiffusionConfig, ModelConfig
from .model import HDAE

FORMAT = "hdae-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


class DestinationError(ValueError):
    """A destination folder that holds something a command may not replace; the message names it and the flag."""


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` says it is an hdae checkpoint (whole or not)."""
    try:
        meta = json.loads((Path(path) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def is_empty_folder(path: str | Path, ignore: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` is a folder holding nothing but the names in ``ignore``."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and all(p.name in ignore for p in path.iterdir())


def check_destination(path: str | Path, replace: bool = False, flag: str = "--force") -> Path:
    """Refuse ``path`` unless it does not exist, is an empty folder, or is a checkpoint folder and ``replace``
    is set (``flag`` names the option that sets it in the refusal). Nothing is written."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return path
    if not path.is_dir():
        raise DestinationError(f"{path}: exists and is not a folder; choose a new or empty folder")
    if is_empty_folder(path):
        return path
    if not is_checkpoint(path):
        raise DestinationError(f"{path}: holds files that are not an hdae checkpoint; nothing was written, "
                               "choose a new or empty folder")
    if not replace:
        raise DestinationError(f"{path}: already holds a checkpoint; pass {flag} to replace it, "
                               "or choose a new or empty folder")
    return path


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: store independent contiguous copies
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _fsync(path: Path) -> None:
    # a rename is only as durable as what it renames: flush files and folders before and after
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def save(model: HDAE, path: str | Path, ema: HDAE | None = None, extra: dict[str, Any] | None = None,
         tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``path/`` atomically: a temporary sibling folder renamed into place, so a crash keeps the old one.

    ``config.json`` is written last and lists every file with its size, so a folder is complete exactly
    when its config is there and agrees with the files (``is_complete``). A kill at any point leaves a
    complete checkpoint at ``path`` or in a hidden sibling, which ``recover`` puts back.
    ``tensors`` maps further file names (e.g. ``optimizer.safetensors``) to flat tensor dicts.
    Only a checkpoint folder or an empty one is replaced; anything else at ``path`` is refused untouched.
    """
    path = Path(path)
    if path.exists() and not is_checkpoint(path):
        check_destination(path)  # raises unless an empty folder
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file(_state(model), str(tmp / MODEL_FILE), metadata={"format": FORMAT})
        if ema is not None:
            save_file(_state(ema), str(tmp / EMA_FILE), metadata={"format": FORMAT})
        for name, flat in (tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in flat.items()}, str(tmp / name))
        files = {f.name: f.stat().st_size for f in tmp.iterdir()}
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "diffusion": model.diffusion_config.to_dict(),
            "has_ema": ema is not None,
            "extra": extra or {},
            "files": files,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        old = None
        if path.exists() and not is_checkpoint(path):  # checked again just before the rename
            check_destination(path)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _safetensors_complete(file: Path) -> bool:
    """Whether a safetensors file holds all the bytes its header promises (a cut-off write does not)."""
    try:
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100 * 2**20:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return file.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a whole checkpoint folder: a valid config and every weights file written to its end."""
    path = Path(path)
    try:
        meta = read_config(path)
    except (OSError, ValueError):
        return False
    listed = meta.get("files")
    if listed is None:  # folders written before the config listed its files
        listed = {MODEL_FILE: None, **({EMA_FILE: None} if meta.get("has_ema") else {})}
    for name, size in listed.items():
        f = path / name
        if not f.is_file() or (size is not None and f.stat().st_size != size):
            return False
        if name.endswith(".safetensors") and not _safetensors_complete(f):
            return False
    return True


def _step(path: Path) -> int:
    try:
        return int(read_config(path).get("extra", {}).get("step", -1))
    except (OSError, ValueError, TypeError):
        return -1


def recover(path: str | Path, log=print) -> bool:
    """After a crash: put the newest complete checkpoint among ``path`` and its hidden siblings
    (``.NAME.old-*`` moved aside by a save, ``.NAME.tmp-*`` not yet renamed) at ``path``, and delete
    the rest. Returns whether ``path`` now holds a complete checkpoint."""
    path = Path(path)
    siblings = sorted(p for p in path.parent.glob(f".{path.name}.*-*")
                      if p.is_dir() and p.name.startswith((f".{path.name}.old-", f".{path.name}.tmp-")))
    candidates = ([path] if path.is_dir() else []) + siblings
    complete = [c for c in candidates if is_complete(c)]
    best = max(complete, key=lambda c: (_step(c), c == path), default=None)
    if best is not None and best != path:
        if path.exists():
            check_destination(path, replace=True)  # a folder that is not a checkpoint is never moved aside
            aside = path.with_name(f".{path.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(path, aside)
            siblings.append(aside)
        os.replace(best, path)
        _fsync(path.parent)
        log(f"recovered the checkpoint of step {_step(path)} from {best.name} (a save was interrupted)")
    removed = [p for p in siblings if p.exists() and p != best]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        log(f"removed {len(removed)} incomplete or superseded checkpoint folder(s) beside {path}")
    return best is not None


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder, validated."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint folder not found")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint folder holding {CONFIG_FILE} and {MODEL_FILE}, got a file")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; a checkpoint folder needs {CONFIG_FILE} and {MODEL_FILE}")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{cfg_path}: not an hdae checkpoint config (format={fmt!r}, expected {FORMAT!r}); "
                              f"pass a folder written by `hdae train` (its checkpoint/), `hdae export` or "
                              f"`hdae import-diffae` (a DiffAE checkpoint is converted with `hdae import-diffae`)")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{cfg_path}: field 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {version} is newer than this hdae reads "
                              f"({FORMAT_VERSION}); update hdae to load it")
    for key, kind in (("model", dict), ("diffusion", dict), ("extra", dict), ("has_ema", bool)):
        if key in meta and not isinstance(meta[key], kind):
            raise CheckpointError(f"{cfg_path}: field '{key}' must be a {'JSON object' if kind is dict else 'boolean'}, "
                                  f"got {meta[key]!r}")
    return meta


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: missing weights file")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: unreadable weights ({e}); the file may be truncated or corrupt") from e


def state_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name=str,
                   show: int = 3) -> list[str]:
    """How ``state`` differs from a model's own state dict: missing, unexpected and reshaped entries (empty: none).

    ``name`` spells a key for the message (e.g. in the file's own naming); ``show`` examples per kind."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{name(k)}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {', '.join(name(k) for k in missing[:show])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {', '.join(name(k) for k in unexpected[:show])}")
    if shapes:
        parts.append(f"{len(shapes)} of other shapes: {'; '.join(shapes[:show])}")
    return parts


def validate_state(model: torch.nn.Module, state: dict[str, torch.Tensor], file: Path | str) -> None:
    """Raise a CheckpointError naming the file unless ``state`` matches the model's names and shapes."""
    parts = state_mismatch(model.state_dict(), state)
    if parts:
        raise CheckpointError(
            f"{file}: weights do not match the config ({'; '.join(parts)}); "
            "was it written for another preset or variant?"
        )


def configs(path: str | Path, meta: dict[str, Any] | None = None) -> tuple[ModelConfig, DiffusionConfig]:
    """The model and diffusion configs of a checkpoint folder; a CheckpointError names the file and the field."""
    path = Path(path)
    meta = read_config(path) if meta is None else meta
    if "diffusion" not in meta:
        raise CheckpointError(f"{path / CONFIG_FILE}: required field 'diffusion' (the noise schedule) missing")
    try:
        return ModelConfig.from_dict(meta["model"]), DiffusionConfig.from_dict(meta["diffusion"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid config ({e})") from None


def load(path: str | Path, ema: bool = True, map_location: str | torch.device = "cpu") -> HDAE:
    """Rebuild the model from ``path/`` with EMA weights when present (``ema=False``: the raw weights)."""
    path = Path(path)
    meta = read_config(path)
    config, dcfg = configs(path, meta)
    model = HDAE(config, dcfg)
    file = path / (EMA_FILE if ema and meta.get("has_ema") else MODEL_FILE)
    state = _read_weights(file)
    validate_state(model, state, file)
    model.load_state_dict(state)
    return model.to(map_location).eval()


def read_tensors(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """A further tensor file of a checkpoint folder (e.g. the optimizer state)."""
    return _read_weights(Path(path) / name)


def save_module(module: torch.nn.Module, path: str | Path, config_file: str, weights_file: str,
                meta: dict[str, Any]) -> Path:
    """Write a small auxiliary network as ``path/config_file`` (JSON meta) + ``path/weights_file``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / config_file).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    save_file(_state(module), str(path / weights_file), metadata={"format": str(meta.get("format", ""))})
    return path


def read_module_meta(path: str | Path, config_file: str, fmt: str, kind: str) -> dict[str, Any]:
    """The JSON meta of an auxiliary network's folder, checked to be of format ``fmt``."""
    cfg_file = Path(path) / config_file
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: missing; expected a folder written by {kind}.save")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{cfg_file}: not a {kind} config (format={meta.get('format')!r})")
    return meta


def load_module_weights(module: torch.nn.Module, path: str | Path, weights_file: str,
                        map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load validated weights into a freshly built auxiliary network; eval mode, frozen."""
    file = Path(path) / weights_file
    state = _read_weights(file)
    validate_state(module, state, file)
    module.load_state_dict(state)
    return module.to(map_location).eval().requires_grad_(False)
