"""Scoring edits on real data: a classifier-based stand-in for the Shapes attribute oracle.

Where no oracle knows the ground truth, edited images are re-encoded and read by linear attribute
classifiers fitted on the *judge* split, images the edit directions never saw.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .directions import AttributeDirections, train_directions
from .model import encode_dataset

__all__ = ["CodeJudge", "fit_judge"]


class CodeJudge(torch.nn.Module):
    """Reads binary attributes off images through the model's encoder and linear classifiers: a classifier-based
    stand-in for the Shapes oracle on real data (``predict_proba(images)`` = σ(w·standardise(Enc(x)) + b))."""

    def __init__(self, model, classifiers: AttributeDirections, names: Sequence[str] | None = None):
        super().__init__()
        self.model = model
        self.classifiers = classifiers
        self.attribute_names = list(names if names is not None else classifiers.names)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        p = next(self.model.parameters())
        cl = self.classifiers
        w = torch.stack([cl.directions[n].flatten() for n in self.attribute_names]).float()
        b = torch.tensor([float(cl.bias[cl.names.index(n)]) for n in self.attribute_names])
        out = []
        for i in range(0, images.shape[0], batch_size):
            codes = self.model.encode(images[i:i + batch_size].to(p)).float().cpu()
            out.append(torch.sigmoid(cl.stats.standardize(codes).flatten(1) @ w.T + b))
        return torch.cat(out)


def fit_judge(model, src, n_encode: int = 3000, C: float = 1.0, seed: int = 0,
              batch_size: int = 64) -> tuple[CodeJudge, dict[str, Any]]:
    """The classifier-based edit scorer for real data: linear classifiers on ``model``'s codes of the judge split
    (images the directions never saw), read off re-encoded edits; (judge, its held-out quality)."""
    n = src.take(n_encode, "judge", "codes for the edit-scoring classifiers")
    enc = encode_dataset(model, src.split("judge"), n=n, batch_size=batch_size, progress=False)
    binary = src.binary_attributes()
    cols = [src.attribute_names.index(b) for b in binary]
    clf = train_directions(enc["codes"], enc["attributes"][:, cols], binary, C=C, seed=seed)
    auroc = {k: v.get("auroc") for k, v in clf.meta["report"].items()}
    known = [v for v in auroc.values() if v is not None]
    info = {"scorer": "classifier-based", "n_codes": n, "attributes": list(clf.names),
            "skipped": clf.meta.get("skipped", {}), "heldout_auroc": auroc,
            "mean_heldout_auroc": float(np.mean(known)) if known else float("nan")}
    return CodeJudge(model, clf), info
