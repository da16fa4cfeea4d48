"""Attribute directions: one linear classifier direction [L, D] per attribute over standardised codes.

One format for directions fitted here and imported from DiffAE (``diffae_import.import_classifier``):
``directions.safetensors`` + ``directions.json``. Fitting (HDAE §3.3): a logistic regression per binary
attribute (a ridge regression per continuous one) on the standardised, flattened codes (D·L inputs);
its weight n is the edit direction. ``directions_for`` is the studies' one way to get them: loaded from a
cache entry fitted on the same model and data (``hdae_core.cache``), imported with the checkpoint, or fitted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import cache
from .editing import check_codes
from .metrics import auroc_ci
from .model import encode_dataset
from .stats import LatentStats

__all__ = ["AttributeDirections", "AttributeClassifiers", "load_directions", "load_classifiers",
           "train_classifiers", "train_directions", "direction_scores", "directions_for"]

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


class AttributeClassifiers(AttributeDirections):
    """Linear attribute classifiers on standardised flattened codes; ``direction(name)`` is the weight n as [L, D].

    An ``AttributeDirections`` (same save/load format) whose ``meta['report']`` holds held-out scores.
    """

    @property
    def auroc(self) -> dict[str, float]:
        """Held-out AUROC per attribute (NaN when the held-out split has one class only)."""
        rep = self.meta.get("report", {})
        return {n: _nan(rep.get(n, {}).get("auroc")) for n in self.names}

    def report(self):
        """A pandas DataFrame, one row per attribute: held-out AUROC, balanced accuracy, positive rate, sizes."""
        rep = self.meta.get("report", {})
        rows = [{"attribute": n, **{k: _nan(v) if k in ("auroc", "balanced_accuracy") else v
                                    for k, v in rep.get(n, {}).items()}} for n in self.names]
        return pd.DataFrame(rows).set_index("attribute")

    def direction(self, name: str) -> torch.Tensor:
        """The classifier weight n for ``name``, shaped like one code [L, D] (standardised space)."""
        if name not in self.directions:
            raise KeyError(f"no classifier for {name!r}; trained for {self.names}")
        return self.directions[name]

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] (order ``names``) of raw codes [B, L, D]: w·standardize(z) + b."""
        check_codes(codes)
        z = self.stats.standardize(codes.float()).flatten(1)
        return z @ self.weight.flatten(1).to(z).T + self.bias.to(z)


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def _design(codes: torch.Tensor, stats: LatentStats | None, test_fraction: float, seed: int):
    """(X, train rows, test rows, stats): standardised flattened codes [N, L·D] (float64) and one random split.

    ``stats`` defaults to the statistics of all the codes (label-free, so nothing leaks into the held-out score)."""
    N, L, D = codes.shape
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in [0, 1), got {test_fraction}")
    stats = LatentStats.from_codes(codes) if stats is None else stats
    if tuple(stats.shape) != (L, D):
        raise ValueError(f"stats: statistics are for codes [L, D] = {list(stats.shape)}, but the codes are "
                         f"[{N}, {L}, {D}] (statistics of another model?)")
    X = stats.standardize(codes.detach().float().cpu()).flatten(1).double().numpy()
    perm = np.random.default_rng(seed).permutation(N)
    n_test = int(round(N * test_fraction))
    return X, perm[n_test:], perm[:n_test], stats


def train_classifiers(codes: torch.Tensor, attributes, names: Sequence[str] | None = None,
                      stats: LatentStats | None = None, test_fraction: float = 0.2, seed: int = 0,
                      C: float = 1.0, max_iter: int = 2000, progress: bool = False) -> AttributeClassifiers:
    """One logistic regression per attribute on standardised flattened codes (HDAE §3.3); held-out AUROC per attribute.

    ``stats`` defaults to the statistics of all the codes (label-free, so no leakage into the score).
    Classes are balanced (CelebA attributes are far from 50/50); one random split (``seed``) serves all attributes.
    """
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn takes ~2 s to import, needed only here
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    check_codes(codes)
    N, L, D = codes.shape
    y_all = torch.as_tensor(attributes).detach().cpu().numpy()
    if y_all.ndim == 1:
        y_all = y_all[:, None]
    if y_all.ndim != 2 or y_all.shape[0] != N:
        raise ValueError(f"attributes: expected [N, K] with N={N} (one row per code), got {list(y_all.shape)}")
    K = y_all.shape[1]
    names = [f"attr{i}" for i in range(K)] if names is None else list(names)
    if len(names) != K:
        raise ValueError(f"names: {len(names)} names for {K} attribute columns")
    if len(set(names)) != K:
        raise ValueError(f"names: duplicates in {names}")
    X, train, test, stats = _design(codes, stats, test_fraction, seed)
    n_test = len(test)
    y_all = (y_all > 0.5).astype(np.int64)
    weights, biases, report = {}, [], {}
    it = list(enumerate(names))
    if progress:
        it = tqdm(it, desc="classifiers", leave=False)
    for j, name in it:
        y = y_all[:, j]
        counts = np.bincount(y[train], minlength=2)
        if counts.min() == 0:
            raise ValueError(f"attribute {name!r}: the training split has only one class "
                             f"({counts[0]} negatives, {counts[1]} positives); cannot train a classifier")
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter)
        clf.fit(X[train], y[train])
        weights[name] = torch.from_numpy(clf.coef_[0]).float().reshape(L, D)
        biases.append(float(clf.intercept_[0]))
        auroc = bacc = lo = hi = None
        if n_test and len(np.unique(y[test])) == 2:
            score = clf.decision_function(X[test])
            auroc = float(roc_auc_score(y[test], score))
            _, lo, hi = auroc_ci(y[test], score, seed=seed)  # bootstrap over the held-out split
            bacc = float(balanced_accuracy_score(y[test], clf.predict(X[test])))
        report[name] = {"auroc": auroc, "auroc_low": lo, "auroc_high": hi, "balanced_accuracy": bacc,
                        "positive_rate": float(y.mean()), "n_train": int(len(train)), "n_test": int(n_test)}
    meta = {"classifier": "sklearn LogisticRegression", "C": C, "class_weight": "balanced",
            "test_fraction": test_fraction, "seed": seed, "report": report}
    return AttributeClassifiers(weights, names, stats, torch.tensor(biases), meta)


