"""Editing and hierarchy probes on codes [B, L, D]: classifiers, truncated directions, mixing, interpolation.

HDAE §3.3: a linear classifier per attribute on the standardised, flattened codes (D·L inputs)
gives an edit direction n; *truncated features* (Eq. 1–2) keep its k most important entries;
an edit moves the standardised code by α·√(D·L)·n′/‖n′‖ and decodes with the image's own x_T.
Level indices are 0-based (index 0 = z¹, the finest level; the paper's z^l is index l−1).
Directions are ``AttributeDirections`` (``hdae_core.directions``): one format for imported DiffAE
classifiers and the ones trained here, saved as ``directions.safetensors`` + ``directions.json``.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .directions import DIRECTIONS_FILE, AttributeDirections
from .metrics import auroc_ci
from .model import HDAE, inference, model_device
from .stats import LatentStats

__all__ = [
    "LatentStats", "AttributeDirections", "AttributeClassifiers", "encode_dataset", "train_classifiers",
    "load_classifiers", "load_or_train_classifiers", "train_directions", "direction_scores", "CodeJudge",
    "directions_for", "fit_judge", "score_table", "check_levels", "style_mix_labels", "normalized_weights", "truncate", "manipulate", "edit_images", "mix_levels",
    "style_mix_grid", "slerp", "interpolate", "interpolate_images",
]


# ---------------------------------------------------------------- helpers


def _check_codes(codes: torch.Tensor, name: str = "codes") -> None:
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        got = list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{name}: expected codes [B, L, D], got {got}")
    if not codes.is_floating_point():
        raise TypeError(f"{name}: expected floating-point codes, got {codes.dtype}")
    if not bool(torch.isfinite(codes).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_levels(levels: int | Iterable[int], num_levels: int, name: str = "levels") -> list[int]:
    """Validated, distinct 0-based level indices (an int or an iterable of ints), in the order given."""
    valid = f"0..{num_levels - 1} (0 = z¹, the finest; {num_levels - 1} = z^L, the coarsest)"
    if isinstance(levels, numbers.Integral):
        items = [levels]
    elif isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"{name}: expected a 0-based integer level index or a list of them, each in {valid}, "
                        f"got {type(levels).__name__} {levels!r}")
    else:
        items = list(levels)
    out = []
    for lv in items:
        if isinstance(lv, bool) or not isinstance(lv, numbers.Integral):
            raise ValueError(f"{name}: expected 0-based integer level indices in {valid}, got {lv!r}")
        if not 0 <= int(lv) < num_levels:
            raise ValueError(f"{name}: level {int(lv)} out of range; codes have L={num_levels} levels, "
                             f"valid indices are {valid}")
        out.append(int(lv))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {out}: indices must be distinct, each in {valid}")
    return out


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision codes are edited in float32 so the step's norm is exact to float32 precision
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- codes of a data set


def _batches(data, n: int, batch_size: int):
    """Yield dicts with 'image' (and 'attributes' when the data set has them) for items 0..n-1."""
    if isinstance(data, torch.Tensor):
        for i in range(0, n, batch_size):
            yield {"image": data[i:i + batch_size]}
        return
    if hasattr(data, "batch"):  # Shapes renders a whole batch in one vectorised call
        for i in range(0, n, batch_size):
            yield data.batch(range(i, min(i + batch_size, n)))
        return
    for b in DataLoader(Subset(data, range(n)), batch_size=batch_size, shuffle=False, num_workers=0):
        yield b if isinstance(b, dict) else {"image": b[0] if isinstance(b, (list, tuple)) else b}


def encode_dataset(model, data, n: int | None = None, batch_size: int = 64, with_attributes: bool = True,
                   progress: bool = True) -> dict[str, Any]:
    """Codes [N, L, D] (float32, CPU) of the first n items, with their attributes [N, K] when the data has them.

    ``data`` is an image tensor [N, C, H, W] in [-1, 1], a ``Shapes`` set or any data set whose items are
    dicts with ``image`` (and ``attributes``). ``attributes`` is None for plain images or with_attributes=False.
    """
    total = len(data)
    n = total if n is None else int(n)
    if not 1 <= n <= total:
        raise ValueError(f"n: expected 1..{total} (the data set's length), got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    device = model_device(model)
    codes, attrs = [], []
    bar = None
    if progress:
        bar = tqdm(total=n, desc="encode", unit="img", leave=False)
    with inference(model):
        for b in _batches(data, n, batch_size):
            x0 = b["image"].to(device=device, dtype=next(model.parameters()).dtype)
            codes.append(model.encode(x0).float().cpu())
            if with_attributes and b.get("attributes") is not None:
                attrs.append(torch.as_tensor(b["attributes"]).float().cpu())
            if bar is not None:
                bar.update(x0.shape[0])
    if bar is not None:
        bar.close()
    codes_t = torch.cat(codes)
    attributes = torch.cat(attrs) if with_attributes and attrs and len(attrs) == len(codes) else None
    return {"codes": codes_t, "attributes": attributes,
            "attribute_names": list(getattr(data, "attribute_names", []) or []) or None}


# ---------------------------------------------------------------- attribute classifiers


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
        _check_codes(codes)
        z = self.stats.standardize(codes.float()).flatten(1)
        return z @ self.weight.flatten(1).to(z).T + self.bias.to(z)


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def train_classifiers(codes: torch.Tensor, attributes, names: Sequence[str] | None = None,
                      stats: LatentStats | None = None, test_fraction: float = 0.2, seed: int = 0,
                      C: float = 1.0, max_iter: int = 2000, progress: bool = False) -> AttributeClassifiers:
    """One logistic regression per attribute on standardised flattened codes (HDAE §3.3); held-out AUROC per attribute.

    ``stats`` defaults to the statistics of all the codes (label-free, so no leakage into the score).
    Classes are balanced (CelebA attributes are far from 50/50); one random split (``seed``) serves all attributes.
    """
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn takes ~2 s to import, needed only here
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    _check_codes(codes)
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
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in [0, 1), got {test_fraction}")
    stats = LatentStats.from_codes(codes) if stats is None else stats
    if tuple(stats.shape) != (L, D):
        raise ValueError(f"stats: statistics are for codes [L, D] = {list(stats.shape)}, but the codes are "
                         f"[{N}, {L}, {D}] (statistics of another model?)")
    X = stats.standardize(codes.detach().float().cpu()).flatten(1).double().numpy()
    y_all = (y_all > 0.5).astype(np.int64)

    perm = np.random.default_rng(seed).permutation(N)
    n_test = int(round(N * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
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


def load_or_train_classifiers(model, folder: str | Path | None, data, n_encode: int = 3000, C: float = 1.0,
                              seed: int = 0) -> tuple[AttributeClassifiers, str]:
    """(classifiers, where): those saved in ``folder`` when they fit the model's codes, else fitted on ``n_encode``
    images of ``data``."""
    if folder is not None and (Path(folder) / "directions.json").is_file():
        clf = load_classifiers(folder)
        if tuple(clf.stats.shape) == (model.num_levels, model.code_dim):
            return clf, f"loaded from {folder}"
        why = f"{folder} holds classifiers for codes {tuple(clf.stats.shape)}, not this model's"
    else:
        why = f"no classifiers in {folder}"
    enc = encode_dataset(model, data, n=n_encode, progress=False)
    clf = train_classifiers(enc["codes"], enc["attributes"], names=data.attribute_names, C=C, seed=seed)
    return clf, f"{why}: fitted here on {n_encode} codes"


# ---------------------------------------------------------------- the user's attributes: binary and continuous


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

    _check_codes(codes)
    N, L, D = codes.shape
    y = torch.as_tensor(attributes).detach().double().cpu().numpy().reshape(N, -1)
    names = list(names)
    kinds = kinds or {}
    if y.shape[1] != len(names):
        raise ValueError(f"names: {len(names)} names for {y.shape[1]} attribute columns")
    stats = LatentStats.from_codes(codes) if stats is None else stats
    perm = np.random.default_rng(seed).permutation(N)
    n_test = int(round(N * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
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
    X = stats.standardize(codes.detach().float().cpu()).flatten(1).double().numpy()
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


def directions_for(model, src, source: str = "auto", n_encode: int = 3000, C: float = 1.0, seed: int = 0,
                   batch_size: int = 64, cache: str | Path | None = None) -> tuple[AttributeClassifiers | None, str]:
    """(directions, where) for a study's data (``hdae_core.data.open_data``), or (None, why) when there are none.

    ``source``: "train" fits them on the training split's codes (``train_directions``: logistic for binary
    columns, ridge for continuous ones); "checkpoint" uses the checkpoint folder's imported
    ``directions.safetensors`` (``hdae import-diffae --classifier``), scored on the held-out split when the data
    has attributes; "auto" trains when the data has attributes, else uses the imported ones. ``cache``: a folder
    of directions saved earlier (05_directions), used when it fits the model's codes.
    """
    if source not in ("auto", "train", "checkpoint"):
        raise ValueError(f"directions source: expected auto, train or checkpoint, got {source!r}")
    shape = (model.num_levels, model.code_dim)
    if cache is not None and (Path(cache) / "directions.json").is_file():
        clf = load_classifiers(cache)
        same_data = not src.has_attributes or set(clf.names) <= set(src.attribute_names)
        if tuple(clf.stats.shape) == shape and same_data:
            return clf, f"loaded from {cache}"
    folder = getattr(model, "checkpoint", None)
    imported = folder is not None and (Path(folder) / DIRECTIONS_FILE).is_file()
    if source == "checkpoint" or (source == "auto" and not src.has_attributes and imported):
        if not imported:
            return None, f"no imported {DIRECTIONS_FILE} in the checkpoint folder {folder}"
        clf = load_classifiers(folder)
        if tuple(clf.stats.shape) != shape:
            raise ValueError(f"{folder}: directions for codes {list(clf.stats.shape)}, the model's are {list(shape)}")
        where = f"imported from {folder} ({len(clf.names)} directions, not trained here)"
        if src.has_attributes:
            n = src.take(n_encode, "heldout", "codes scoring the imported directions")
            enc = encode_dataset(model, src.split("heldout"), n=n, batch_size=batch_size, progress=False)
            scores = direction_scores(clf, enc["codes"], enc["attributes"], src.attribute_names, src.attribute_kinds)
            clf.meta["report"] = {k: {"kind": src.attribute_kinds[k], "n_test": n, **v} for k, v in scores.items()}
            where += f"; scored on {n} held-out images for the {len(scores)} attributes the data shares"
        return clf, where
    if not src.has_attributes:
        return None, ("no attributes to fit directions to: pass an attribute file (--attributes) or a checkpoint "
                      f"with imported {DIRECTIONS_FILE} (hdae import-diffae --classifier)")
    n = src.take(n_encode, "train", "codes for the directions")
    enc = encode_dataset(model, src.split("train"), n=n, batch_size=batch_size, progress=False)
    clf = train_directions(enc["codes"], enc["attributes"], src.attribute_names, src.attribute_kinds, C=C, seed=seed)
    return clf, f"fitted on {n} training codes"


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


def score_table(directions: dict[str, AttributeDirections]):
    """Held-out scores per attribute (rows) and model (columns): AUROC for binary attributes, R² for continuous."""
    cols = {}
    for label, d in directions.items():
        rep = d.meta.get("report", {})
        cols[label] = pd.Series({n: _nan(rep[n].get("r2") if rep[n].get("kind") == "continuous" else rep[n].get("auroc"))
                                 for n in d.names if n in rep}, dtype=float)
    df = pd.DataFrame(cols)
    kinds = {n: d.meta.get("report", {}).get(n, {}).get("kind", "binary") for d in directions.values() for n in d.names}
    df.insert(0, "score", ["R2" if kinds.get(n) == "continuous" else "AUROC" for n in df.index])
    df.index.name = "attribute"
    return df


def auroc_intervals(directions: dict[str, AttributeDirections]):
    """Held-out AUROC and its 95 % bootstrap interval, one row per (model, attribute) with an AUROC."""
    rows = [{"model": label, "attribute": n, "auroc": r["auroc"], "low": r.get("auroc_low"), "high": r.get("auroc_high")}
            for label, d in directions.items() for n, r in d.meta.get("report", {}).items()
            if n in d.names and r.get("auroc") is not None]
    return pd.DataFrame(rows, columns=["model", "attribute", "auroc", "low", "high"])


# ---------------------------------------------------------------- truncated features (Eq. 1–2)


def normalized_weights(n: torch.Tensor) -> torch.Tensor:
    """Eq. 1: n̂ = (|n| − min|n|) / (max|n| − min|n|) over all entries, same shape; all ones when |n| is constant."""
    a = torch.as_tensor(n).abs()
    if a.numel() == 0:
        raise ValueError("normalized_weights: empty direction")
    lo, hi = a.min(), a.max()
    if hi == lo:
        # Eq. 1 is 0/0 here; every entry is equally important, so each gets the top weight 1
        return torch.ones_like(a, dtype=a.dtype if a.is_floating_point() else torch.float32)
    return (a - lo) / (hi - lo)


def truncate(n: torch.Tensor, k: int | None) -> torch.Tensor:
    """Eq. 2: keep the n_i whose n̂_i is among the top k (exactly k; ties go to the lower flat index), zero the rest."""
    n = torch.as_tensor(n)
    if k is None:
        return n.clone()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= n.numel():
        raise ValueError(f"k: expected an integer in [1, {n.numel()}] (the direction's size) or None, got {k!r}")
    # n̂ is a monotone map of |n|, so ranking |n| picks the same entries without Eq. 1's rounding ties
    order = torch.sort(n.abs().flatten(), descending=True, stable=True).indices
    keep = torch.zeros(n.numel(), dtype=torch.bool, device=n.device)
    keep[order[: int(k)]] = True
    return torch.where(keep.view_as(n), n, torch.zeros_like(n))


# ---------------------------------------------------------------- manipulation


def _edit_direction(direction: torch.Tensor, L: int, D: int, k: int | None, levels) -> torch.Tensor:
    """n′ as [L, D]: restricted to ``levels`` first, then truncated to its top k entries (Eq. 2)."""
    d = torch.as_tensor(direction)
    if d.numel() != L * D or d.dim() not in (1, 2) or (d.dim() == 2 and tuple(d.shape) != (L, D)):
        raise ValueError(f"direction: expected shape [L, D] = [{L}, {D}] (or [{L * D}] flat) to match the codes, "
                         f"got {list(d.shape)}")
    d = d.reshape(L, D)
    if levels is not None:
        lv = check_levels(levels, L)
        if not lv:
            raise ValueError("levels: empty; give at least one level index, or None for every level")
        mask = torch.zeros(L, 1, dtype=torch.bool, device=d.device)
        mask[lv] = True
        d = torch.where(mask, d, torch.zeros_like(d))
        # truncating after the restriction keeps exactly k entries inside the chosen levels
        if k is not None:
            limit = len(set(lv)) * D
            if isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > limit:
                raise ValueError(f"k: expected an integer in [1, {limit}] (entries in levels {sorted(set(lv))}), got {k}")
    return truncate(d, k)


def manipulate(codes: torch.Tensor, direction: torch.Tensor, alpha, stats: LatentStats, k: int | None = None,
               levels: int | Sequence[int] | None = None) -> torch.Tensor:
    """Edited codes [B, L, D]: standardise, add α·√(D·L)·n′/‖n′‖ (HDAE §3.3, n′ from Eq. 2), de-standardise.

    n′ is ``direction`` zeroed outside ``levels`` (0-based; None = all) and then truncated to its top ``k``
    entries (None = all). ``alpha`` is a number or one value per code [B].
    """
    _check_codes(codes)
    B, L, D = codes.shape
    if tuple(stats.shape) != (L, D):
        raise ValueError(f"stats: the codes are [B, L, D] = [B, {L}, {D}], so statistics for [{L}, {D}] were "
                         f"expected; got statistics for {list(stats.shape)} (from another model?)")
    wdt = _work_dtype(codes.dtype)
    a = torch.as_tensor(alpha, dtype=wdt, device=codes.device)
    if not torch.isfinite(a).all():
        raise ValueError(f"alpha: expected finite values, got {alpha!r}")
    if a.dim() > 1 or (a.dim() == 1 and a.numel() not in (1, B)):
        raise ValueError(f"alpha: expected a number or one value per code [{B}], got shape {list(a.shape)}")
    n = _edit_direction(direction, L, D, k, levels).to(device=codes.device, dtype=wdt)
    norm = torch.linalg.vector_norm(n)
    if norm == 0:
        raise ValueError("direction: zero after restricting to levels / truncating; nothing to move along")
    step = math.sqrt(D * L) * n / norm
    # destandardize(standardize(z) + s) = z + σ·s: adding σ·s directly leaves untouched entries (α = 0,
    # other levels, truncated coordinates) bit-exact instead of round-tripping them through (z − μ)/σ
    std = stats.std.to(device=codes.device, dtype=wdt)
    return (codes.to(wdt) + a.reshape(-1, 1, 1) * (step * std)).to(codes.dtype)


def edit_images(model, x0: torch.Tensor, direction: torch.Tensor, alpha, stats: LatentStats, k: int | None = None,
                levels: int | Sequence[int] | None = None, steps: int = 100, x_T: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> torch.Tensor:
    """Edited images (HDAE §3.3): ``manipulate`` the codes, decode with the image's own x_T (inverted once if not given)."""
    with inference(model):
        codes = model.encode(x0) if codes is None else codes
        if x_T is None:
            x_T = model.encode_stochastic(x0, codes, steps)
        return model.decode(x_T, manipulate(codes, direction, alpha, stats, k=k, levels=levels), steps)


