"""An attribute oracle on Shapes and a measured disentanglement score for edits (beyond HDAE §4.3's human votes)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_module_weights, read_module_meta, save_module
from .config import JsonConfig
from .data.shapes import ATTRIBUTE_NAMES, LABEL_NAMES, Shapes
from .editing import manipulate
from .metrics import bootstrap_ci
from .nn import conv_block

FORMAT = "hdae-attribute-oracle"
CONFIG_FILE = "oracle_config.json"
WEIGHTS_FILE = "oracle.safetensors"


@dataclass(frozen=True)
class OracleConfig(JsonConfig):
    """The oracle CNN: images at ``image_size`` → one logit per attribute in ``attribute_names``."""

    attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
    image_size: int = 32  # the size it was trained at; ``predict_proba`` resizes other sizes to it
    channels: int = 16
    grid: int = 4  # features pooled to grid × grid: position and lighting direction need where, not only what

    def __post_init__(self):
        object.__setattr__(self, "attribute_names", tuple(self.attribute_names))
        if not self.attribute_names:
            raise ValueError("OracleConfig: attribute_names is empty")



class AttributeOracle(nn.Module):
    """A small CNN predicting every Shapes attribute from an image in [-1, 1] (multi-label logits)."""

    def __init__(self, config: OracleConfig | None = None):
        super().__init__()
        self.config = config = config or OracleConfig()
        c = config.channels
        self.features = nn.Sequential(
            conv_block(3, c, 1), conv_block(c, c, 1),
            conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c, 1),
            conv_block(2 * c, 4 * c, 2), conv_block(4 * c, 4 * c, 1),
        )
        # two poolings, both adaptive so 16, 32 and 64 px inputs reach the same head: a global max
        # says *what* is anywhere (shape, stripes, clutter), a coarse grid says *where* (side, lighting)
        self.grid_pool = nn.AdaptiveAvgPool2d(config.grid)
        self.head = nn.Sequential(
            nn.Linear(4 * c * (config.grid**2 + 1), 8 * c), nn.SiLU(),
            nn.Linear(8 * c, len(config.attribute_names)),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, A] for images [B, 3, H, W] in [-1, 1] at any size."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W] in [-1, 1], got {list(images.shape)}")
        h = self.features(images)
        return self.head(torch.cat([h.amax(dim=(2, 3)), self.grid_pool(h).flatten(1)], dim=1))

    @property
    def attribute_names(self) -> list[str]:
        return list(self.config.attribute_names)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The head's hidden features [B, 8·channels] (after SiLU): the space of the Fréchet oracle distance."""
        p = next(self.parameters())
        s = self.config.image_size
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(p)
            if x.shape[-2:] != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            h = self.features(x)
            h = torch.cat([h.amax(dim=(2, 3)), self.grid_pool(h).flatten(1)], dim=1)
            out.append(self.head[1](self.head[0](h)).float())
        return torch.cat(out) if out else torch.zeros(0, self.head[0].out_features)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """p(attribute) [B, A]; images at another size are resized to the training size first."""
        p = next(self.parameters())
        s = self.config.image_size
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(p)
            if x.shape[-2:] != (s, s):
                # antialiased resize, so a 64 px edit looks to the oracle as a 32 px render would
                x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            out.append(torch.sigmoid(self(x).float()))
        return torch.cat(out) if out else torch.zeros(0, len(self.config.attribute_names))