def load_classifiers(folder: str | Path) -> AttributeClassifiers:
    """Classifiers written by ``AttributeClassifiers.save`` (or any directions folder) as AttributeClassifiers."""
    return AttributeClassifiers.load(folder)


def train_directions(codes: torch.Tensor, attributes, names: Sequence[str], kinds: dict[str, str] | None = None,
                     stats: LatentStats | None = None, test_fraction: float = 0.2, seed: int = 0, C: float = 1.0,
                     ridge: float = 1.0) -> AttributeClassifiers:
    """Directions for every column: logistic (HDAE §3.3) for binary ones, ridge regression for continuous ones.

    A continuous attribute (an angle, an age) gets the weight of a linear regression of its standardised
    value on the standardised codes; its held-out score is R² (``meta['report'][name]['r2']``). Binary columns
    whose training split holds one class only are left out and listed in ``meta['skipped']``.
    """
    from sklearn.linear_model import Ridge  # lazy: scikit-learn takes ~2 s to import, needed only here
    from sklearn.metrics import r2_score

    check_codes(codes)
    N, L, D = codes.shape
    y = torch.as_tensor(attributes).detach().double().cpu().numpy().reshape(N, -1)
    names = list(names)
    kinds = kinds or {}
    if y.shape[1] != len(names):
        raise ValueError(f"names: {len(names)} names for {y.shape[1]} attribute columns")
    X, train, test, stats = _design(codes, stats, test_fraction, seed)
    n_test = len(test)
    skipped, binary, continuous = {}, [], []
    for j, n in enumerate(names):
        if kinds.get(n, "binary") == "continuous":
            continuous.append(j)
            continue
        counts = np.bincount((y[train, j] > 0.5).astype(np.int64), minlength=2)
        if counts.min() < 2:
            skipped[n] = f"{counts[1]} positive and {counts[0]} negative training images: too few of one class"
        else:
            binary.append(j)
    weights, bias, report = {}, {}, {}
    if binary:
        clf = train_classifiers(codes, y[:, binary], [names[j] for j in binary], stats=stats,
                                test_fraction=test_fraction, seed=seed, C=C)
        for n in clf.names:
            weights[n], bias[n] = clf.directions[n], float(clf.bias[clf.names.index(n)])
            report[n] = {"kind": "binary", **clf.meta["report"][n]}
    for j in continuous:
        t = y[:, j]
        mu, sd = t[train].mean(), t[train].std() or 1.0
        reg = Ridge(alpha=ridge).fit(X[train], (t[train] - mu) / sd)
        weights[names[j]] = torch.from_numpy(reg.coef_).float().reshape(L, D)
        bias[names[j]] = float(reg.intercept_)
        r2 = float(r2_score((t[test] - mu) / sd, reg.predict(X[test]))) if n_test > 1 else None
        report[names[j]] = {"kind": "continuous", "r2": r2, "auroc": None, "mean": float(mu), "std": float(sd),
                            "n_train": int(len(train)), "n_test": int(n_test)}
    kept = [n for n in names if n in weights]
    if not kept:
        raise ValueError(f"no attribute could be fitted: {skipped}")
    meta = {"classifier": "logistic (binary) / ridge regression (continuous)", "C": C, "ridge": ridge,
            "test_fraction": test_fraction, "seed": seed, "report": report, "skipped": skipped}
    return AttributeClassifiers({n: weights[n] for n in kept}, kept, stats, torch.tensor([bias[n] for n in kept]),
                                meta)


