"""Layout encoder: semantic label map → high-level codes, for multi-modal synthesis (HDAE §4.5, Fig. 11)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import cache, diffusion, editing
from .checkpoint import load_module_weights, read_module_meta, save_module
from .config import JsonConfig
from .metrics import r2_score
from .model import encode_dataset
from .nn import conv_block
from .oracle import mask_iou
from .stats import LatentStats

FORMAT = "hdae-layout-encoder"
CONFIG_FILE = "layout_config.json"
WEIGHTS_FILE = "layout.safetensors"
SHIPPED_DIR = "layout_encoder"  # beside a shipped checkpoint: the layout encoder 08_layout trains, with its identity


def default_levels(num_levels: int) -> list[int]:
    """The coarser half of the hierarchy, ceil(L/2) levels ending at z^L (0-based indices; [0] when L = 1)."""
    k = math.ceil(num_levels / 2)
    return list(range(num_levels - k, num_levels))


def layout_levels(levels: Sequence[int] | int | None, num_levels: int) -> list[int]:
    """The levels a layout encoder predicts: ``editing.check_levels``'s rules, at least one (None: the default)."""
    if levels is None:
        return default_levels(num_levels)
    out = editing.check_levels(levels, num_levels)
    if not out:
        raise ValueError(f"levels: need at least one level index in 0..{num_levels - 1}")
    return out


@dataclass(frozen=True)
class LayoutConfig(JsonConfig):
    """The layout CNN: label maps with ``num_classes`` labels → codes of ``levels`` (each ``code_dim`` wide)."""

    num_classes: int = 6  # Shapes: background, 4 shapes, clutter
    num_levels: int = 2  # L of the autoencoder whose codes are regressed
    levels: tuple[int, ...] = (1,)
    code_dim: int = 512
    channels: int = 32
    grid: int = 4  # features are pooled to grid × grid, so where things are survives pooling

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(sorted(layout_levels(self.levels, self.num_levels))))
        if self.num_classes < 2:
            raise ValueError(f"LayoutConfig: num_classes must be at least 2, got {self.num_classes}")



class LayoutEncoder(nn.Module):
    """A small CNN: label map [B, H, W] → codes [B, len(levels), D] of those levels (HDAE Fig. 11)."""

    def __init__(self, config: LayoutConfig):
        super().__init__()
        self.config = config
        c, k = config.channels, len(config.levels)
        self.features = nn.Sequential(
            conv_block(config.num_classes, c, 1), conv_block(c, c, 1),
            conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c, 1),
            conv_block(2 * c, 2 * c, 2),
            nn.AdaptiveAvgPool2d(config.grid),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * c * config.grid**2, 4 * c), nn.SiLU(), nn.Linear(4 * c, k * config.code_dim)
        )
        # the regression target is the standardised code; these map it back to the encoder's scale
        self.register_buffer("code_mean", torch.zeros(k, config.code_dim))
        self.register_buffer("code_std", torch.ones(k, config.code_dim))

    @property
    def levels(self) -> list[int]:
        return list(self.config.levels)

    def _onehot(self, label_map: torch.Tensor) -> torch.Tensor:
        if label_map.dim() != 3 or label_map.dtype.is_floating_point:
            raise ValueError(f"label_map: expected integer labels [B, H, W], got {label_map.dtype} {list(label_map.shape)}")
        n = self.config.num_classes
        if label_map.numel() and (int(label_map.min()) < 0 or int(label_map.max()) >= n):
            raise ValueError(f"label_map: labels must lie in 0..{n - 1}, got {int(label_map.min())}..{int(label_map.max())}")
        dtype = self.code_mean.dtype
        return F.one_hot(label_map.long(), n).permute(0, 3, 1, 2).to(dtype)

    def forward_standardized(self, label_map: torch.Tensor) -> torch.Tensor:
        """Standardised codes [B, K, D] of the chosen levels (the training target's scale)."""
        h = self.head(self.features(self._onehot(label_map)))
        return h.reshape(h.shape[0], len(self.config.levels), self.config.code_dim)

    def forward(self, label_map: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, D] of the chosen levels on the autoencoder's scale."""
        return self.forward_standardized(label_map) * self.code_std + self.code_mean


