"""Truncated features at equal edit strength (HDAE Eq. 2, Fig. 10, Table 2): the success–leakage frontier.

At one fixed α a truncated edit is weaker as well as cleaner, so comparing it with the untruncated edit
there cannot say whether truncation changes *less of everything else*. Here each (k, step rule) edit is
swept over α and traced as a curve of leakage against success (the frontier); curves are compared at
matched success (leakage interpolated to fixed success levels), and per image the oracle votes between
the edit with and without truncation at that matched success (the analogue of HDAE Table 2's user
study). Scores are those of ``oracle.per_image_scores``: success = rise of p(target), leakage = mean
|Δp| of every other attribute; intervals are percentile bootstraps over images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .editing import STEP_RULES, manipulate
from .oracle import per_image_scores, probabilities

__all__ = ["PAPER_TF_PREFERENCE", "PAPER_K_FRACTION", "K_FRACTIONS", "ALPHAS", "SUCCESS_LEVELS", "VOTE_TOLERANCE",
           "Frontier", "k_entries", "sweep_frontier", "at_success", "frontier_table", "matched_table",
           "vote_table", "KEYS", "tables", "records", "fixed_alpha_table", "step_rule_finding", "weight_share",
           "sparsity_table", "plot_frontier", "tf_finding", "sparsity_finding"]

# HDAE (Lu et al., WACV 2024) Table 2: share of the user study's votes that preferred the edit with truncated
# features over the edit without them
PAPER_TF_PREFERENCE = 0.76
# HDAE §4.4: k = 24 of the 3,072 entries (6 levels × 512) of a 256² model's direction
PAPER_K_FRACTION = 24 / 3072
K_FRACTIONS = (1.0, 0.3, 0.1, 0.03, 0.008)
ALPHAS = (0.15, 0.3, 0.45, 0.7, 1.1, 2.0)
SUCCESS_LEVELS = (0.2, 0.4)
# per-image leakages closer than this (in mean |Δp| over the other attributes) are a tie: no preference
VOTE_TOLERANCE = 0.005


def k_entries(fraction: float, size: int) -> int | None:
    """k for a fraction of a direction's ``size`` entries: None (no truncation) at 1, else at least one entry."""
    if not 0 < fraction <= 1:
        raise ValueError(f"k fraction: expected a value in (0, 1], got {fraction!r}")
    return None if fraction >= 1 else max(1, int(round(fraction * size)))


