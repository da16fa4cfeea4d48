"""Linear probes at equal code width: is an attribute readable from one level of the hierarchy (D numbers) as well
as from a flat DAE code of the same width, and from a random D-dimensional projection of all L·D numbers?

A mean AUROC over L·D inputs against one over D inputs compares widths as much as structure; reading each
level alone, or a random projection down to D, holds the width equal. Each probe is the editing classifier
(``directions.train_classifiers``: standardised inputs, balanced logistic regression, one held-out split)
with its held-out AUROC and the bootstrap interval of ``metrics.auroc_ci``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .directions import train_classifiers
from .editing import check_codes
from .stats import LatentStats

__all__ = ["equal_width_views", "equal_width_auroc", "equal_width_wins", "equal_width_finding", "plot_equal_width"]


def equal_width_views(codes: torch.Tensor, width: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Views [N, 1, width] of codes [N, L, D]: "all levels" (the whole L·D code, for reference, [N, L, D]),
    each level alone ("z1" … "zL", finest first), and "random projection" (the standardised flattened code
    times a seeded Gaussian matrix [L·D, width], so every level weighs alike). ``width`` defaults to D.
    A one-level code gives "code" (itself) only."""
    check_codes(codes)
    N, L, D = codes.shape
    if L == 1:
        return {"code": codes}
    width = D if width is None else int(width)
    views = {"all levels": codes}
    views.update({f"z{l + 1}": codes[:, l:l + 1] for l in range(L)})
    z = LatentStats.from_codes(codes).standardize(codes.float()).flatten(1)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(L * D, width, generator=g, dtype=torch.float32) / (L * D) ** 0.5
    views["random projection"] = (z @ proj)[:, None, :]
    return views


def equal_width_auroc(codes: Mapping[str, torch.Tensor], attributes: torch.Tensor, names: Sequence[str],
                      width: int | None = None, C: float = 1.0, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Held-out AUROC with its 95 % bootstrap interval, one row per (model, view, attribute): ``codes`` maps a
    model label to its codes [N, L, D] of the same N labelled images (``attributes`` [N, K], binary)."""
    rows = []
    for model, c in codes.items():
        for view, v in equal_width_views(c, width, seed).items():
            clf = train_classifiers(v, attributes, list(names), test_fraction=test_fraction, seed=seed, C=C)
            for n in clf.names:
                r = clf.meta["report"][n]
                rows.append({"model": model, "view": view, "width": int(v.shape[1] * v.shape[2]), "attribute": n,
                             "auroc": _num(r["auroc"]), "ci_low": _num(r["auroc_low"]), "ci_high": _num(r["auroc_high"]),
                             "n_test": r["n_test"]})
    return pd.DataFrame(rows)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def equal_width_wins(table: pd.DataFrame, hierarchy: str, flat: str) -> pd.DataFrame:
    """Per attribute: the flat model's D-wide code beside the hierarchy's best single level and its random
    projection; ``level_wins`` / ``projection_wins`` when that interval lies wholly above the flat code's."""
    flat_t = table[table["model"] == flat].set_index("attribute")
    h = table[table["model"] == hierarchy]
    levels = h[h["view"].str.fullmatch(r"z\d+")]
    rows = []
    for attr, f in flat_t.iterrows():
        lv = levels[levels["attribute"] == attr]
        if not len(lv):
            continue
        best = lv.loc[lv["auroc"].idxmax()]
        pr = h[(h["attribute"] == attr) & (h["view"] == "random projection")]
        pr = pr.iloc[0] if len(pr) else None
        rows.append({"attribute": attr, "flat": f["auroc"], "flat_low": f["ci_low"], "flat_high": f["ci_high"],
                     "best_level": best["view"], "level": best["auroc"], "level_low": best["ci_low"],
                     "level_high": best["ci_high"], "level_wins": bool(best["ci_low"] > f["ci_high"]),
                     "projection": np.nan if pr is None else pr["auroc"],
                     "projection_low": np.nan if pr is None else pr["ci_low"],
                     "projection_wins": bool(pr is not None and pr["ci_low"] > f["ci_high"])})
    return pd.DataFrame(rows)


def equal_width_finding(wins: pd.DataFrame, hierarchy: str, flat: str, width: int) -> str:
    """A Markdown sentence rendered from ``equal_width_wins``: where the hierarchy still reads an attribute
    better at the flat code's width (interval above the flat code's), by a single level and by a projection."""
    def names(col):
        w = wins[wins[col]]
        return ", ".join(f"`{r.attribute}` ({r.best_level if col == 'level_wins' else 'projection'} "
                         f"{r.level if col == 'level_wins' else r.projection:.3f} vs {r.flat:.3f})"
                         for r in w.itertuples()) or "none"
    n = len(wins)
    lw, pw = int(wins["level_wins"].sum()), int(wins["projection_wins"].sum())
    worse = int((wins["level_high"] < wins["flat_low"]).sum())
    return (f"at equal width ({width} numbers), one level of {hierarchy} reads {lw} of {n} attributes better than "
            f"{flat}'s code (its 95 % interval wholly above): {names('level_wins')}; a random {width}-dimensional "
            f"projection of all of {hierarchy}'s levels does so for {pw}: {names('projection_wins')}; for {worse} "
            f"attributes even the best single level is below {flat}'s code")


def plot_equal_width(table: pd.DataFrame, path=None, title: str | None = None):
    """Bars of held-out AUROC per attribute, one per (model, view), with their bootstrap whiskers; legend below."""
    from .plots import plot_bars, save_figure

    t = table.assign(bar=table["model"] + " " + table["view"])
    bars = list(dict.fromkeys(t["bar"]))
    wide = t.pivot(index="attribute", columns="bar")
    fig = plot_bars(wide["auroc"][bars], ylabel="held-out AUROC", ylim=(0.4, 1.0), hline=0.5, size=(12.0, 4.2),
                    intervals=(wide["ci_low"][bars], wide["ci_high"][bars]), title=title)
    ax = fig.axes[0]
    if ax.get_legend() is not None:  # seven bars per group leave no free corner inside the axes
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=min(len(bars), 7), fontsize=8)
    if path is not None:
        save_figure(fig, path)
    return fig