def _accuracy_report(probs: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    acc = ((probs > 0.5).float() == targets).float().mean(0)
    base = torch.maximum(targets.mean(0), 1 - targets.mean(0))
    return {
        "accuracy": {n: float(a) for n, a in zip(names, acc)},
        "majority_baseline": {n: float(b) for n, b in zip(names, base)},
        "mean_accuracy": float(acc.mean()),
        "mean_majority_baseline": float(base.mean()),
    }


def train_oracle(size: int = 32, n_train: int = 50_000, steps: int = 800, batch_size: int = 64,
                 seed: int = 0, progress: bool = True, lr: float = 2e-3, n_test: int = 2000,
                 channels: int = 16, correlation=None, noise_std: float = 0.05,
                 device: torch.device | str = "cpu") -> tuple[AttributeOracle, dict[str, Any]]:
    """Train the oracle on freshly rendered Shapes batches; report held-out accuracy per attribute and mean."""

    # correlation=None by default: an oracle trained on correlated pairs would learn the shortcut
    # (e.g. red ⇒ large) and report leakage that is its own
    data = Shapes(size=size, seed=seed, length=n_train + n_test, correlation=correlation)
    torch.manual_seed(seed)
    oracle = AttributeOracle(OracleConfig(attribute_names=tuple(data.attribute_names), image_size=size,
                                          channels=channels)).to(device)
    opt = torch.optim.Adam(oracle.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    it = range(steps)
    if progress:
        it = tqdm(it, desc="attribute oracle", leave=False)
    oracle.train()
    for _ in it:
        idx = torch.randint(0, n_train, (batch_size,), generator=g)
        b = data.batch(idx.tolist())
        x, y = b["image"].to(device), b["attributes"].to(device)
        if noise_std > 0:
            # decoded edits are slightly noisy; a little noise keeps the oracle from relying on exact pixels
            x = x + noise_std * torch.rand(x.shape[0], 1, 1, 1, generator=g).to(device) * torch.randn(x.shape, generator=g).to(device)
        loss = F.binary_cross_entropy_with_logits(oracle(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    # wall time depends on whoever else shares the machine; process CPU time is what the training cost
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    oracle.eval().requires_grad_(False)
    test = data.batch(list(range(n_train, n_train + n_test)))
    probs = oracle.predict_proba(test["image"].to(device)).cpu()
    report = _accuracy_report(probs, test["attributes"], data.attribute_names)
    report.update({"size": size, "steps": steps, "batch_size": batch_size, "n_train": n_train,
                   "n_test": n_test, "train_seconds": train_s, "train_cpu_seconds": train_cpu_s,
                   "threads": torch.get_num_threads()})
    return oracle, report


@torch.no_grad()
def evaluate_oracle(oracle: AttributeOracle, images: torch.Tensor, attributes: torch.Tensor) -> dict[str, Any]:
    """Accuracy per attribute (and mean) of the oracle on labelled images, beside the majority-class baseline."""
    return _accuracy_report(_proba(oracle, images).cpu(), attributes.float().cpu(), oracle.attribute_names)


@torch.no_grad()
def attribute_auroc(oracle: nn.Module, images: torch.Tensor, attributes: torch.Tensor,
                    names: Sequence[str] | None = None) -> dict[str, float]:
    """Held-out AUROC per attribute of the oracle's probabilities (0.5 = chance, 1 = perfect ranking)."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn takes ~2 s to import, needed only here

    names = list(names or getattr(oracle, "attribute_names"))
    p = _proba(oracle, images).double().cpu().numpy()
    y = attributes.cpu().numpy()
    if p.shape[1] != len(names) or y.shape != p.shape:
        raise ValueError(f"{p.shape[1]} outputs, {len(names)} names and attributes {list(y.shape)} must agree")
    return {n: float(roc_auc_score(y[:, i], p[:, i])) for i, n in enumerate(names)}


def probabilities(oracle: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """p(attribute) [B, A] from an oracle (or any scorer with ``predict_proba``; else σ of its logits)."""
    if hasattr(oracle, "predict_proba"):
        return oracle.predict_proba(images)
    with torch.no_grad():
        return torch.sigmoid(oracle(images).float())


_proba = probabilities


def per_image_scores(p_before: torch.Tensor, p_after: torch.Tensor, target: str, names: Sequence[str],
                     correlated=None, sign: float = 1.0) -> dict[str, torch.Tensor]:
    """Per image [B] (float64): success = signed Δp(target), leakage = mean |Δp| of every other attribute,
    partner_leakage = mean |Δp| of the attributes the data correlates with the target (NaN when none)."""
    names = list(names)
    if target not in names:
        raise KeyError(f"unknown target attribute {target!r}; the oracle predicts {names}")
    p0, p1 = torch.as_tensor(p_before).double().cpu(), torch.as_tensor(p_after).double().cpu()
    if p0.shape != p1.shape or p0.dim() != 2 or p0.shape[1] != len(names):
        raise ValueError(f"p_before {list(p0.shape)} and p_after {list(p1.shape)}: expected one shape [B, {len(names)}]")
    delta = p1 - p0
    ti = names.index(target)
    others = [i for i in range(len(names)) if i != ti]
    partners = [names.index(p) for p in _partners(target, correlated) if p in names]
    nan = torch.full((delta.shape[0],), float("nan"), dtype=delta.dtype)
    return {"success": (1.0 if sign >= 0 else -1.0) * delta[:, ti],
            "leakage": delta[:, others].abs().mean(1) if others else nan,
            "partner_leakage": delta[:, partners].abs().mean(1) if partners else nan}


def _partners(target: str, correlated) -> list[str]:
    out = []
    for pair in correlated or []:
        a, b = pair[0], pair[1]
        if a == target:
            out.append(b)
        elif b == target:
            out.append(a)
    return out


@torch.no_grad()
def disentanglement_scores(oracle: nn.Module, x_before: torch.Tensor, x_after: torch.Tensor, target: str,
                           names: Sequence[str] | None = None, correlated=None, sign: float = 1.0) -> dict[str, Any]:
    """Oracle-measured edit quality: success = mean signed Δp(target), leakage = mean |Δp| of the others."""
    # sign = +1 for an edit towards the attribute (α > 0 along its classifier normal), −1 away from it
    if names is None:
        names = getattr(oracle, "attribute_names", None)
        if names is None:
            raise ValueError("names: the oracle has no attribute_names; pass the name of every output")
    names = list(names)
    if target not in names:
        raise KeyError(f"unknown target attribute {target!r}; the oracle predicts {names}")
    if x_before.shape != x_after.shape:
        raise ValueError(f"x_before {list(x_before.shape)} and x_after {list(x_after.shape)} must have one shape")
    p0, p1 = _proba(oracle, x_before).double().cpu(), _proba(oracle, x_after).double().cpu()
    if p0.shape[1] != len(names):
        raise ValueError(f"the oracle gives {p0.shape[1]} outputs but {len(names)} names were given")
    delta = p1 - p0
    ti = names.index(target)
    others = [i for i in range(len(names)) if i != ti]
    partners = [p for p in _partners(target, correlated) if p in names]
    s = 1.0 if sign >= 0 else -1.0
    out = {
        "success": float(s * delta[:, ti].mean()),
        "leakage": float(delta[:, others].abs().mean()) if others else float("nan"),
        "partner_leakage": (float(delta[:, [names.index(p) for p in partners]].abs().mean())
                            if partners else float("nan")),
        "partner": ",".join(partners) if partners else None,
        "n": int(delta.shape[0]),
    }
    # the part of the leakage that is not the correlated partner, to tell entanglement from side effects
    rest = [i for i in others if names[i] not in partners]
    out["leakage_excl_partner"] = float(delta[:, rest].abs().mean()) if rest else float("nan")
    out["delta"] = {n: float(d) for n, d in zip(names, delta.mean(0))}
    # per image, so callers can put intervals on the means (metrics.bootstrap_ci over images)
    out["per_image"] = per_image_scores(p0, p1, target, names, correlated, sign)
    return out


@torch.no_grad()
def edit_sweep(model, oracle: nn.Module, images: torch.Tensor, direction: torch.Tensor, stats, target: str,
               ks: Sequence[int | None] = (None,), alphas: Sequence[float] = (1.0,), steps: int = 50,
               manipulate_fn: Callable | None = None, names: Sequence[str] | None = None, correlated=None,
               levels: Sequence[int] | None = None, x_T: torch.Tensor | None = None,
               progress: bool = True, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (k, α): oracle success / leakage / partner leakage of truncated edits (HDAE Eq. 1–2), each with
    its percentile bootstrap interval over the images (``<score>_low`` / ``<score>_high`` at ``level``)."""
    manipulate_fn = manipulate if manipulate_fn is None else manipulate_fn
    p = next(model.parameters())
    images = images.to(p)
    codes = model.encode(images)
    if x_T is None:
        x_T = model.encode_stochastic(images, codes, steps)
    # compare against the unedited decode, so reconstruction error never counts as leakage
    x_before = model.decode(x_T, codes, steps)
    grid = [(k, a) for k in ks for a in alphas]
    if progress:
        grid = tqdm(grid, desc=f"edit sweep {target}", leave=False)
    rows = []
    for k, alpha in grid:
        edited = manipulate_fn(codes, direction, alpha, stats, k=k, levels=levels)
        x_after = model.decode(x_T, edited.to(codes), steps)
        sc = disentanglement_scores(oracle, x_before, x_after, target, names, correlated,
                                    sign=1.0 if alpha >= 0 else -1.0)
        row = {"target": target, "k": k, "alpha": float(alpha), "success": sc["success"],
               "leakage": sc["leakage"], "partner_leakage": sc["partner_leakage"],
               "leakage_excl_partner": sc["leakage_excl_partner"], "partner": sc["partner"], "n": sc["n"]}
        for key, v in sc["per_image"].items():
            ok = len(v) >= 2 and bool(torch.isfinite(v).all())
            _, row[f"{key}_low"], row[f"{key}_high"] = (bootstrap_ci(v, level=level, seed=seed) if ok
                                                       else (None, float("nan"), float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)


def save(oracle: AttributeOracle, path: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write ``path/oracle_config.json`` (with the training report) + ``oracle.safetensors``."""
    meta = {"format": FORMAT, "config": oracle.config.to_dict(), "report": report or {}}
    return save_module(oracle, path, CONFIG_FILE, WEIGHTS_FILE, meta)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> AttributeOracle:
    """Rebuild an oracle written by ``save`` (its report: ``read_report(path)``)."""
    meta = read_module_meta(path, CONFIG_FILE, FORMAT, "hdae_core.oracle")
    return load_module_weights(AttributeOracle(OracleConfig.from_dict(meta["config"])), path, WEIGHTS_FILE, map_location)


def read_report(path: str | Path) -> dict[str, Any]:
    """The training report stored beside an oracle."""
    return json.loads((Path(path) / CONFIG_FILE).read_text()).get("report", {})


# ---------------------------------------------------------------- the pixel oracle (where the object is, its class)


PIXEL_FORMAT = "hdae-pixel-oracle"
PIXEL_CONFIG_FILE = "pixel_oracle_config.json"
PIXEL_WEIGHTS_FILE = "pixel_oracle.safetensors"


@dataclass(frozen=True)
class PixelOracleConfig(JsonConfig):
    """Per-pixel Shapes labels (``label_names``: background, the shape classes, clutter) and the object's colour."""

    label_names: tuple[str, ...] = LABEL_NAMES  # the world's own, so a renamed class cannot drift
    num_colors: int = 6
    image_size: int = 32
    channels: int = 32

    def __post_init__(self):
        object.__setattr__(self, "label_names", tuple(self.label_names))



class PixelOracle(nn.Module):
    """A small encoder-decoder CNN: per-pixel label logits and per-pixel object-colour logits."""

    def __init__(self, config: PixelOracleConfig | None = None):
        super().__init__()
        self.config = config = config or PixelOracleConfig()
        c = config.channels
        self.fine = nn.Sequential(conv_block(3, c, 1), conv_block(c, c, 1))
        # the coarse path sees the whole object (a star and a square differ in their outline, not a pixel)
        self.coarse = nn.Sequential(conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c, 1), conv_block(2 * c, 2 * c, 2),
                                    conv_block(2 * c, 2 * c, 1), conv_block(2 * c, 2 * c, 1))
        self.merge = nn.Sequential(conv_block(3 * c, c, 1), conv_block(c, c, 1))
        self.labels = nn.Conv2d(c, len(config.label_names), 1)
        self.colors = nn.Conv2d(c, config.num_colors, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label logits [B, K, H, W], colour logits [B, C, H, W]) for images in [-1, 1]."""
        f = self.fine(images)
        g = F.interpolate(self.coarse(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        h = self.merge(torch.cat([f, g], dim=1))
        return self.labels(h), self.colors(h)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Per image: ``label_map`` [B, H, W], object ``mask`` (a shape class), ``shape`` and ``color`` (majority
        over the object's pixels; −1 when no pixel is the object)."""
        p = next(self.parameters())
        s = self.config.image_size
        maps, shapes, colors = [], [], []
        n_shapes = len(self.config.label_names) - 2  # background first, clutter last
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(p)
            if x.shape[-2:] != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            lab, col = self(x)
            lab_map = lab.argmax(1)
            obj = (lab_map >= 1) & (lab_map <= n_shapes)
            # vote with probabilities over the object's pixels: a few stray pixels do not decide the class
            sp = lab.softmax(1)[:, 1:1 + n_shapes] * obj[:, None]
            cp = col.softmax(1) * obj[:, None]
            has = obj.flatten(1).any(1)
            shapes.append(torch.where(has, sp.sum((2, 3)).argmax(1), -1))
            colors.append(torch.where(has, cp.sum((2, 3)).argmax(1), -1))
            maps.append(lab_map)
        label_map = torch.cat(maps)
        return {"label_map": label_map, "mask": (label_map >= 1) & (label_map <= n_shapes),
                "shape": torch.cat(shapes), "color": torch.cat(colors)}


def train_pixel_oracle(size: int = 32, steps: int = 600, batch_size: int = 32, seed: int = 0, lr: float = 2e-3,
                       n_test: int = 500, noise_std: float = 0.05, progress: bool = False
                       ) -> tuple[PixelOracle, dict[str, Any]]:
    """Train the pixel oracle on rendered Shapes (label maps and colour factors); report held-out accuracy."""

    data = Shapes(size=size, seed=seed + 7, length=10_000_000, correlation=None)
    color_i = data.factor_names.index("color")
    torch.manual_seed(seed)
    net = PixelOracle(PixelOracleConfig(label_names=tuple(data.label_names), image_size=size))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    n_shapes = len(data.label_names) - 2
    it = range(steps)
    if progress:
        it = tqdm(it, desc="pixel oracle", leave=False)
    net.train()
    for _ in it:
        b = data.batch(torch.randint(n_test, 10_000_000, (batch_size,), generator=g).tolist())
        x, y = b["image"], b["label_map"].long()
        x = x + noise_std * torch.rand(x.shape[0], 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
        lab, col = net(x)
        obj = (y >= 1) & (y <= n_shapes)
        target_col = b["factors"][:, color_i].long()[:, None, None].expand_as(y)
        loss = F.cross_entropy(lab, y) + (F.cross_entropy(col, target_col, reduction="none") * obj).sum() / obj.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    test = data.batch(list(range(n_test)))
    return net, evaluate_pixel_oracle(net, test["image"], test["label_map"], test["factors"], data.factor_names)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of boolean masks [B, H, W] (1 when both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def evaluate_pixel_oracle(net: PixelOracle, images: torch.Tensor, label_map: torch.Tensor, factors: torch.Tensor,
                          factor_names: Sequence[str]) -> dict[str, Any]:
    """Held-out pixel accuracy, object-mask IoU, shape-class and colour-class accuracy on rendered images."""
    r = net.read(images)
    n_shapes = len(net.config.label_names) - 2
    true_mask = (label_map >= 1) & (label_map <= n_shapes)
    names = list(factor_names)
    return {"pixel_accuracy": float((r["label_map"] == label_map).float().mean()),
            "mask_iou": float(mask_iou(r["mask"], true_mask).mean()),
            "shape_accuracy": float((r["shape"] == factors[:, names.index("shape")].long()).float().mean()),
            "color_accuracy": float((r["color"] == factors[:, names.index("color")].long()).float().mean()),
            "n": int(images.shape[0])}


def save_pixel_oracle(net: PixelOracle, path: str | Path, report: dict[str, Any] | None = None) -> Path:
    meta = {"format": PIXEL_FORMAT, "config": net.config.to_dict(), "report": report or {}}
    return save_module(net, path, PIXEL_CONFIG_FILE, PIXEL_WEIGHTS_FILE, meta)


def load_pixel_oracle(path: str | Path, map_location: str | torch.device = "cpu") -> PixelOracle:
    meta = read_module_meta(path, PIXEL_CONFIG_FILE, PIXEL_FORMAT, "hdae_core.oracle")
    return load_module_weights(PixelOracle(PixelOracleConfig.from_dict(meta["config"])), path, PIXEL_WEIGHTS_FILE,
                               map_location).eval().requires_grad_(False)