def compose_codes(layout_codes: torch.Tensor, image_codes: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Codes [B, L, D]: the layout's codes at ``levels``, the image's everywhere else (HDAE Fig. 11)."""
    if image_codes.dim() != 3 or layout_codes.dim() != 3:
        raise ValueError(f"expected layout codes [B, K, D] and image codes [B, L, D], got "
                         f"{list(layout_codes.shape)} and {list(image_codes.shape)}")
    levels = layout_levels(levels, image_codes.shape[1])
    if layout_codes.shape[1:] != (len(levels), image_codes.shape[2]):
        raise ValueError(f"layout codes {list(layout_codes.shape)} do not fit levels {levels} of codes "
                         f"{list(image_codes.shape)}: expected [B, {len(levels)}, {image_codes.shape[2]}]")
    # the layout's K levels placed in a full code, so composing is style mixing with the layout as partner
    partner = image_codes[:1].expand(layout_codes.shape[0], -1, -1).clone()
    partner[:, levels] = layout_codes.to(partner)
    try:
        return editing.mix_levels(image_codes, partner, levels)
    except ValueError:
        raise ValueError(f"batch sizes {layout_codes.shape[0]} and {image_codes.shape[0]} differ and neither is 1") from None


def label_maps(dataset, n: int, chunk: int = 256) -> torch.Tensor:
    """Label maps [n, H, W] (long) of items 0..n-1: Shapes renders a batch at once; other data sets item by item."""
    out = []
    for s in range(0, n, chunk):
        idx = list(range(s, min(s + chunk, n)))
        if hasattr(dataset, "batch"):
            out.append(torch.as_tensor(dataset.batch(idx)["label_map"]).long())
            continue
        items = [dataset[i] for i in idx]
        if not isinstance(items[0], dict) or "label_map" not in items[0]:
            raise ValueError("dataset items must be dicts with 'image' and 'label_map' (as Shapes gives)")
        out.append(torch.stack([torch.as_tensor(it["label_map"]) for it in items]).long())
    return torch.cat(out)


def train_layout_encoder(model, dataset, levels: Sequence[int] | None = None, n_images: int = 4096,
                         steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                         progress: bool = True, holdout: float = 0.2, channels: int = 32,
                         num_classes: int | None = None) -> tuple[LayoutEncoder, dict[str, Any]]:
    """Regress the frozen encoder's standardised codes of ``levels`` from label maps (MSE); returns (encoder, report)."""
    L = model.num_levels
    levels = sorted(layout_levels(levels, L))
    size = getattr(dataset, "size", None)
    if size is not None and size != model.config.image_size:
        raise ValueError(f"dataset renders {size} px images but the model takes {model.config.image_size} px")
    if num_classes is None:
        names = getattr(dataset, "label_names", None)
        num_classes = len(names) if names is not None else 6
    n_images = min(int(n_images), len(dataset))
    n_held = max(1, int(round(holdout * n_images)))
    if n_images - n_held < 2:
        raise ValueError(f"n_images={n_images} leaves too few training images after holding out {n_held}")

    device = next(model.parameters()).device
    codes = encode_dataset(model, dataset, n=n_images, batch_size=256, with_attributes=False,
                           progress=False)["codes"].to(device)
    labels = label_maps(dataset, n_images).to(device)
    n_train = n_images - n_held
    # statistics from the training images only, so the held-out score is honest
    stats = LatentStats.from_codes(codes[:n_train])
    target = stats.standardize(codes)[:, levels]
    cfg = LayoutConfig(num_classes=num_classes, num_levels=L, levels=tuple(levels),
                       code_dim=model.code_dim, channels=channels)

    torch.manual_seed(seed)
    enc = LayoutEncoder(cfg).to(codes.device)
    enc.code_mean.copy_(stats.mean[levels])
    enc.code_std.copy_(stats.std[levels])
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    g = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def evaluate(sl: slice) -> tuple[float, float]:
        enc.eval()
        pred = torch.cat([enc.forward_standardized(labels[sl][i:i + 512]) for i in range(0, len(labels[sl]), 512)])
        enc.train()
        return float(F.mse_loss(pred, target[sl])), r2_score(pred, target[sl])

    train_sl, held_sl = slice(0, n_train), slice(n_train, n_images)
    init_mse, _ = evaluate(held_sl)
    it = range(steps)
    if progress:
        it = tqdm(it, desc="layout encoder", leave=False)
    enc.train()
    for _ in it:
        idx = torch.randint(0, n_train, (min(batch_size, n_train),), generator=g).to(codes.device)
        loss = F.mse_loss(enc.forward_standardized(labels[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    train_mse, train_r2 = evaluate(train_sl)
    held_mse, held_r2 = evaluate(held_sl)
    enc.eval().requires_grad_(False)
    report = {
        "levels": levels, "n_train": n_train, "n_heldout": n_held, "steps": steps,
        "initial_heldout_mse": init_mse,
        "train_mse": train_mse, "heldout_mse": held_mse,
        "train_r2": train_r2, "heldout_r2": held_r2,
    }
    return enc, report


def _broadcast_batch(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> int:
    na, nb = a.shape[0], b.shape[0]
    if na != nb and 1 not in (na, nb):
        raise ValueError(f"{names[0]} has batch {na} and {names[1]} batch {nb}: they must match or one must be 1")
    return max(na, nb)


@torch.no_grad()
def synthesize(model, layout_encoder: LayoutEncoder, label_map: torch.Tensor, image: torch.Tensor,
               steps: int = 50, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
               progress: bool = False) -> torch.Tensor:
    """Decode the layout's high-level codes with an image's low-level codes (multi-modal synthesis, Fig. 11)."""
    b = _broadcast_batch(label_map, image, ("label_map", "image"))
    p = next(model.parameters())
    codes = compose_codes(layout_encoder(label_map.to(p.device)).to(p), model.encode(image.to(p)), layout_encoder.levels)
    codes = codes.expand(b, -1, -1)
    if x_T is None:
        c = model.config
        x_T = diffusion.randn((b, c.in_channels, c.image_size, c.image_size), generator, p.device, p.dtype)
    return model.decode(x_T, codes, steps, progress=progress)


def save(layout_encoder: LayoutEncoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path/layout_config.json`` + ``layout.safetensors`` (the code statistics are buffers in it)."""
    meta = {"format": FORMAT, "config": layout_encoder.config.to_dict(), "extra": extra or {}}
    return save_module(layout_encoder, path, CONFIG_FILE, WEIGHTS_FILE, meta)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> LayoutEncoder:
    """Rebuild a layout encoder written by ``save``."""
    return load_with_fit(path, map_location)[0]


def load_with_fit(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LayoutEncoder, dict[str, Any]]:
    """(layout encoder, the training report ``save`` recorded beside it), rebuilt from a folder ``save`` wrote."""
    meta = read_module_meta(path, CONFIG_FILE, FORMAT, "hdae_core.layout")
    enc = load_module_weights(LayoutEncoder(LayoutConfig.from_dict(meta["config"])), path, WEIGHTS_FILE, map_location)
    return enc, dict(meta.get("extra") or {})


def study_identity(model, world, **train: Any) -> dict[str, Any]:
    """What a study's layout encoder depends on (a shipped or cached one is used only when all of it matches):
    the autoencoder's weights, the world it learns from (size, seed, correlations) and the training parameters."""
    pairs = [list(p) for p in getattr(world, "correlated_pairs", [])]
    return {"kind": "layout_encoder", "model": cache.model_identity(model),
            "world": {"source": type(world).__name__, "size": int(world.size), "seed": int(world.seed),
                      "correlated_pairs": pairs},
            **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(train.items())}}


def for_study(model, world, shipped: str | Path | None, cache_dir: str | Path, refit: bool = False,
              **train: Any) -> tuple[LayoutEncoder, dict[str, Any], str]:
    """The layout encoder of a study (08): the one shipped in ``shipped`` (read only) when its recorded identity
    matches, else the cache entry ``cache_dir`` when it matches, else trained (``train_layout_encoder`` with
    ``train``: levels, n_images, steps, batch_size, seed) and cached there. Returns (encoder, report, where)."""
    (enc, fit), where = cache.shipped_or_fetch(shipped, cache_dir, study_identity(model, world, **train),
                                               lambda: train_layout_encoder(model, world, progress=False, **train),
                                               lambda v, folder: save(v[0], folder, extra=v[1]), load_with_fit,
                                               "layout encoder", refit=refit)
    return enc, fit, where


def control_agreement(probs: torch.Tensor, layout_attributes: torch.Tensor, image_attributes: torch.Tensor,
                      names: Sequence[str], groups: dict[str, Sequence[str]]) -> dict[str, float]:
    """How often images synthesised from (layout i, image j) show layout i's factor rather than image j's.

    ``probs`` [n_layouts, n_images, A] are an oracle's attribute probabilities of the synthesised images,
    ``layout_attributes`` [n_layouts, A] and ``image_attributes`` [n_images, A] the true 0/1 attributes.
    A group of several attributes is one categorical factor (compared by argmax, e.g. the shape class), a group
    of one a binary factor (compared at 0.5). Returns ``<group>_matches_layout`` / ``<group>_matches_image``.
    """
    n_layouts, n_images = probs.shape[:2]
    out = {}
    for group, attrs in groups.items():
        idx = [list(names).index(a) for a in attrs]
        p, lay, img = probs[..., idx], layout_attributes[:, idx], image_attributes[:, idx]
        if len(idx) > 1:
            pred, lay, img = p.argmax(-1), lay.argmax(-1)[:, None], img.argmax(-1)[None, :]
        else:
            pred, lay, img = p[..., 0] > 0.5, lay[:, None, 0] > 0.5, img[None, :, 0] > 0.5
        out[f"{group}_matches_layout"] = float((pred == lay.expand(n_layouts, n_images)).float().mean())
        out[f"{group}_matches_image"] = float((pred == img.expand(n_layouts, n_images)).float().mean())
    return out


@torch.no_grad()
def layout_scores(pixel_oracle, synth: torch.Tensor, layout_maps: torch.Tensor, layout_factors: torch.Tensor,
                  image_factors: torch.Tensor, factor_names: Sequence[str], seed: int = 0,
                  attribute_oracle=None) -> dict[str, Any]:
    """Does synthesis follow the layout? Per pair i (layout i, style image i): IoU of the decoded object's mask
    (read by ``pixel_oracle``) with the layout's object mask, beside a random layout's mask (another pair's);
    the decoded shape class against the layout's (argmax of ``attribute_oracle``'s ``is_<shape>`` outputs when
    given, else the pixel oracle's vote), the colour class against the style image's."""
    r = pixel_oracle.read(synth)
    n_shapes = len(pixel_oracle.config.label_names) - 2
    lay_mask = (layout_maps >= 1) & (layout_maps <= n_shapes)
    perm = torch.randperm(len(synth), generator=torch.Generator().manual_seed(seed))
    perm = torch.where(perm == torch.arange(len(perm)), (perm + 1) % len(perm), perm)  # never its own layout
    names = list(factor_names)
    shape_i, color_i = names.index("shape"), names.index("color")
    shape = layout_factors[:, shape_i].long()
    out = {"iou": mask_iou(r["mask"], lay_mask), "iou_random_layout": mask_iou(r["mask"], lay_mask[perm]),
           "shape_matches_layout": (r["shape"] == shape).float(),
           "color_matches_image": (r["color"] == image_factors[:, color_i].long()).float(),
           "shape_read_by": "pixel oracle", "read": r}
    if attribute_oracle is not None:
        # the pixel oracle votes per pixel, where a star and a square look alike; the attribute oracle sees the
        # whole outline (on rendered shapes it reads the class far better)
        shapes = pixel_oracle.config.label_names[1:1 + n_shapes]
        idx = [list(attribute_oracle.attribute_names).index(f"is_{s}") for s in shapes]
        read = attribute_oracle.predict_proba(synth)[:, idx].argmax(1).cpu()
        out.update(shape_matches_layout=(read == shape).float(), shape_matches_layout_pixel=out["shape_matches_layout"],
                   shape_read_by="attribute oracle")
        r["shape_attribute_oracle"] = read
    return out


def outline(images: torch.Tensor, mask: torch.Tensor, color=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Images [B, 3, H, W] with the boundary pixels of boolean masks [B, H, W] painted ``color`` (in [-1, 1])."""
    m = mask[:, None].float()
    inner = -F.max_pool2d(-m, 3, stride=1, padding=1)  # erosion
    edge = (m - inner).bool().expand_as(images)
    out = images.clone()
    fill = torch.tensor(color, dtype=images.dtype).view(1, 3, 1, 1).expand_as(images)
    out[edge] = fill[edge]
    return out