# ---------------------------------------------------------------- style mixing


def mix_levels(codes_a: torch.Tensor, codes_b: torch.Tensor, levels: int | Iterable[int]) -> torch.Tensor:
    """Codes of A with the given levels (0-based, 0 = z¹) taken from B; a batch of 1 broadcasts against the other."""
    _check_codes(codes_a, "codes_a")
    _check_codes(codes_b, "codes_b")
    (Ba, L, D), Bb = codes_a.shape, codes_b.shape[0]
    if tuple(codes_b.shape[1:]) != (L, D) or (Ba != Bb and 1 not in (Ba, Bb)):
        raise ValueError(f"codes_b: expected [B, {L}, {D}] like codes_a {list(codes_a.shape)} (or a batch of 1), "
                         f"got {list(codes_b.shape)}")
    lv = check_levels(levels, L)
    B = max(Ba, Bb)
    out = codes_a.expand(B, L, D).clone()
    if lv:
        out[:, lv] = codes_b.expand(B, L, D)[:, lv].to(out.dtype)
    return out


def style_mix_grid(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 100, order: str = "low_to_high",
                   x_T: str | torch.Tensor = "a") -> torch.Tensor:
    """Style mixing (HDAE Fig. 7): images [L+1, B, C, H, W]; entry j has the paper's z¹..z^j from B, the rest from A.

    Entry j uses 0-based levels 0..j−1 from B (``order="high_to_low"``: the top j levels), so entry 0
    decodes A's codes and entry L decodes B's codes, all from the same x_T: A's inverted noise by
    default (``x_T="a"``), B's (``"b"``) or a given tensor.
    """
    if order not in ("low_to_high", "high_to_low"):
        raise ValueError(f"order: expected 'low_to_high' or 'high_to_low', got {order!r}")
    with inference(model):
        codes_a, codes_b = model.encode(x_a), model.encode(x_b)
        if isinstance(x_T, str):
            if x_T not in ("a", "b"):
                raise ValueError(f"x_T: expected 'a', 'b' or a tensor, got {x_T!r}")
            src_x, src_c = (x_a, codes_a) if x_T == "a" else (x_b, codes_b)
            x_T = model.encode_stochastic(src_x, src_c, steps)
        L, B = model.num_levels, max(codes_a.shape[0], codes_b.shape[0])
        rows = []
        for j in range(L + 1):
            lv = list(range(j)) if order == "low_to_high" else list(range(L - j, L))
            rows.append(mix_levels(codes_a, codes_b, lv))
        # one decode for the whole grid: DDIM is per-sample, so batching changes nothing but speed
        codes = torch.cat(rows)
        x_T_all = x_T.expand(B, *x_T.shape[1:]).repeat(L + 1, 1, 1, 1)
        out = model.decode(x_T_all, codes, steps)
    return out.reshape(L + 1, B, *out.shape[1:])


