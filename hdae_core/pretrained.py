"""The shipped demo models (``data/pretrained``) and the tiny stand-ins the smoke profile trains in their place."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import cache, checkpoint, oracle
from .config import VARIANT_LABELS, ModelConfig
from .data.shapes import ATTRIBUTE_NAMES
from .config import TrainConfig
from .train import train

REPO_DIR = Path(__file__).resolve().parent.parent
PRETRAINED_DIR = REPO_DIR / "data" / "pretrained"

# demo model key → folder name under data/pretrained (32 px, trained on Shapes(size=32, seed=0))
DEMO_MODELS = {"hdae_u": "shapes32_hdae_u", "dae": "shapes32_dae"}
# the attribute oracle the editing notebook scores edits with, when one is shipped
DEMO_ORACLE = "shapes32_oracle"

SMOKE_PRESET = "tiny"
SMOKE_STEPS = 20
SMOKE_BATCH = 16


class PretrainedMissingWarning(UserWarning):
    """A shipped demo model is missing and a stand-in is used instead."""


def repo_path(path: str | Path) -> Path:
    """The one path rule of the package: ``path`` as given when absolute or when it exists from the working
    directory (made absolute), else relative to the repository root.

    Papermill runs the notebooks from the repository root and voila from notebooks/, so the package's own
    relative paths (``reports/…``, ``data/pretrained/…``) mean the same folder in both; the command line
    makes every user path absolute before a notebook sees it."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return p.resolve() if p.exists() else REPO_DIR / p


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def available(pretrained_dir: str | Path | None = None) -> list[str]:
    """Names of the checkpoint folders under ``data/pretrained`` (those holding a ``config.json``)."""
    root = Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_checkpoint(p))


def train_command(name: str) -> str:
    """The commands that make ``data/pretrained/<name>`` (a shipped folder's README.md records the exact ones)."""
    variant = name.split("_", 1)[1] if name.startswith("shapes32_") else "hdae_u"
    train = f"hdae train --preset shapes32 --variant {variant} --out runs/{name}"
    return f"{train} && hdae export runs/{name} data/pretrained/{name} --command '{train}'"


def resolve(name_or_path: str | Path, pretrained_dir: str | Path | None = None) -> Path:
    """A checkpoint folder: a path to one (or to a run folder holding ``checkpoint/``), or a name under data/pretrained."""
    root = Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR
    s = str(name_or_path)
    candidates = [Path(s).expanduser()]
    if not Path(s).is_absolute():
        candidates += [REPO_DIR / s, root / s]
    for c in candidates:  # absolute, so a path means the same folder whatever the working directory of its reader
        if c.is_dir() and _is_checkpoint(c):
            return c.resolve()
        if c.is_dir() and _is_checkpoint(c / "checkpoint"):
            return (c / "checkpoint").resolve()
    first = candidates[0] if candidates[0].exists() else next((c for c in candidates if c.exists()), None)
    if first is not None and first.is_file():
        raise ValueError(f"checkpoint {s!r} is a file, not an hdae checkpoint folder (config.json + "
                         f"model.safetensors); a DiffAE checkpoint is converted with `hdae import-diffae {s} "
                         f"--out FOLDER` (add --latent and --classifier for its statistics and directions)")
    if first is not None and first.is_dir():
        raise ValueError(f"checkpoint {s!r} is not an hdae checkpoint: no config.json in it or in its checkpoint/ "
                         f"folder (`hdae train --out RUN` writes RUN/checkpoint; `hdae import-diffae` converts DiffAE's)")
    have = available(root)
    name = Path(s).name
    raise FileNotFoundError(
        f"no checkpoint {s!r}: not a checkpoint folder (config.json + model.safetensors) and not a model "
        f"under {root}. Available there: {', '.join(have) if have else 'none'}. "
        f"Make it with: {train_command(name)}"
    )