def direction_scores(directions: AttributeDirections, codes: torch.Tensor, attributes, names: Sequence[str],
                     kinds: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """How well given directions (imported or trained elsewhere) read the labelled codes: AUROC or R² per shared name."""
    from sklearn.metrics import r2_score, roc_auc_score  # lazy: scikit-learn takes ~2 s to import, needed only here

    y = torch.as_tensor(attributes).double().cpu().numpy().reshape(codes.shape[0], -1)
    z = directions.stats.standardize(codes.float()).flatten(1)
    out = {}
    for j, n in enumerate(names):
        if n not in directions.directions:
            continue
        w = directions.directions[n].flatten().to(z)
        score = (z @ w + directions.bias[directions.names.index(n)].to(z)).double().numpy()
        if (kinds or {}).get(n) == "continuous":
            out[n] = {"r2": float(r2_score((y[:, j] - y[:, j].mean()) / (y[:, j].std() or 1), score))}
        elif len(np.unique(y[:, j] > 0.5)) == 2:
            out[n] = {"auroc": float(roc_auc_score(y[:, j] > 0.5, score))}
    return out


def _fit(model, src, n: int, C: float, seed: int, batch_size: int) -> AttributeClassifiers:
    enc = encode_dataset(model, src.split("train"), n=n, batch_size=batch_size, progress=False)
    return train_directions(enc["codes"], enc["attributes"], src.attribute_names, src.attribute_kinds, C=C, seed=seed)


def _imported(model, src, folder: Path, n_encode: int, batch_size: int) -> tuple[AttributeClassifiers, str]:
    shape = (model.num_levels, model.code_dim)
    clf = load_classifiers(folder)
    if tuple(clf.stats.shape) != shape:
        raise ValueError(f"{folder}: directions for codes {list(clf.stats.shape)}, the model's are {list(shape)}")
    where = f"directions imported from {folder} ({len(clf.names)} directions, not trained here)"
    if src.has_attributes:
        n = src.take(n_encode, "heldout", "codes scoring the imported directions")
        enc = encode_dataset(model, src.split("heldout"), n=n, batch_size=batch_size, progress=False)
        scores = direction_scores(clf, enc["codes"], enc["attributes"], src.attribute_names, src.attribute_kinds)
        clf.meta["report"] = {k: {"kind": src.attribute_kinds[k], "n_test": n, **v} for k, v in scores.items()}
        where += f"; scored on {n} held-out images for the {len(scores)} attributes the data shares"
    return clf, where


def directions_for(model, src, source: str = "auto", n_encode: int = 3000, C: float = 1.0, seed: int = 0,
                   batch_size: int = 64, cache_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                   refit: bool = False) -> tuple[AttributeClassifiers | None, str]:
    """(directions, where) for a study's data (``hdae_core.data.open_data``), or (None, why) when there are none.

    ``source``: "train" fits them on the training split's codes (``train_directions``: logistic for binary
    columns, ridge for continuous ones); "checkpoint" uses the imported ``directions.safetensors`` of the
    checkpoint folder ``checkpoint`` (``hdae import-diffae --classifier``), scored on the held-out split when
    the data has attributes; "auto" trains when the data has attributes, else uses the imported ones.
    ``cache_dir``: a cache entry (``hdae_core.cache``) for fitted directions, used only when it was fitted on
    this model's weights, the same data split and the same parameters; otherwise they are refitted there.
    """
    if source not in ("auto", "train", "checkpoint"):
        raise ValueError(f"directions source: expected auto, train or checkpoint, got {source!r}")
    imported = checkpoint is not None and (Path(checkpoint) / DIRECTIONS_FILE).is_file()
    if source == "checkpoint" or (source == "auto" and not src.has_attributes and imported):
        if not imported:
            return None, f"no imported {DIRECTIONS_FILE} in the checkpoint folder {checkpoint}"
        return _imported(model, src, Path(checkpoint), n_encode, batch_size)
    if not src.has_attributes:
        return None, ("no attributes to fit directions to: pass an attribute file (--attributes) or a checkpoint "
                      f"with imported {DIRECTIONS_FILE} (hdae import-diffae --classifier)")

    n = src.take(n_encode, "train", "codes for the directions")

    def fit() -> AttributeClassifiers:
        return _fit(model, src, n, C, seed, batch_size)

    if cache_dir is None:
        return fit(), f"directions fitted on {n} training codes"
    identity = {"kind": "directions", "model": cache.model_identity(model), "data": cache.data_identity(src, "train", n),
                "C": C, "seed": seed, "fit": "train_directions"}
    return cache.fetch(cache_dir, identity, fit, lambda clf, folder: clf.save(folder), load_classifiers,
                       "directions", refit=refit)