def style_mix_labels(num_levels: int, order: str = "low_to_high") -> list[str]:
    """Column labels of a style-mixing row: A, A's codes, the L − 1 partial mixes, all from B, B."""
    L = num_levels
    if L == 1:
        mixes = []  # one level: A's codes, then all from B
    elif order == "low_to_high":
        mixes = ["z1 from B"] + [f"z1..z{j} from B" for j in range(2, L)]
    else:
        mixes = [f"z{L} from B"] + [f"z{L - j + 1}..z{L} from B" for j in range(2, L)]
    return ["A", "A codes", *mixes, "all from B", "B"]


# ---------------------------------------------------------------- interpolation


def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation per sample over flattened dims (DiffAE's x_T interpolation); t a number or [N].

    a, b are [N, ...] (a batch of 1 broadcasts); the angle comes from the normalised vectors, and
    (anti)parallel pairs, where sin θ ≈ 0, fall back to linear interpolation. t = 0 gives a, t = 1 gives b.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"slerp: a {list(a.shape)} and b {list(b.shape)} differ beyond the batch dimension")
    a2, b2 = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    tt = torch.as_tensor(t, dtype=torch.float64, device=a.device).reshape(-1, 1)
    cos = (a2 * b2).sum(1, keepdim=True) / (
        torch.linalg.vector_norm(a2, dim=1, keepdim=True) * torch.linalg.vector_norm(b2, dim=1, keepdim=True))
    theta = torch.arccos(cos.clamp(-1, 1))
    s = torch.sin(theta)
    ok = s.abs() > 1e-6
    safe = torch.where(ok, s, torch.ones_like(s))
    ca = torch.where(ok, torch.sin((1 - tt) * theta) / safe, 1 - tt)
    cb = torch.where(ok, torch.sin(tt * theta) / safe, tt)
    out = ca * a2 + cb * b2
    return out.to(a.dtype).reshape(out.shape[0], *a.shape[1:])