@dataclass
class Frontier:
    """One attribute's α sweep for one model: per-image scores [K, R, A, N] for every k fraction (K), step
    rule (R), α (A) and image (N); α = 0 (no edit: success 0, leakage 0) is implied, not stored."""

    attribute: str
    model: str
    k_fractions: list[float]
    ks: list[int | None]
    step_rules: list[str]
    alphas: np.ndarray
    success: np.ndarray
    leakage: np.ndarray
    partner_leakage: np.ndarray

    @property
    def n_images(self) -> int:
        return int(self.success.shape[-1])

    def curve(self, k_fraction: float, step_rule: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-image (success, leakage) [A, N] of one curve."""
        ki, ri = self.k_fractions.index(k_fraction), self.step_rules.index(step_rule)
        return self.success[ki, ri], self.leakage[ki, ri]


def _check_grid(k_fractions, alphas, step_rules):
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or len(alphas) < 2 or not (alphas > 0).all() or not (np.diff(alphas) > 0).all():
        raise ValueError(f"alphas: expected at least 2 increasing positive values (α = 0 is implied), got {list(alphas)}")
    bad = [r for r in step_rules if r not in STEP_RULES]
    if bad or not step_rules:
        raise ValueError(f"step_rules: expected some of {STEP_RULES}, got {list(step_rules)}")
    k_fractions = [float(f) for f in k_fractions]
    if 1.0 not in k_fractions:
        raise ValueError(f"k_fractions: 1.0 (no truncation, the baseline every k is held against) is missing "
                         f"from {k_fractions}")
    if len(set(k_fractions)) != len(k_fractions):
        raise ValueError(f"k_fractions: duplicates in {k_fractions}")
    return k_fractions, alphas, list(step_rules)


@torch.no_grad()
def sweep_frontier(model, scorer, images: torch.Tensor, direction: torch.Tensor, stats, target: str,
                   model_label: str = "", k_fractions: Sequence[float] = K_FRACTIONS,
                   alphas: Sequence[float] = ALPHAS, step_rules: Sequence[str] = STEP_RULES, steps: int = 10,
                   names: Sequence[str] | None = None, correlated=None, batch_size: int = 128,
                   progress: bool = False) -> Frontier:
    """Edit every image at every (k fraction, step rule, α) and score it against its unedited decode.

    Each image's x_T is inverted once; all edits are decoded in batches of ``batch_size`` (DDIM is per
    sample, so batching changes only speed). At k = all both step rules are one edit, decoded once.
    """
    k_fractions, alphas_np, step_rules = _check_grid(k_fractions, alphas, step_rules)
    names = list(names if names is not None else scorer.attribute_names)
    p = next(model.parameters())
    images = images.to(p)
    N = images.shape[0]
    if N < 2:
        raise ValueError(f"images: the bootstrap needs at least 2 images, got {N}")
    codes = model.encode(images)
    L, D = codes.shape[1:]
    x_T = model.encode_stochastic(images, codes, steps)
    # scored against the unedited decode, so reconstruction error never counts as leakage
    p0 = torch.cat([probabilities(scorer, model.decode(x_T[i:i + batch_size], codes[i:i + batch_size], steps))
                    for i in range(0, N, batch_size)]).double().cpu()
    ks = [k_entries(f, L * D) for f in k_fractions]
    A = len(alphas_np)
    alpha = torch.as_tensor(alphas_np, dtype=torch.float64).repeat_interleave(N)
    jobs: dict[tuple, int] = {}  # (k, rule) -> slot; k = None is one edit whatever the rule
    edited = []
    for k in ks:
        for rule in step_rules:
            key = (k, rule if k is not None else "any")
            if key not in jobs:
                jobs[key] = len(jobs)
                edited.append(manipulate(codes.repeat(A, 1, 1), direction, alpha, stats, k=k, step_rule=rule))
    edited = torch.cat(edited)
    chunks = range(0, edited.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=f"frontier {target} {model_label}".strip(), leave=False)
    p1 = []
    for i in chunks:
        idx = torch.arange(i, min(i + batch_size, edited.shape[0]))
        p1.append(probabilities(scorer, model.decode(x_T[idx % N], edited[idx].to(codes), steps)).double().cpu())
    p1 = torch.cat(p1)
    sc = per_image_scores(p0.repeat(len(jobs) * A, 1), p1, target, names, correlated)
    per = {key: v.numpy().reshape(len(jobs), A, N) for key, v in sc.items()}
    shape = (len(ks), len(step_rules), A, N)
    out = {key: np.empty(shape) for key in per}
    for ki, k in enumerate(ks):
        for ri, rule in enumerate(step_rules):
            slot = jobs[(k, rule if k is not None else "any")]
            for key in per:
                out[key][ki, ri] = per[key][slot]
    return Frontier(target, model_label, k_fractions, ks, step_rules, alphas_np, out["success"], out["leakage"],
                    out["partner_leakage"])


# ---------------------------------------------------------------- intervals and matched success


def _resample_idx(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _boot_means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Means over the last axis (images) for each resample: [..., N] → [..., n_boot]."""
    return x[..., idx].mean(-1)


def _interval(boots: np.ndarray, level: float, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a], axis=axis)
    return lo, hi


