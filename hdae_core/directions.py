"""Attribute directions: one linear classifier direction [L, D] per attribute over standardised codes.

One format for directions trained here (``editing.train_classifiers``) and imported from DiffAE
(``diffae_import.import_classifier``): ``directions.safetensors`` + ``directions.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .stats import LatentStats

DIRECTIONS_FILE = "directions.safetensors"
DIRECTIONS_JSON = "directions.json"
DIRECTIONS_FORMAT = "hdae-directions"


@dataclass
class AttributeDirections:
    """Linear attribute classifiers over standardised codes: one direction [L, D] per name.

    Unpacks as ``(directions, names, stats)``; ``bias`` [K] holds the classifiers' biases.
    """

    directions: dict[str, torch.Tensor]
    names: list[str]
    stats: LatentStats
    bias: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.directions, self.names, self.stats))

    @property
    def weight(self) -> torch.Tensor:
        """All directions stacked in ``names`` order: [K, L, D]."""
        return torch.stack([self.directions[n] for n in self.names])

    def save(self, folder: str | Path) -> Path:
        """Write ``directions.safetensors`` (directions, bias, the statistics they assume) + ``directions.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"directions": self.weight.contiguous(), "bias": self.bias.detach().contiguous(),
                   "stats_mean": self.stats.mean.contiguous(), "stats_std": self.stats.std.contiguous()}
        save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(folder / DIRECTIONS_FILE),
                  metadata={"format": DIRECTIONS_FORMAT})
        meta = {"format": DIRECTIONS_FORMAT, "names": list(self.names), "shape": list(self.weight.shape),
                "space": "standardized", **self.meta}
        (folder / DIRECTIONS_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder / DIRECTIONS_FILE

    @classmethod
    def load(cls, folder: str | Path) -> "AttributeDirections":
        folder = Path(folder)
        file, meta_file = folder / DIRECTIONS_FILE, folder / DIRECTIONS_JSON
        if not file.is_file() or not meta_file.is_file():
            raise FileNotFoundError(f"{folder}: no {DIRECTIONS_FILE} + {DIRECTIONS_JSON} here (written by AttributeDirections.save or import-diffae --classifier)")
        t = load_file(str(file))
        meta = json.loads(meta_file.read_text())
        names = list(meta.get("names", []))
        if set(t) != {"directions", "bias", "stats_mean", "stats_std"} or len(names) != t["directions"].shape[0]:
            raise ValueError(f"{folder}: {DIRECTIONS_FILE} and {DIRECTIONS_JSON} do not describe the same "
                             f"{len(names)} directions (tensors {sorted(t)})")
        extra = {k: v for k, v in meta.items() if k not in ("format", "names", "shape", "space")}
        return cls(dict(zip(names, t["directions"].unbind(0))), names,
                   LatentStats(t["stats_mean"], t["stats_std"]), t["bias"], extra)


def load_directions(folder: str | Path) -> AttributeDirections:
    """Directions written by ``AttributeDirections.save`` (``import_diffae_folder`` included)."""
    return AttributeDirections.load(folder)
