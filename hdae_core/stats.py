"""Per-dimension latent statistics: codes are standardised as (z − μ) / σ before editing (DiffAE §4)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATS_FILE = "latent_stats.safetensors"
STATS_JSON = "latent_stats.json"
FORMAT = "hdae-latent-stats"


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(tensor file, JSON file) for a folder or a ``*.safetensors`` file path."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    return path / STATS_FILE, path / STATS_JSON


@dataclass
class LatentStats:
    """Mean and std of the codes, each shaped like one code [L, D]."""

    mean: torch.Tensor
    std: torch.Tensor
    n: int | None = None  # how many codes they were computed from, when known

    def __post_init__(self):
        if self.mean.dim() != 2 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"LatentStats: mean and std must both be shaped like one code [L, D], "
                f"got {list(self.mean.shape)} and {list(self.std.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """[L, D] of the codes these statistics describe."""
        return tuple(self.mean.shape)

    def _check(self, codes: torch.Tensor, name: str = "codes") -> None:
        if codes.dim() < 2 or tuple(codes.shape[-2:]) != self.shape:
            raise ValueError(
                f"{name}: statistics are for codes [L, D] = {list(self.shape)}, got {list(codes.shape)} "
                f"(expected [B, {self.shape[0]}, {self.shape[1]}])"
            )

    def standardize(self, codes: torch.Tensor) -> torch.Tensor:
        """(z − μ) / σ for codes [B, L, D] (DiffAE's ``normalize``, same arithmetic)."""
        self._check(codes)
        return (codes - self.mean.to(codes)) / self.std.to(codes)

    def destandardize(self, z: torch.Tensor) -> torch.Tensor:
        """z·σ + μ, the inverse of ``standardize`` (DiffAE's ``denormalize``)."""
        self._check(z, "standardized codes")
        return z * self.std.to(z) + self.mean.to(z)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, min_std: float = 1e-8) -> "LatentStats":
        """Statistics of codes [N, L, D]: mean and unbiased std over N (as DiffAE), σ floored at ``min_std``."""
        if codes.dim() != 3 or codes.shape[0] < 2:
            raise ValueError(f"codes: expected [N, L, D] with N >= 2, got {list(codes.shape)}")
        c = codes.detach().float()
        return cls(c.mean(dim=0), c.std(dim=0).clamp_min(min_std), n=int(codes.shape[0]))

    def to(self, *args, **kwargs) -> "LatentStats":
        return LatentStats(self.mean.to(*args, **kwargs), self.std.to(*args, **kwargs), self.n)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``latent_stats.safetensors`` + ``latent_stats.json`` into a folder (or to ``*.safetensors`` + ``*.json``)."""
        file, meta_file = _paths(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.detach().cpu().contiguous(), "std": self.std.detach().cpu().contiguous()},
                  str(file), metadata={"format": FORMAT})
        meta = {"format": FORMAT, "shape": list(self.shape), "n": self.n, **(extra or {})}
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return file

    @classmethod
    def load(cls, path: str | Path) -> "LatentStats":
        """Read statistics written by ``save`` from a folder or a ``*.safetensors`` file."""
        file, meta_file = _paths(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no latent statistics here (expected {STATS_FILE} from LatentStats.save)")
        t = load_file(str(file))
        if set(t) != {"mean", "std"}:
            raise ValueError(f"{file}: expected tensors 'mean' and 'std', found {sorted(t)}")
        n = None
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            n = meta.get("n")
            if list(meta.get("shape", t["mean"].shape)) != list(t["mean"].shape):
                raise ValueError(f"{meta_file}: shape {meta['shape']} disagrees with {file} ({list(t['mean'].shape)})")
        return cls(t["mean"], t["std"], n=n)