def at_success(success: np.ndarray, leakage: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leakage where a curve first reaches success ``level``, walking it in α order from α = 0 (success 0,
    leakage 0): linear between the two sweep points around the crossing. success, leakage: [..., A] mean curves.

    Returns (leakage [...], j [...], w [...]): the crossing lies between points j − 1 and j of the curve with the
    origin prepended (so j = 1 is between α = 0 and the first α), at weight w towards point j; NaN / −1 where the
    curve never reaches ``level``.
    """
    if not level > 0:
        raise ValueError(f"success level: expected a positive value (α = 0 has success 0), got {level}")
    s = np.concatenate([np.zeros(success.shape[:-1] + (1,)), success], axis=-1)
    lk = np.concatenate([np.zeros(leakage.shape[:-1] + (1,)), leakage], axis=-1)
    crossed = s[..., 1:] >= level
    reached = crossed.any(-1)
    j = np.where(reached, crossed.argmax(-1) + 1, -1)
    jj = np.clip(j, 1, None)[..., None]
    s0, s1 = np.take_along_axis(s, jj - 1, -1)[..., 0], np.take_along_axis(s, jj, -1)[..., 0]
    l0, l1 = np.take_along_axis(lk, jj - 1, -1)[..., 0], np.take_along_axis(lk, jj, -1)[..., 0]
    # s0 < level <= s1 at the first crossing, so the denominator is positive
    w = np.where(reached, (level - s0) / np.where(reached, s1 - s0, 1.0), np.nan)
    return np.where(reached, l0 + w * (l1 - l0), np.nan), j, w


def _at_point(per_image: np.ndarray, j: int, w: float) -> np.ndarray:
    """Per-image values [N] at a matched point (j, w) of ``at_success`` on one curve [A, N] (origin = 0)."""
    lower = np.zeros(per_image.shape[-1]) if j == 1 else per_image[j - 2]
    return lower + w * (per_image[j - 1] - lower)


def frontier_table(fr: Frontier, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (k, step rule, α): mean success and leakage, ``ci_low`` / ``ci_high`` the leakage's bootstrap
    interval over images (``success_low`` / ``success_high`` the success's), and the partner leakage."""
    idx = _resample_idx(fr.n_images, n_boot, seed)
    cols = {}
    for key in ("success", "leakage", "partner_leakage"):
        x = getattr(fr, key)
        if np.isfinite(x).all():
            cols[key] = (x.mean(-1), *_interval(_boot_means(x, idx), level))
        else:
            nan = np.full(x.shape[:-1], np.nan)
            cols[key] = (nan, nan, nan)
    rows = []
    for ki, (kf, k) in enumerate(zip(fr.k_fractions, fr.ks)):
        for ri, rule in enumerate(fr.step_rules):
            for ai, a in enumerate(fr.alphas):
                at = (ki, ri, ai)
                rows.append({"attribute": fr.attribute, "model": fr.model, "k_fraction": kf, "step_rule": rule,
                             "alpha": float(a), "success": cols["success"][0][at], "leakage": cols["leakage"][0][at],
                             "ci_low": cols["leakage"][1][at], "ci_high": cols["leakage"][2][at],
                             "success_low": cols["success"][1][at], "success_high": cols["success"][2][at],
                             "partner_leakage": cols["partner_leakage"][0][at],
                             "partner_leakage_low": cols["partner_leakage"][1][at],
                             "partner_leakage_high": cols["partner_leakage"][2][at],
                             "k": k, "n": fr.n_images})
    return pd.DataFrame(rows)


def matched_table(fr: Frontier, success_levels: Sequence[float] = SUCCESS_LEVELS, level: float = 0.95,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Leakage at matched success: one row per (k, step rule, success level) with its bootstrap interval.

    Each resample of images gives its own mean curves, each interpolated to the level (``at_success``); the
    same resamples serve every curve, so ``delta`` (leakage − that of k = all, same rule) has a paired interval
    (``delta_low`` / ``delta_high``). ``reached``: the share of resamples whose curve reaches the level; below
    ``level`` the interval is NaN (the sweep's α range does not reach that success reliably).
    """
    idx = _resample_idx(fr.n_images, n_boot, seed)
    S, Lk = fr.success.mean(-1), fr.leakage.mean(-1)  # [K, R, A]
    bS = np.moveaxis(_boot_means(fr.success, idx), -1, 0)  # [B, K, R, A]
    bL = np.moveaxis(_boot_means(fr.leakage, idx), -1, 0)
    full = fr.k_fractions.index(1.0)
    rows = []
    for s in success_levels:
        point, j, w = at_success(S, Lk, s)
        boots, _, _ = at_success(bS, bL, s)  # [B, K, R]
        alpha0 = np.concatenate([[0.0], fr.alphas])
        for ki, kf in enumerate(fr.k_fractions):
            for ri, rule in enumerate(fr.step_rules):
                b, bf = boots[:, ki, ri], boots[:, full, ri]
                reached = float(np.isfinite(b).mean())
                lo = hi = d_lo = d_hi = np.nan
                if reached >= level:
                    lo, hi = _interval(b[np.isfinite(b)], level)
                both = np.isfinite(b) & np.isfinite(bf)
                if both.mean() >= level:
                    d_lo, d_hi = _interval((b - bf)[both], level)
                jj = j[ki, ri]
                alpha = (alpha0[jj - 1] + w[ki, ri] * (alpha0[jj] - alpha0[jj - 1])) if jj > 0 else np.nan
                rows.append({"attribute": fr.attribute, "model": fr.model, "k_fraction": kf, "step_rule": rule,
                             "success_level": float(s), "leakage": point[ki, ri], "ci_low": lo, "ci_high": hi,
                             "alpha": alpha, "reached": reached, "leakage_full": point[full, ri],
                             "delta": point[ki, ri] - point[full, ri], "delta_low": d_lo, "delta_high": d_hi,
                             "n": fr.n_images})
    return pd.DataFrame(rows)


def vote_table(fr: Frontier, success_levels: Sequence[float] = SUCCESS_LEVELS, step_rule: str = "renormalised",
               tolerance: float = VOTE_TOLERANCE, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The Table 2 analogue: per image, at matched success, the oracle prefers the edit that changed the other
    attributes less (per-image leakage), truncated (k < all) or not; |difference| < ``tolerance`` is a tie.

    Both edits are taken at the α where their *mean* success equals the level, as the paper's users judged one
    pair of edits per image. ``prefer_tf``: share of all images preferring the truncated edit (ties count against),
    with a bootstrap interval; ``prefer_full`` and ``ties`` beside it, ``median_gain`` the median per-image
    leakage saved by truncating (positive: truncation changed less).
    """
    if step_rule not in fr.step_rules:
        raise ValueError(f"step_rule: the sweep has {fr.step_rules}, not {step_rule!r}")
    ri, full = fr.step_rules.index(step_rule), fr.k_fractions.index(1.0)
    idx = _resample_idx(fr.n_images, n_boot, seed)
    S, Lk = fr.success.mean(-1), fr.leakage.mean(-1)
    rows = []
    for s in success_levels:
        _, j, w = at_success(S, Lk, s)
        for ki, kf in enumerate(fr.k_fractions):
            if ki == full:
                continue
            row = {"attribute": fr.attribute, "model": fr.model, "k_fraction": kf, "success_level": float(s),
                   "prefer_tf": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": fr.n_images,
                   "prefer_full": np.nan, "ties": np.nan, "median_gain": np.nan, "step_rule": step_rule,
                   "tolerance": tolerance}
            if j[ki, ri] > 0 and j[full, ri] > 0:
                tf = _at_point(fr.leakage[ki, ri], j[ki, ri], w[ki, ri])
                al = _at_point(fr.leakage[full, ri], j[full, ri], w[full, ri])
                gain = al - tf
                prefer = (gain > tolerance).astype(np.float64)
                lo, hi = _interval(_boot_means(prefer, idx), level)
                row.update(prefer_tf=prefer.mean(), ci_low=lo, ci_high=hi, prefer_full=float((gain < -tolerance).mean()),
                           ties=float((np.abs(gain) <= tolerance).mean()), median_gain=float(np.median(gain)))
            rows.append(row)
    return pd.DataFrame(rows)


# the rows metrics.json holds, in this order
KEYS = {"tf_frontier": ["attribute", "model", "k_fraction", "step_rule", "alpha", "success", "leakage", "ci_low", "ci_high"],
        "tf_matched": ["attribute", "model", "k_fraction", "step_rule", "success_level", "leakage", "ci_low", "ci_high"],
        "tf_vote": ["attribute", "model", "k_fraction", "success_level", "prefer_tf", "ci_low", "ci_high", "n"]}


def tables(frontiers: Sequence[Frontier], success_levels: Sequence[float] = SUCCESS_LEVELS,
           vote_rule: str = "renormalised", tolerance: float = VOTE_TOLERANCE, level: float = 0.95,
           n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``tf_frontier``, ``tf_matched`` and ``tf_vote`` of every sweep, each one DataFrame (the metrics' columns
    first, then the detail: success intervals, partner leakage, matched α, paired differences, ties)."""
    parts = {"tf_frontier": [frontier_table(f, level, n_boot, seed) for f in frontiers],
             "tf_matched": [matched_table(f, success_levels, level, n_boot, seed) for f in frontiers],
             "tf_vote": [vote_table(f, success_levels, vote_rule, tolerance, level, n_boot, seed) for f in frontiers]}
    return {k: (pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=KEYS[k])) for k, v in parts.items()}


def records(table: pd.DataFrame, key: str) -> list[dict]:
    """The rows of ``table`` with exactly the metrics columns of ``key`` (NaN as None)."""
    t = table[KEYS[key]].astype(object)
    return t.where(pd.notna(t), None).to_dict(orient="records")


def fixed_alpha_table(frontier: pd.DataFrame, alpha: float, step_rule: str = "renormalised") -> pd.DataFrame:
    """The frontier read at one α (the comparison at equal α, where truncation also weakens the edit): one row per
    (attribute, model, k) with success, leakage and partner leakage and their ``_low`` / ``_high`` intervals."""
    t = frontier[(frontier["step_rule"] == step_rule) & np.isclose(frontier["alpha"], alpha)]
    if not len(t) and len(frontier):
        raise ValueError(f"alpha {alpha}: not in the sweep's α values {sorted(set(frontier['alpha']))}")
    return _as_fixed(t)


def most_selective(frontier: pd.DataFrame, step_rule: str = "renormalised") -> pd.DataFrame:
    """Per (attribute, model) the untruncated edit (k = all) at its most selective swept α, the one with the
    largest success minus leakage: whether a direction moves its attribute at all, whatever strength it needs (a
    fixed α can be too weak for one model and right for another). Columns as ``fixed_alpha_table``."""
    t = frontier[(frontier["step_rule"] == step_rule) & (frontier["k_fraction"] >= 1)]
    if len(t):
        t = t.loc[(t["success"] - t["leakage"]).groupby([t["attribute"], t["model"]], sort=False).idxmax()]
    return _as_fixed(t)


def _as_fixed(t: pd.DataFrame) -> pd.DataFrame:
    """A frontier's rows in the columns of the per-α tables (target, leakage_low / _high for ci_low / _high)."""
    t = t.rename(columns={"attribute": "target", "ci_low": "leakage_low", "ci_high": "leakage_high"})
    cols = ["target", "model", "k_fraction", "k", "alpha", "success", "success_low", "success_high", "leakage",
            "leakage_low", "leakage_high", "partner_leakage", "partner_leakage_low", "partner_leakage_high", "n"]
    return t[cols].reset_index(drop=True)


def step_rule_finding(matched: pd.DataFrame) -> str:
    """How far apart the two step rules' leakages at matched success are, where both reach it, and how many
    truncated curves each leaves short of a success level (a Markdown sentence rendered from the table)."""
    tf = matched[matched["k_fraction"] < 1]
    idx = ["attribute", "model", "k_fraction", "success_level"]
    wide = tf.pivot_table(index=idx, columns="step_rule", values="leakage", dropna=False)
    if not {"renormalised", "masked"} <= set(wide.columns):
        return "one step rule only: nothing to compare"
    both = wide.dropna()
    short = {r: int(tf[(tf["step_rule"] == r)]["leakage"].isna().sum()) for r in ("renormalised", "masked")}
    gap = (both["renormalised"] - both["masked"]).abs()
    text = (f"of {len(wide)} truncated (attribute, model, k, success level) points, the renormalised step leaves "
            f"{short['renormalised']} short of the success level within the α sweep and the masked step "
            f"{short['masked']}")
    if len(both):
        text += (f"; where both reach it ({len(both)} points) their leakages at matched success differ by "
                 f"{gap.median():.3f} at the median and {gap.max():.3f} at most")
    return text


# ---------------------------------------------------------------- Fig. 4: how concentrated a direction is


def weight_share(n, top: float) -> float:
    """Share of Σ|n| held by the largest ``top`` fraction of its entries (at least one entry)."""
    a = np.sort(np.abs(np.asarray(torch.as_tensor(n).detach().cpu().double()).ravel()))[::-1]
    if a.size == 0 or a.sum() == 0:
        raise ValueError("weight_share: an empty or all-zero direction")
    return float(a[:max(1, int(round(top * a.size)))].sum() / a.sum())


def sparsity_table(directions: Mapping[str, Mapping[str, torch.Tensor]], tops: Sequence[float] = (0.01, 0.1),
                   n_random: int = 32, seed: int = 0) -> pd.DataFrame:
    """HDAE Fig. 4's premise, measured: per model and attribute, the share of Σ|n| in the top fraction of the
    entries, beside a random Gaussian direction of the same size (mean and sd over ``n_random`` draws)."""
    g = np.random.default_rng(seed)
    rows = []
    for model, dirs in directions.items():
        random: dict[tuple[int, float], np.ndarray] = {}
        for attr, n in dirs.items():
            size = int(torch.as_tensor(n).numel())
            for top in tops:
                if (size, top) not in random:
                    random[(size, top)] = np.array([weight_share(g.standard_normal(size), top) for _ in range(n_random)])
                r = random[(size, top)]
                share = weight_share(n, top)
                rows.append({"model": model, "attribute": attr, "top_fraction": float(top),
                             "entries": max(1, int(round(top * size))), "size": size, "share": share,
                             "random_mean": float(r.mean()), "random_sd": float(r.std(ddof=1)),
                             "ratio": share / float(r.mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figure and finding


def plot_frontier(table: pd.DataFrame, success_levels: Sequence[float] = (), path=None, title: str | None = None,
                  panel_size: tuple[float, float] = (4.5, 3.6), dpi: int = 100):
    """Leakage against success, one curve per k (from α = 0 at the origin), one panel per step rule; whiskers are
    the leakage's bootstrap interval, dotted verticals the matched success levels."""
    from matplotlib import colormaps

    from .plots import _figure, save_figure

    rules = list(dict.fromkeys(table["step_rule"]))
    fig, axes = _figure(len(rules), None, panel_size, dpi)
    ks = sorted(set(table["k_fraction"]), reverse=True)
    cmap = colormaps["viridis"]
    for ax, rule in zip(axes, rules):
        for i, kf in enumerate(ks):
            c = table[(table["step_rule"] == rule) & (table["k_fraction"] == kf)].sort_values("alpha")
            x = np.concatenate([[0.0], c["success"].to_numpy(float)])
            y = np.concatenate([[0.0], c["leakage"].to_numpy(float)])
            colour = "black" if kf >= 1 else cmap(0.15 + 0.7 * (i - 1) / max(1, len(ks) - 2))
            ax.plot(x, y, marker="o", ms=3, color=colour, lw=1.6 if kf >= 1 else 1.1,
                    label="k = all" if kf >= 1 else f"k = {kf:g}")
            ax.errorbar(c["success"], c["leakage"], yerr=[c["leakage"] - c["ci_low"], c["ci_high"] - c["leakage"]],
                        fmt="none", ecolor=colour, elinewidth=0.8, alpha=0.7)
        for s in success_levels:
            ax.axvline(s, color="grey", ls=":", lw=0.8)
        ax.set_title(f"step rule: {rule}")
        ax.set_xlabel("success (rise of p(target))")
        ax.set_ylabel("leakage (mean |Δp| of the others)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _k(kf: float) -> str:
    return "all" if kf >= 1 else f"{kf:g}"


def tf_finding(matched: pd.DataFrame, votes: pd.DataFrame, attribute: str, model: str,
               step_rule: str = "renormalised") -> str:
    """One Markdown sentence per success level, rendered from the tables: which k lowers leakage at matched
    success (the paired interval of the difference below 0), by how much, and the oracle's vote at that k."""
    m = matched[(matched["attribute"] == attribute) & (matched["model"] == model) & (matched["step_rule"] == step_rule)]
    v = votes[(votes["attribute"] == attribute) & (votes["model"] == model)]
    parts = []
    for s, g in m.groupby("success_level", sort=True):
        full = g[g["k_fraction"] >= 1].iloc[0]
        if not np.isfinite(full["leakage"]):
            parts.append(f"at success {s:g} the untruncated edit never gets there within the α sweep, so nothing "
                         f"is compared")
            continue
        tf = g[(g["k_fraction"] < 1) & np.isfinite(g["leakage"])]
        better = tf[tf["delta_high"] < 0].sort_values("leakage")
        worse = ", ".join(_k(k) for k in tf[tf["delta_low"] > 0]["k_fraction"])
        if len(better):
            b = better.iloc[0]
            what = (f"at success {s:g}, k = {_k(b['k_fraction'])} lowers leakage from {full['leakage']:.3f} to "
                    f"{b['leakage']:.3f} (by {-b['delta']:.3f}, 95 % interval of the difference "
                    f"[{b['delta_low']:+.3f}, {b['delta_high']:+.3f}])")
            kf = b["k_fraction"]
        else:
            lowest = tf.sort_values("leakage").iloc[0] if len(tf) else None
            unreached = ", ".join(_k(k) for k in g[(g["k_fraction"] < 1) & ~np.isfinite(g["leakage"])]["k_fraction"])
            what = f"at success {s:g} no k lowers leakage below k = all's {full['leakage']:.3f}"
            if lowest is not None:
                what += (f" (the lowest, k = {_k(lowest['k_fraction'])} at {lowest['leakage']:.3f}, has a difference "
                         f"interval [{lowest['delta_low']:+.3f}, {lowest['delta_high']:+.3f}] that is not below 0)")
            if unreached:
                what += f"; the curves of k = {unreached} never reach that success"
            kf = lowest["k_fraction"] if lowest is not None else None
        if worse:
            what += f"; k = {worse} raise it (interval of the difference above 0)"
        vote = v[(v["success_level"] == s) & (v["k_fraction"] == kf)] if kf is not None else v.iloc[:0]
        if len(vote) and np.isfinite(vote.iloc[0]["prefer_tf"]):
            r = vote.iloc[0]
            what += (f"; per image the oracle prefers that truncated edit on {r['prefer_tf']:.0%} "
                     f"[{r['ci_low']:.0%}, {r['ci_high']:.0%}] of {int(r['n'])} images ({r['ties']:.0%} ties, "
                     f"the untruncated one on {r['prefer_full']:.0%}; HDAE Table 2: {PAPER_TF_PREFERENCE:.0%} of votes)")
        parts.append(what)
    return f"{model}, `{attribute}` ({step_rule} step): " + "; ".join(parts)


def sparsity_finding(table: pd.DataFrame, top: float = 0.01) -> str:
    """Per model, the share of Σ|n| in the top ``top`` of the entries (median and range over attributes) beside a
    random Gaussian direction's (a Markdown sentence rendered from ``sparsity_table``)."""
    parts = []
    for model, g in table[np.isclose(table["top_fraction"], top)].groupby("model", sort=False):
        over = int((g["share"] > g["random_mean"] + 2 * g["random_sd"]).sum())
        parts.append(f"{model}: the top {top:.0%} of the entries ({int(g['entries'].iloc[0])} of {int(g['size'].iloc[0])}) "
                     f"hold {g['share'].median():.1%} of Σ|n| at the median over {len(g)} attributes (range "
                     f"{g['share'].min():.1%}–{g['share'].max():.1%}), against {g['random_mean'].iloc[0]:.1%} ± "
                     f"{g['random_sd'].iloc[0]:.1%} for a random Gaussian direction; {over} of {len(g)} lie more than "
                     f"two sd above it")
    return "; ".join(parts)
