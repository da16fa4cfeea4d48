"""One training loop for every variant: AMP, EMA, gradient clipping, atomic checkpoints, exact resume, DDP."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import dist
from .config import TrainConfig
from .data import BadImageError, Shapes
from .data import make_dataset
from .data.images import to_tensor
from .data.source import is_shapes
from .hardware import amp_dtype, describe_hardware
from .locking import lock_folder
from .metrics import lpips
from .model import HDAE
from .optim import EMA, make_optimizer

CSV_FIELDS = ["step", "images", "wall_s", "loss", "img_s", "lr",
              "eval_mse_enc", "eval_mse_rand", "eval_lpips_enc", "eval_lpips_rand"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is kept."""


class RunFolderBusy(RuntimeError):
    """Another training process holds the run folder."""


LOCK_FILE = ".train.lock"


def lock_run_folder(out: Path):
    """An exclusive ``flock`` on ``out/.train.lock``, held while the run trains: a second ``hdae train`` on the
    same folder (say, a resume started while a signalled run still saves) would interleave checkpoints and
    metrics rows; it stops with one line instead (wait for the holder: a signalled run saves its checkpoint first).
    Returns the open lock file (close it to release), or None where ``fcntl`` does not exist."""
    return lock_folder(out, LOCK_FILE, RunFolderBusy, "training run")


def _step_seed(seed: int, step: int) -> int:
    # every step draws its randomness from (seed, step), so a resumed run repeats an uninterrupted one
    return (seed * 1_000_003 + step * 7919 + 12345) % (2**63 - 1)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epochs are seeded permutations and that can start mid-epoch."""

    def __init__(self, dataset, seed: int, start_sample: int = 0, **kw):
        super().__init__(dataset, shuffle=True, seed=seed, drop_last=True, **kw)
        self.start_sample = start_sample

    def __iter__(self) -> Iterator[int]:
        it = super().__iter__()
        for _ in range(self.start_sample):
            next(it, None)
        self.start_sample = 0
        return it


class _Chunks(Dataset):
    """Chunk ``i`` of a data set with a vectorised ``batch()``: its images, rendered in one call."""

    def __init__(self, dataset, chunk: int):
        self.dataset, self.chunk = dataset, chunk

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.chunk)

    def __getitem__(self, i: int) -> torch.Tensor:
        lo = i * self.chunk
        return self.dataset.batch(list(range(lo, min(lo + self.chunk, len(self.dataset)))))["image"]


def render_cache(dataset, device: torch.device, workers: int = 0, chunk: int = 2048,
                 progress: bool = True) -> torch.Tensor:
    """Every image of ``dataset`` (which must have ``batch()``) as one tensor on ``device``, rendered
    once in chunks (in ``workers`` processes when > 0). Batches indexed from it equal ``batch()``'s."""
    n = len(dataset)
    first = dataset.batch([0])["image"]
    cache = torch.empty((n, *first.shape[1:]), dtype=first.dtype, device=device)
    loader = DataLoader(_Chunks(dataset, chunk), batch_size=None, num_workers=workers)
    lo = 0
    for imgs in tqdm(loader, desc="render data set", unit="chunk", disable=not progress):
        cache[lo:lo + len(imgs)] = imgs.to(device)
        lo += len(imgs)
    return cache