def _one(x: torch.Tensor, dims: int, name: str) -> torch.Tensor:
    if x.dim() == dims:
        return x.unsqueeze(0)
    if x.dim() == dims + 1 and x.shape[0] == 1:
        return x
    raise ValueError(f"{name}: expected one sample ({dims}-d, or {dims + 1}-d with a batch of 1), got {list(x.shape)}")


def interpolate(codes_a: torch.Tensor, codes_b: torch.Tensor, x_T_a: torch.Tensor, x_T_b: torch.Tensor,
                n_frames: int, path: str | tuple = "low_to_high", x_T_path: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Controllable interpolation (HDAE §4): codes [F, L, D] moved level by level (linearly), x_T [F, C, H, W] by slerp.

    ``path``: "low_to_high" moves level 0 (z¹) from A to B over the first 1/L of the frames, then level 1, …;
    "high_to_low" the reverse; "all" every level at once (plain interpolation, also what L = 1 gives);
    ("level", l) moves level l alone, so the last frame is A with level l from B. ``x_T_path``: "global"
    (slerp over all frames; the default, except for ("level", l)), "finest" (x_T moves together with
    level 0) or "fixed" (A's x_T throughout; the default for ("level", l)). Frame 0 is exactly A.
    """
    ca, cb = _one(codes_a, 2, "codes_a"), _one(codes_b, 2, "codes_b")
    xa, xb = _one(x_T_a, 3, "x_T_a"), _one(x_T_b, 3, "x_T_b")
    if ca.shape != cb.shape:
        raise ValueError(f"codes_b: expected {list(ca.shape[1:])} like codes_a, got {list(cb.shape[1:])}")
    if xa.shape != xb.shape:
        raise ValueError(f"x_T_b: expected {list(xa.shape[1:])} like x_T_a, got {list(xb.shape[1:])}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, numbers.Integral) or n_frames < 2:
        raise ValueError(f"n_frames: expected an integer >= 2 (the two endpoints included), got {n_frames!r}")
    L = ca.shape[1]
    single = isinstance(path, (tuple, list)) and len(path) == 2 and path[0] == "level"
    if single:
        stages = [check_levels([path[1]], L, "path level")]
    elif path == "low_to_high":
        stages = [[lv] for lv in range(L)]
    elif path == "high_to_low":
        stages = [[lv] for lv in reversed(range(L))]
    elif path == "all":
        stages = [list(range(L))]
    else:
        raise ValueError(f"path: expected 'low_to_high', 'high_to_low', 'all' or ('level', l), got {path!r}")
    x_T_path = x_T_path or ("fixed" if single else "global")
    if x_T_path not in ("global", "finest", "fixed"):
        raise ValueError(f"x_T_path: expected 'global', 'finest' or 'fixed', got {x_T_path!r}")

    s = torch.linspace(0, 1, n_frames, dtype=torch.float64)
    # stage p runs over s ∈ [p/S, (p+1)/S]; its local weight is clamped to [0, 1] outside that span
    S = len(stages)
    t_level = torch.zeros(n_frames, L, dtype=torch.float64)
    for p, lv in enumerate(stages):
        t_level[:, lv] = (s * S - p).clamp(0, 1)[:, None]
    wdt = _work_dtype(ca.dtype)
    w = t_level.to(device=ca.device, dtype=wdt)[:, :, None]
    # torch.lerp is exact at both ends (it computes from the nearer endpoint)
    codes = torch.lerp(ca.to(wdt).expand(n_frames, -1, -1), cb.to(wdt).expand(n_frames, -1, -1), w).to(ca.dtype)
    if x_T_path == "global":
        t_x = s
    elif x_T_path == "finest":
        t_x = t_level[:, 0]
    else:
        t_x = torch.zeros(n_frames, dtype=torch.float64)
    x_T = slerp(xa, xb, t_x)
    # endpoints are the inputs themselves, not a float recomputation of them
    codes[0], x_T[0] = ca[0], xa[0]
    if not single:
        codes[-1] = cb[0]
    if x_T_path != "fixed":
        x_T[-1] = xb[0]
    return codes, x_T


def interpolate_images(model, x_a: torch.Tensor, x_b: torch.Tensor, n_frames: int, path: str | tuple = "low_to_high",
                       steps: int = 100, x_T_path: str | None = None) -> torch.Tensor:
    """Frames [F, C, H, W] of ``interpolate`` between two images (each [C, H, W] or [1, C, H, W]), decoded with DDIM."""
    x_a, x_b = _one(x_a, 3, "x_a"), _one(x_b, 3, "x_b")
    with inference(model):
        codes = model.encode(torch.cat([x_a, x_b]))
        x_T = model.encode_stochastic(torch.cat([x_a, x_b]), codes, steps)
        c, xt = interpolate(codes[:1], codes[1:], x_T[:1], x_T[1:], n_frames, path, x_T_path)
        return model.decode(xt, c, steps)


def untrained_like(model, seed: int = 0) -> HDAE:
    """The same architecture at its random initialisation: the baseline a trained encoder's codes must beat
    (random convolutional features already make colour and position linearly readable)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        fresh = HDAE(model.config).to(model_device(model)).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    return fresh


def mean_auroc(clf) -> float:
    """Mean held-out AUROC over a classifier set's binary attributes (NaN when it has none)."""
    table = score_table({"m": clf})
    au = table.loc[table["score"] == "AUROC", "m"].dropna()
    return float(au.mean()) if len(au) else float("nan")