def _train_smoke(key: str, workdir: Path, steps: int, progress: bool) -> Path:
    """Train (or reuse) the tiny stand-in for demo model ``key`` under ``workdir/smoke_models/key``."""
    model = ModelConfig.preset(SMOKE_PRESET, key)
    run = workdir / "smoke_models" / key
    ck = run / "checkpoint"
    if _is_checkpoint(ck):
        try:
            meta = checkpoint.read_config(ck)
            if meta["model"] == model.to_dict() and meta["extra"].get("step", 0) >= steps:
                return ck
        except (ValueError, KeyError, OSError):
            pass  # unreadable or another config: train afresh
    cfg = TrainConfig(model=model, out=str(run), steps=steps, batch_size=SMOKE_BATCH, lr=3e-4,
                      eval_every=steps, eval_size=8, eval_steps=5, ckpt_every=steps,
                      log_every=max(1, steps // 4), progress=progress, tensorboard=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: more threads only contend with whatever else runs
    try:
        return train(cfg, overwrite=True)  # a stale stand-in in the pipeline's own work folder is replaced
    finally:
        torch.set_num_threads(threads)


def demo_models(profile: str = "full", workdir: str | Path = "reports/_tmp", progress: bool = False,
                pretrained_dir: str | Path | None = None, smoke_steps: int = SMOKE_STEPS,
                warn: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Checkpoint folders {'dae', 'hdae_u'}: the shipped 32 px models ('full') or tiny ones trained here ('smoke').

    In 'full', a missing shipped model makes both fall back to the smoke models (one resolution for
    every comparison), with a ``PretrainedMissingWarning`` (and ``warn(message)`` when given).
    """
    if profile not in ("smoke", "full"):
        raise ValueError(f"profile: expected 'smoke' or 'full', got {profile!r}")
    workdir = repo_path(workdir)
    if profile == "full":
        found, missing = {}, []
        for key, name in DEMO_MODELS.items():
            try:
                found[key] = resolve(name, pretrained_dir)
            except FileNotFoundError:
                missing.append(name)
        if not missing:
            return found
        root = Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR
        msg = (f"shipped demo model(s) {', '.join(missing)} missing under {root}: every notebook uses tiny "
               f"{SMOKE_PRESET} stand-ins trained for {smoke_steps} steps instead, so the figures show a "
               f"barely trained model. Make the real ones with: "
               + "; ".join(train_command(n) for n in missing))
        warnings.warn(msg, PretrainedMissingWarning, stacklevel=2)
        if warn is not None:
            warn(msg)
    return {key: _train_smoke(key, workdir, smoke_steps, progress) for key in DEMO_MODELS}


def find_oracle(size: int, pretrained_dir: str | Path | None = None) -> Path | None:
    """The shipped attribute oracle for ``size`` px images, when there is one."""
    root = Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR
    p = root / (DEMO_ORACLE if size == 32 else f"shapes{size}_oracle")
    return p if (p / "oracle_config.json").is_file() else None


def training_log(name_or_path: str | Path, pretrained_dir: str | Path | None = None) -> Path | None:
    """The ``metrics.csv`` written beside a checkpoint (in its folder or the run folder above), if any."""
    try:
        ck = resolve(name_or_path, pretrained_dir)
    except FileNotFoundError:
        return None
    found = [p / "metrics.csv" for p in (ck, ck.parent) if (p / "metrics.csv").is_file()]
    return found[0] if found else None


def _oracle_identity(kind: str, size: int, steps: int, seed: int) -> dict:
    # the world's attribute list is part of it: an oracle of another version of the world reads other attributes
    return {"kind": kind, "image_size": int(size), "steps": int(steps), "seed": int(seed),
            "attributes": list(ATTRIBUTE_NAMES)}


def load_oracle(size: int, cache_dir: str | Path, train_steps: int | None = None, seed: int = 0,
                pretrained_dir: str | Path | None = None, refit: bool = False):
    """(oracle, where): the shipped oracle for ``size`` px, else the one cached in ``cache_dir/size<px>`` when it was
    trained for ``train_steps`` steps with ``seed`` on this world, else one trained and cached there; (None, why)
    when there is none shipped and ``train_steps`` is None."""
    shipped = find_oracle(size, pretrained_dir)
    if shipped is not None and not refit:
        # one recorded with what it was trained on is used only for the same training (any, when none is asked)
        wanted = _oracle_identity("oracle", size, train_steps or 0, seed)
        if train_steps is None:
            wanted.pop("steps")
        recorded = cache.read_identity(shipped)
        if recorded is None or cache.agrees(recorded, wanted):
            return oracle.load(shipped), f"shipped {shipped}"
    folder = repo_path(cache_dir) / f"size{size}"
    if train_steps is None:  # any oracle of this world and size cached there, however long it was trained
        wanted = {k: v for k, v in _oracle_identity("oracle", size, 0, seed).items() if k != "steps"}
        orc, why = cache.lookup([folder], wanted, oracle.load, "attribute oracle")
        return (orc, why) if orc is not None else (
            None, f"no attribute oracle for {size} px shipped or cached in {folder}, and no training steps given")

    def fit():
        return oracle.train_oracle(size=size, steps=train_steps, seed=seed, progress=False)

    (orc, _), where = cache.fetch(folder, _oracle_identity("oracle", size, train_steps, seed),
                                  fit, lambda v, folder: oracle.save(v[0], folder, v[1]),
                                  lambda folder: (oracle.load(folder), None), "attribute oracle", refit=refit)
    return orc, where


def load_pixel_oracle(size: int, cache_dir: str | Path, train_steps: int = 600, seed: int = 0, refit: bool = False,
                      pretrained_dir: str | Path | None = None):
    """(pixel oracle, where): the one shipped (``data/pretrained/shapes<px>_pixel_oracle``) or cached in
    ``cache_dir/pixel_size<px>`` when it was trained for ``train_steps`` steps with ``seed`` on this world, else one
    trained and cached there."""
    identity = _oracle_identity("pixel_oracle", size, train_steps, seed)
    shipped = (Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR) / f"shapes{size}_pixel_oracle"
    (net, report), where = cache.shipped_or_fetch(
        shipped, repo_path(cache_dir) / f"pixel_size{size}", identity,
        lambda: oracle.train_pixel_oracle(size=size, steps=train_steps, seed=seed),
        lambda v, folder: oracle.save_pixel_oracle(v[0], folder, v[1]),
        lambda folder: (oracle.load_pixel_oracle(folder), None), "pixel oracle", refit=refit)
    return net, where + (f": {report}" if report else "")


def load(name_or_path: str | Path, pretrained_dir: str | Path | None = None, map_location="cpu"):
    """The model of ``resolve(name_or_path)`` with its EMA weights, in eval mode."""
    return checkpoint.load(resolve(name_or_path, pretrained_dir), map_location=map_location)


def model_labels(folders: list[Path], variants: list[str]) -> list[str]:
    """One label per model, unique: the variant's paper name, with the folder's name added when two share a variant
    (a run's ``checkpoint/`` folder is named by its run folder)."""
    labels = [VARIANT_LABELS.get(v, v) for v in variants]
    if len(set(labels)) == len(labels):
        return labels
    names = [f.parent.name if f.name == "checkpoint" else f.name for f in folders]
    out = [f"{lab} [{n}]" for lab, n in zip(labels, names)]
    if len(set(out)) < len(out):  # same variant and same folder name: tell them apart by place
        out = [f"{lab} [{i + 1}: {n}]" for i, (lab, n) in enumerate(zip(labels, names))]
    return out


def model_folders(checkpoint_hdae: str | Path, checkpoint_dae: str | Path | None = None,
                  pretrained_dir: str | Path | None = None) -> dict[str, Path]:
    """{label: checkpoint folder} of the DAE-vs-HDAE comparisons (DAE first), labels unique per model; an empty
    ``checkpoint_dae`` leaves the one model. The folder is where imported directions or statistics are looked up."""
    cks = [c for c in (checkpoint_dae, checkpoint_hdae) if c not in (None, "")]
    if not cks:
        raise ValueError("checkpoint_hdae: no checkpoint given")
    folders = [resolve(c, pretrained_dir) for c in cks]
    configs = [checkpoint.read_config(f)["model"] for f in folders]
    sizes = {str(f): int(c["image_size"]) for f, c in zip(folders, configs)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the compared models must share one image size, got {sizes}")
    return dict(zip(model_labels(folders, [c.get("variant", "hdae_u") for c in configs]), folders))


def load_models(checkpoint_hdae: str | Path, checkpoint_dae: str | Path | None = None,
                pretrained_dir: str | Path | None = None) -> dict[str, torch.nn.Module]:
    """{label: model} of ``model_folders``: the DAE-vs-HDAE comparisons, EMA weights, in eval mode."""
    return {label: load(folder) for label, folder in model_folders(checkpoint_hdae, checkpoint_dae,
                                                                      pretrained_dir).items()}


def model_key(label: str) -> str:
    """A file-name key of a model label: 'HDAE(U)' -> 'hdae_u', 'DAE' -> 'dae'."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