def _use_cache(dataset, cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.cache_data not in ("auto", "on", "off"):
        raise ValueError(f"cache_data must be auto, on or off, got {cfg.cache_data!r}")
    if cfg.cache_data == "off" or not hasattr(dataset, "batch"):
        return False
    return cfg.cache_data == "on" or device.type == "cuda"


def batch_too_large(cfg: TrainConfig, n_train: int, n_held: int | None = None) -> str:
    """The one line for a training set smaller than one batch, naming the options that fix it."""
    held = f" ({n_held} more held out by --eval-size)" if n_held else ""
    return (f"--data {cfg.data}: {n_train} training image(s){held} are fewer than one batch of --batch "
            f"{cfg.batch_size}; lower --batch{' or --eval-size' if n_held else ''}, or add images")


def batches(dataset, cfg: TrainConfig, start_step: int, device: torch.device) -> Iterator[torch.Tensor]:
    """This rank's image batches from ``start_step`` on, the same global batches whatever the world size
    (and whether or not the data set is cached in device memory)."""
    world, rank = dist.world_size(), dist.rank()
    per_rank = cfg.batch_size // world
    n = len(dataset)
    steps_per_epoch = (n // world) // per_rank
    if per_rank < 1 or steps_per_epoch <= 0:
        raise ValueError(batch_too_large(cfg, n))
    cache = None
    if _use_cache(dataset, cfg, device):
        workers = cfg.num_workers or min(8, os.cpu_count() or 1)
        cache = render_cache(dataset, device, workers=workers if n > 8192 else 0,
                             progress=cfg.progress and rank == 0)
    step = start_step
    while True:
        epoch, within = divmod(step, steps_per_epoch)
        if cache is not None or (hasattr(dataset, "batch") and cfg.num_workers == 0):
            # the built-in data renders whole batches at once; global order as the sampler's
            g = torch.Generator().manual_seed(cfg.seed + epoch)
            perm = torch.randperm(n, generator=g)
            for s in range(within, steps_per_epoch):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size][rank::world]
                if cache is not None:
                    yield cache[idx.to(device)]
                else:
                    yield dataset.batch(idx.tolist())["image"].to(device, non_blocking=True)
                step += 1
        else:
            sampler = ResumableSampler(dataset, seed=cfg.seed, start_sample=within * per_rank,
                                       num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                persistent_workers=False)
            for item in loader:
                yield (item["image"] if isinstance(item, dict) else item).to(device, non_blocking=True)
                step += 1


def optimizer_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's state as a flat name → tensor dict for safetensors."""
    out = {}
    for name, p in model.named_parameters():
        for k, v in opt.state.get(p, {}).items():
            out[f"{name}::{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


ADAM_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def check_optimizer_tensors(params: dict[str, torch.Tensor], flat: dict[str, torch.Tensor],
                            file: str = "optimizer.safetensors") -> None:
    """Raise a CheckpointError unless every saved Adam entry names a parameter and has its shape
    (a wrong-shaped moment would otherwise broadcast silently into the update)."""
    for key, v in flat.items():
        name, sep, k = key.partition("::")
        if not sep or name not in params or k not in ADAM_STATE:
            raise ckpt.CheckpointError(f"{file}: entry {key!r} is not Adam state of this model's parameters")
        want = () if k == "step" else tuple(params[name].shape)
        if tuple(v.shape) != want and not (k == "step" and v.numel() == 1):
            raise ckpt.CheckpointError(f"{file}: {key} has shape {list(v.shape)}, the parameter needs "
                                       f"{list(want)}; the optimizer state does not belong to this model")
        if not v.is_floating_point():
            raise ckpt.CheckpointError(f"{file}: {key} is {v.dtype}, expected a floating-point tensor")


def load_optimizer_tensors(model: nn.Module, opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    check_optimizer_tensors(params, flat)
    # fused and capturable Adam keep the step count beside the parameters, the others on the CPU
    # (as Optimizer.load_state_dict places it), so a CPU run resumes on CUDA and the other way round
    step_on_param = bool(opt.defaults.get("fused") or opt.defaults.get("capturable"))
    for key, v in flat.items():
        name, k = key.split("::")
        p = params[name]
        if k == "step":
            opt.state[p][k] = v.to(p.device if step_on_param else "cpu", torch.float32)
        else:
            # empty_like keeps the parameter's layout: channels-last weights need channels-last moments
            opt.state[p][k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


class MetricsLog:
    """The run's ``metrics.csv``: rows after a resumed step are dropped so no step appears twice."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})


@torch.no_grad()
def evaluate(model: HDAE, x0: torch.Tensor, steps: int, seed: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Reconstruction MSE (and LPIPS when available) with encoded and with random x_T (paper Fig. 5).

    The encoded x_T comes from DiffAE's inversion (``refine=0``), as in the paper, so that the curves of every
    run stay comparable; the model's default refined inversion reconstructs far more exactly.
    """
    model.eval()
    codes = model.encode(x0)
    x_T = model.encode_stochastic(x0, codes, steps, refine=0)
    rec_enc = model.decode(x_T, codes, steps)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
    rec_rand = model.decode(noise, codes, steps)
    out = {
        "eval_mse_enc": (rec_enc - x0).pow(2).mean().item(),
        "eval_mse_rand": (rec_rand - x0).pow(2).mean().item(),
    }
    try:
        out["eval_lpips_enc"] = lpips(rec_enc, x0).mean().item()
        out["eval_lpips_rand"] = lpips(rec_rand, x0).mean().item()
    except (ImportError, RuntimeError, FileNotFoundError):
        pass
    return out, {"x0": x0, "enc": rec_enc, "rand": rec_rand}


def _eval_and_grid(ema_model: HDAE, x_eval: torch.Tensor, cfg: TrainConfig, out: Path, step: int) -> dict[str, float]:
    """Evaluate the EMA model on the held-out batch; write its reconstruction grid (every ``grid_every`` steps
    and at the end when that is set)."""
    from .plots import save_grid  # lazy: plots brings matplotlib and seaborn, seconds on every `hdae` start

    metrics, recs = evaluate(ema_model, x_eval, cfg.eval_steps, cfg.seed)
    if cfg.grid_every and step % cfg.grid_every and step != cfg.steps:
        return metrics
    k = min(16, len(x_eval))
    save_grid(out / "grids" / f"recon_{step:07d}.png", [recs["x0"][:k], recs["enc"][:k], recs["rand"][:k]], scale=2)
    return metrics


HELDOUT_FILE = "heldout.txt"


def training_set(cfg: TrainConfig):
    """The whole data set: the built-in shapes unless ``cfg.data`` names a folder or LMDB."""
    if is_shapes(cfg.data):
        return Shapes(size=cfg.model.image_size, seed=cfg.seed)
    if cfg.on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be error or skip, got {cfg.on_bad_image!r}")
    return make_dataset(cfg.data, cfg.model.image_size, on_error="raise" if cfg.on_bad_image == "error" else "skip",
                        convert_mode=cfg.convert_images)


def held_out_split(dataset, cfg: TrainConfig, run_dir: str | Path | None = None) -> tuple[list[int], torch.Tensor]:
    """The ``eval_size`` items of a folder or LMDB that evaluation uses and training never sees, and their images
    (unflipped): as listed in ``run_dir/heldout.txt`` when the run has one, else the first usable items of a
    permutation seeded by the run's seed."""
    n = len(dataset)
    listed = Path(run_dir) / HELDOUT_FILE if run_dir is not None else None
    if listed is not None and listed.is_file():
        names = [line for line in listed.read_text().splitlines() if line]
        where = {dataset.item_name(i): i for i in range(n)}
        missing = [name for name in names if name not in where]
        if missing:
            raise ValueError(f"{listed}: {len(missing)} held-out image(s) are not in {cfg.data} (e.g. {missing[0]}); "
                             "resume with the data the run started with")
        idx = [where[name] for name in names]
        return idx, torch.stack([to_tensor(dataset.load_image(i)) for i in idx])
    if cfg.eval_size >= n:
        raise ValueError(f"{cfg.data}: {n} image(s) leave none to train on once --eval-size {cfg.eval_size} are held "
                         "out for evaluation; lower --eval-size or add images")
    idx, images = [], []
    for i in torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 10_000)).tolist():
        try:
            images.append(to_tensor(dataset.load_image(i)))
        except BadImageError:
            if dataset.on_error == "raise":
                raise
            continue  # training meets it too, and counts it as skipped
        idx.append(i)
        if len(idx) == cfg.eval_size:
            break
    if not idx:
        raise ValueError(f"{cfg.data}: no usable image to hold out for evaluation")
    return idx, torch.stack(images)


def held_out_batch(cfg: TrainConfig, run_dir: str | Path | None = None) -> torch.Tensor:
    """The fixed evaluation batch: shapes from another seed, or the held-out images of a folder or LMDB
    (those listed in ``run_dir/heldout.txt`` when given)."""
    if is_shapes(cfg.data):
        return Shapes(size=cfg.model.image_size, seed=cfg.seed + 10_000).batch(list(range(cfg.eval_size)))["image"]
    return held_out_split(training_set(cfg), cfg, run_dir)[1]


class TrainSplit(Dataset):
    """The items of a folder or LMDB at ``positions``: a bad image is replaced by the next usable one of the
    split (never by a held-out one, as the data set's own skipping might)."""

    def __init__(self, dataset, positions: list[int]):
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        for offset in range(len(self.positions)):
            p = self.positions[(i + offset) % len(self.positions)]
            item = self.dataset[p]
            if item.get("index", p) == p:
                return item
        raise RuntimeError(f"{self.dataset!r}: every one of the {len(self)} training images is unusable")

    skipped = property(lambda self: self.dataset.skipped)
    upscaled = property(lambda self: self.dataset.upscaled)


def run_data(cfg: TrainConfig, out: Path):
    """(training set, rank 0's evaluation batch). A folder or LMDB run holds out ``eval_size`` images: they are
    listed in ``out/heldout.txt``, which ``--resume`` reads back, and the training set leaves them out."""
    dataset = training_set(cfg)
    if is_shapes(cfg.data):
        return dataset, held_out_batch(cfg) if dist.rank() == 0 else None
    x_eval = None
    if dist.rank() == 0:  # chooses and lists the split; the other ranks read the list
        idx, x_eval = held_out_split(dataset, cfg, out)
        world = dist.world_size()
        if (len(dataset) - len(idx)) // world < max(1, cfg.batch_size // world):  # before anything is written
            raise ValueError(batch_too_large(cfg, len(dataset) - len(idx), len(idx)))
        if not (out / HELDOUT_FILE).is_file():
            tmp = out / f".{HELDOUT_FILE}.tmp"
            tmp.write_text("".join(f"{dataset.item_name(i)}\n" for i in idx))
            os.replace(tmp, out / HELDOUT_FILE)
    dist.barrier()
    if dist.rank() != 0:
        idx, _ = held_out_split(dataset, cfg, out)
    held = set(idx)
    return TrainSplit(dataset, [i for i in range(len(dataset)) if i not in held]), x_eval


class StopSignal:
    """SIGTERM / SIGINT ask the run to stop after the current step, with a checkpoint, instead of dying.

    A second signal stops at once (KeyboardInterrupt). ``install`` acts only in the main thread;
    ``restore`` puts the previous handlers back. SIGINT is taken over even where the parent shell
    started the run with it ignored (a background job), so that ``timeout -s INT`` stops it cleanly.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping at once")
        self.received = signum

    def install(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


RUN_MARKERS = ("train.json", "metrics.csv", HELDOUT_FILE, "checkpoint", ".checkpoint.old-*", ".checkpoint.tmp-*")


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` is a folder ``hdae train`` wrote (one of its files, its checkpoint or a save's sibling), and
    not itself a checkpoint (an export holds a metrics.csv too)."""
    return out.is_dir() and not ckpt.is_checkpoint(out) and any(next(out.glob(m), None) for m in RUN_MARKERS)


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse ``out`` unless it is new, empty, or a run folder continued with ``--resume``; nothing is written."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ckpt.DestinationError(f"{out}: exists and is not a folder; choose a new or empty --out")
    if ckpt.is_empty_folder(out, ignore=(LOCK_FILE,)):
        return
    if not is_run_folder(out):
        raise ckpt.DestinationError(f"{out}: holds files that are not an hdae training run; nothing was written, "
                                    "choose a new or empty --out")
    if not resume:
        raise ckpt.DestinationError(f"{out}: already holds a training run; pass --resume to continue it, "
                                    "or choose a new or empty --out")


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train, writing checkpoints, ``metrics.csv`` and grids to ``cfg.out``; returns the checkpoint folder.

    ``cfg.out`` must be new or empty, or a run folder continued (``resume``) or started afresh (``overwrite``:
    its log, held-out list and grids are replaced; its checkpoint stays until the new run's first save).
    Anything else is refused untouched."""
    if resume and overwrite:
        raise ValueError("resume continues a run and overwrite starts it afresh: pass one of them")
    out = Path(cfg.out)
    check_run_folder(out, resume or overwrite)
    device = dist.init(cfg.device)
    world = dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {world} processes")
    lock = None
    fresh = not out.exists() or ckpt.is_empty_folder(out, ignore=(LOCK_FILE,))
    if dist.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_run_folder(out)
    try:
        if lock is not None:
            check_run_folder(out, resume or overwrite)  # again, now that no other run can write here
            if overwrite:
                for old in [out / HELDOUT_FILE, *(out / "grids").glob("recon_*.png")]:
                    old.unlink(missing_ok=True)
        dist.barrier()
        try:
            return _train(cfg, resume, device, world, out)
        except BaseException:
            if fresh and lock is not None:
                _undo_failed_start(out)
            raise
    finally:
        if lock is not None:
            lock.close()  # releases the flock, also when the run raised


def _undo_failed_start(out: Path) -> None:
    """A new run that stopped before its first checkpoint and its first metrics row (bad data, a batch larger
    than the data, an error of the first step) removes what it wrote, so the folder is empty again and the same
    command, corrected, runs without --resume (the folder was empty before, so nothing else is there)."""
    log = out / "metrics.csv"
    try:
        rows = log.read_text().count("\n") - 1 if log.is_file() else 0
    except OSError:
        return
    if rows > 0 or (out / "checkpoint").exists() or next(out.glob(".checkpoint.*-*"), None) is not None:
        return  # the run got somewhere: its record stays, and --resume continues it
    for name in ("train.json", "metrics.csv", HELDOUT_FILE, f".{HELDOUT_FILE}.tmp"):
        (out / name).unlink(missing_ok=True)
    for folder in ("tb", "grids"):
        shutil.rmtree(out / folder, ignore_errors=True)


@dataclass
class Resumed:
    """What a run's checkpoint carries into its continuation."""

    model: HDAE
    ema_model: HDAE
    optimizer: dict[str, torch.Tensor]
    step: int
    images: int
    wall_s: float
    ema_updates: int
    hardware: str | None


def load_resume(cfg: TrainConfig, ck_dir: Path) -> Resumed | None:
    """The state to continue from ``ck_dir`` (after putting back a checkpoint a kill left aside), or None."""
    if dist.rank() == 0:
        # a kill during a save can leave the newest complete checkpoint in a hidden sibling folder
        ckpt.recover(ck_dir, log=dist.print0)
    dist.barrier()
    if not (ck_dir / ckpt.CONFIG_FILE).exists():
        dist.print0(f"no checkpoint in {ck_dir}: starting a new run")
        return None
    extra = ckpt.read_config(ck_dir).get("extra", {})
    if "train" not in extra or not (ck_dir / "optimizer.safetensors").is_file():
        raise ckpt.CheckpointError(
            f"{ck_dir}: holds a model without training state (an exported or imported model: no train config, "
            "step or optimizer), so it can't be resumed; start a new run with another --out, or drop --resume "
            "after moving that folder away")
    if TrainConfig.from_dict(extra["train"]).model != cfg.model:
        raise ValueError(f"{ck_dir}: checkpoint was trained with another model config; "
                         f"resume with the same preset and variant, or choose a new --out")
    return Resumed(ckpt.load(ck_dir, ema=False), ckpt.load(ck_dir, ema=True),
                   ckpt.read_tensors(ck_dir, "optimizer.safetensors"), extra["step"], extra["images"],
                   extra["wall_s"], extra["ema_updates"], extra.get("hardware"))


def hardware_line(device: torch.device, resumed: Resumed | None) -> str:
    """The machines the run has seen, in order; a resume on the same machine adds nothing."""
    here = describe_hardware(device)
    if resumed is None or not resumed.step:
        return here
    saved = resumed.hardware or here
    return saved if saved.rsplit("; resumed on ", 1)[-1] == here else f"{saved}; resumed on {here}"


def check_loss(lv: float, level: float | None, step: int, cfg: TrainConfig, ck_dir: Path) -> float:
    """Raise TrainingDiverged on a non-finite or exploding loss; return the loss's new running level."""
    if not math.isfinite(lv):
        raise TrainingDiverged(
            f"non-finite loss ({lv}) at step {step}; the last good checkpoint in {ck_dir} is kept. "
            "Lower --lr, use --amp none, or check the data for NaNs."
        )
    if cfg.diverge_factor and level is not None and lv > cfg.diverge_factor * level and lv > 10.0:
        raise TrainingDiverged(
            f"loss exploded at step {step}: {lv:.3g}, {lv / level:.2g} times its running level {level:.3g}; "
            f"the last good checkpoint in {ck_dir} is kept. Lower --lr (it is {cfg.lr:g})."
        )
    return lv if level is None else 0.9 * level + 0.1 * lv


def optimizer_step(loss: torch.Tensor, model: nn.Module, opt: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, grad_clip: float) -> None:
    """Backward, clip the gradient norm to ``grad_clip`` and step; with fp16's scaler, unscaled before clipping."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    scaler.step(opt)
    scaler.update()


def should_stop(cfg: TrainConfig, done: int, t_start: float, stop: "StopSignal",
                device: torch.device) -> tuple[bool, bool]:
    """(time limit reached, signal received) after step ``done``; across processes both are decided at log
    steps and shared, so every rank stops at the same step."""
    log_step = done % cfg.log_every == 0
    time_up = bool(cfg.max_minutes) and log_step and time.time() - t_start >= 60 * cfg.max_minutes
    signalled = stop.received is not None
    if dist.is_dist():
        signalled = signalled and log_step
        if log_step:
            flags = dist.all_reduce_mean(torch.tensor([float(time_up), float(signalled)], device=device))
            time_up, signalled = bool(flags[0].item() > 0), bool(flags[1].item() > 0)
    return time_up, signalled


class RunLog:
    """Rank 0's record of a run (``metrics.csv``, TensorBoard, the progress bar) and the loss averaged between rows."""

    def __init__(self, cfg: TrainConfig, out: Path, start_step: int, resume: bool, device: torch.device):
        rank0 = dist.rank() == 0
        self.csv = MetricsLog(out / "metrics.csv", start_step if resume else None) if rank0 else None
        self.tb = None
        if cfg.tensorboard and rank0:
            try:  # tensorboard is optional: without it the run logs to metrics.csv only
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                pass
        self.bar = (tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.model.variant}", unit="step")
                    if cfg.progress and rank0 else None)
        self.loss_sum, self.n = torch.zeros((), device=device), 0
        self.t_last, self.images = time.time(), 0

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum += loss.detach()
        self.n += 1
        self.images += images
        if self.bar is not None:
            self.bar.update(1)

    def log_row(self, step: int, images: int, wall_s: float, lr: float, evaluate=None) -> None:
        """One row: the loss averaged over steps and ranks since the last row, throughput, and ``evaluate()``'s
        metrics when given (called on rank 0 only). Every rank must call it (the loss is all-reduced)."""
        loss = dist.all_reduce_mean(self.loss_sum / max(self.n, 1)).item()
        rate = self.images / max(time.time() - self.t_last, 1e-9)
        row = {"step": step, "images": images, "wall_s": round(wall_s, 2), "loss": loss, "img_s": round(rate, 2),
               "lr": lr}
        if self.csv is not None:
            if evaluate is not None:
                row.update(evaluate())
            self.csv.write(row)
            for k, v in row.items():
                if self.tb is not None and k != "step":
                    self.tb.add_scalar(k, v, step)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        self.t_last, self.images = time.time(), 0
        self.loss_sum.zero_()
        self.n = 0

    def close(self) -> None:
        for f in (self.bar, self.tb):
            if f is not None:
                f.close()


def _train(cfg: TrainConfig, resume: bool, device: torch.device, world: int, out: Path) -> Path:
    ck_dir, rank = out / "checkpoint", dist.rank()
    # the model, its EMA and Adam: new, or as the run's checkpoint left them
    torch.manual_seed(cfg.seed)
    resumed = load_resume(cfg, ck_dir) if resume else None
    start_step = resumed.step if resumed else 0
    images, wall0 = (resumed.images, resumed.wall_s) if resumed else (0, 0.0)
    model = resumed.model if resumed else HDAE(cfg.model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    hardware = hardware_line(device, resumed)
    model.to(device).train()
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup, resumed.ema_updates if resumed else 0)
    if resumed:
        ema.model.load_state_dict(resumed.ema_model.state_dict())
    ema.model.to(device)
    cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.lr)
    if resumed:
        load_optimizer_tensors(model, opt, resumed.optimizer)
    amp = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.is_dist() else model
    step_fn = torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net

    # the data (the held-out images listed first) and the run's record: train.json, metrics.csv
    dataset, x_eval = run_data(cfg, out)
    x_eval = x_eval.to(device) if x_eval is not None else None
    if rank == 0:
        (out / "train.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    log = RunLog(cfg, out, start_step, resume, device)
    data = batches(dataset, cfg, start_step, device)

    t_start, level = time.time(), None  # level: the loss's running level, for the explosion check
    stop = StopSignal().install()
    try:
        for step in range(start_step, cfg.steps):
            # one step; its t, noise and dropout drawn from (seed, step), the global batch's dealt as its images
            x0 = next(data)
            if cl:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            g = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
            t = torch.randint(0, model.diffusion_config.T, (cfg.batch_size,), generator=g)[rank::world]
            noise = torch.randn((cfg.batch_size, *x0.shape[1:]), generator=g)[rank::world]
            t, noise = t.to(device), noise.to(device, x0.dtype)
            torch.manual_seed(_step_seed(cfg.seed, step) + rank)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = step_fn(x0, t, noise).mean()
            level = check_loss(loss.detach().float().item(), level, step, cfg, ck_dir)
            optimizer_step(loss, model, opt, scaler, cfg.grad_clip)
            ema.update(model)
            images += cfg.batch_size
            log.add(loss, cfg.batch_size)
            done = step + 1

            # stop, log and evaluate (a signal wants its checkpoint soon: it skips the closing evaluation)
            time_up, signalled = should_stop(cfg, done, t_start, stop, device)
            last = done == cfg.steps or time_up or signalled
            is_eval = bool(cfg.eval_every) and (done % cfg.eval_every == 0 or (last and not signalled))
            if done % cfg.log_every == 0 or last or is_eval:
                log.log_row(done, images, wall0 + time.time() - t_start, cfg.lr,
                            (lambda: _eval_and_grid(ema.model, x_eval, cfg, out, done)) if is_eval else None)

            # checkpoint
            if done % cfg.ckpt_every == 0 or last:
                if rank == 0:
                    extra = {"step": done, "images": images, "wall_s": wall0 + time.time() - t_start,
                             "ema_updates": ema.updates, "train": cfg.to_dict(), "hardware": hardware}
                    ckpt.save(model, ck_dir, ema=ema.model, extra=extra,
                              tensors={"optimizer.safetensors": optimizer_tensors(model, opt)})
                dist.barrier()
            if time_up:
                dist.print0(f"time limit of {cfg.max_minutes} min reached at step {done}; checkpoint saved in {ck_dir}")
                break
            if signalled:
                dist.print0(f"stopped by {stop.name or 'a signal on another rank'} at step {done}; checkpoint saved "
                            f"in {ck_dir} (--resume continues)")
                break
    finally:
        stop.restore()
        log.close()
        _report_data(dataset, cfg)
    return ck_dir


def _report_data(dataset, cfg: TrainConfig) -> None:
    """Say how many images were skipped or upscaled (counted in this process; workers log their own)."""
    where = " in the main process (DataLoader workers log their own)" if cfg.num_workers else ""
    skipped = getattr(dataset, "skipped", None)
    if skipped:
        dist.print0(f"skipped {len(skipped)} unusable image(s) met in training{where}, "
                    f"e.g. {next(iter(skipped.values()))}")
    upscaled = getattr(dataset, "upscaled", None)
    if upscaled:
        smallest = min(upscaled.values(), key=lambda wh: wh[0] * wh[1])
        dist.print0(f"warning: {len(upscaled)} image(s) smaller than {cfg.model.image_size} px were upscaled{where} "
                    f"(smallest {smallest[0]}x{smallest[1]})")
