"""The Fig. 5 ablation: training curves of every variant and seed, seed bands and steps-to-threshold."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .checks import check

EVAL_COLUMNS = ("eval_mse_enc", "eval_mse_rand", "eval_lpips_enc", "eval_lpips_rand")
_SEED = re.compile(r"^seed(\d+)$")


def read_runs(folder: str | Path, variants: Sequence[str], column: str = "eval_mse_rand") -> tuple[pd.DataFrame, list[str]]:
    """Evaluation rows of ``folder/<variant>/seed<k>/metrics.csv`` as one long table, and the variants with no run."""
    frames, missing = [], []
    for v in variants:
        found = False
        vdir = Path(folder) / v
        seeds = sorted((int(m.group(1)), p) for p in vdir.glob("seed*") if (m := _SEED.match(p.name)) and p.is_dir())
        for seed, p in seeds:
            f = p / "metrics.csv"
            if not f.is_file():
                continue
            df = pd.read_csv(f)
            if column not in df or df[column].notna().sum() == 0:
                continue
            ev = df.dropna(subset=[column]).copy()
            ev.insert(0, "seed", seed)
            ev.insert(0, "variant", v)
            frames.append(ev)
            found = True
        if not found:
            missing.append(v)
    cols = ["variant", "seed", "step", "images", *EVAL_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=cols), missing
    out = pd.concat(frames, ignore_index=True)
    return out[[c for c in cols if c in out.columns]], missing


def steps_to_threshold(runs: pd.DataFrame, column: str, threshold: float) -> pd.DataFrame:
    """One row per (variant, seed): the first evaluated step with ``column`` ≤ threshold (NaN: never reached)."""
    rows = []
    for (v, s), g in runs.groupby(["variant", "seed"], sort=False):
        g = g.sort_values("step")
        hit = g.loc[g[column] <= threshold, "step"]
        rows.append({"variant": v, "seed": int(s), "step": float(hit.iloc[0]) if len(hit) else float("nan"),
                     "last_step": int(g["step"].iloc[-1])})
    return pd.DataFrame(rows, columns=["variant", "seed", "step", "last_step"])


def threshold_table(runs: pd.DataFrame, column: str, thresholds: Mapping[str, float],
                    reference: str = "dae") -> pd.DataFrame:
    """Per variant and threshold: median steps over seeds, their range, how many seeds got there, and the
    reference's median over the variant's (> 1: the variant gets there sooner)."""
    rows = []
    for name, thr in thresholds.items():
        hits = steps_to_threshold(runs, column, thr)
        ref = hits.loc[hits["variant"] == reference, "step"]
        ref_median = float(ref.median()) if ref.notna().all() and len(ref) else float("nan")
        for v, g in hits.groupby("variant", sort=False):
            reached = g["step"].notna()
            med = float(g["step"].median()) if reached.all() else float("nan")
            rows.append({"threshold": name, "value": float(thr), "variant": v, "seeds": len(g),
                         "reached": int(reached.sum()), "median_steps": med,
                         "min_steps": float(g["step"].min()), "max_steps": float(g["step"].max()),
                         "speedup_vs_" + reference: ref_median / med if med > 0 else float("nan")})
    return pd.DataFrame(rows)


def final_values(runs: pd.DataFrame, columns: Sequence[str] = EVAL_COLUMNS) -> pd.DataFrame:
    """Per variant: the median over seeds of each run's last evaluation, with the seeds' min and max."""
    last = runs.sort_values("step").groupby(["variant", "seed"], sort=False).tail(1)
    out = last.groupby("variant", sort=False).agg(
        seeds=("seed", "nunique"), step=("step", "median"),
        **{f"{c}": (c, "median") for c in columns if c in last},
        **{f"{c}_min": (c, "min") for c in columns if c in last},
        **{f"{c}_max": (c, "max") for c in columns if c in last},
    )
    order = list(dict.fromkeys(runs["variant"]))  # the order the variants were read in
    return out.reindex([v for v in order if v in out.index]).reset_index()


def flattened(runs: pd.DataFrame, column: str, last: int = 3, tol: float = 0.05) -> dict[tuple[str, int], bool]:
    """Whether each run's last ``last`` evaluations of ``column`` lie within ``tol`` (relative) of each other."""
    out = {}
    for (v, s), g in runs.groupby(["variant", "seed"], sort=False):
        vals = g.sort_values("step")[column].dropna().to_numpy()[-last:]
        out[(v, int(s))] = bool(len(vals) == last and (vals.max() - vals.min()) <= tol * vals.min())
    return out


def checks(runs: pd.DataFrame, baselines: pd.Series, column: str = "eval_mse_rand",
           first_column: str = "eval_mse_rand") -> list[dict[str, Any]]:
    """The study's checks: every run beats its mean-colour baseline, and its curve falls from first to last."""
    out = []
    if runs.empty:
        out.append(check("ablation runs found", 0, 1, ">="))
    for (v, s), g in runs.groupby(["variant", "seed"], sort=False):
        g = g.sort_values("step")
        final = float(g[column].iloc[-1])
        base = float(baselines.get((v, int(s)), float("nan")))
        out.append(check(f"{v}/seed{s}: final {column} < mean-colour baseline", final, base, "<"))
        out.append(check(f"{v}/seed{s}: {first_column} falls (last < first)", final, float(g[first_column].iloc[0]), "<"))
    return out


# column: (panel title, y-axis label); the random-x_T panels first, since they are the yardstick
CURVES = {
    "eval_mse_rand": ("Random x_T: the codes alone", "held-out MSE"),
    "eval_lpips_rand": ("Random x_T: the codes alone", "held-out LPIPS"),
    "eval_mse_enc": ("Encoded x_T: codes and the image's own noise", "held-out MSE"),
    "eval_lpips_enc": ("Encoded x_T: codes and the image's own noise", "held-out LPIPS"),
}
ZOOM_FROM = 0.5  # a linear axis spans the curves from this fraction of the steps on (the early fall runs off the top)


def _linear_ylim(data: pd.DataFrame, col: str) -> tuple[float, float]:
    """A linear y range that shows the later curves apart: every median from ``ZOOM_FROM`` of the steps on."""
    late = data[data["step"] >= data["step"].max() * ZOOM_FROM]
    med = late.groupby(["variant", "step"])[col].median()
    lo, hi = float(late[col].min()), float(med.max())
    margin = 0.08 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 1.0
    return lo - margin, hi + 3 * margin


def plot_ablation_curves(runs: pd.DataFrame, columns: Sequence[str] = tuple(CURVES), path: str | Path | None = None,
                         titles: Sequence[str] | None = None, baselines: Mapping[str, float] | None = None,
                         logy: bool = True, panel_size: tuple[float, float] = (4.2, 3.2), dpi: int = 110):
    """One panel per column against training steps: a line per variant (median over seeds), its seeds' range as a
    band, one legend beside the panels. ``logy=False``: linear axes spanning the second half of training, where
    the variants' gaps are read."""
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    from .plots import save_figure

    n = len(columns)
    ncols = 2 if n > 1 else 1
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols + 1.3, panel_size[1] * nrows), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    order = list(dict.fromkeys(runs["variant"]))
    colours = dict(zip(order, sns.color_palette(n_colors=max(len(order), 1))))
    handles: dict[str, Any] = {}
    for i, (ax, col) in enumerate(zip(axes, columns)):
        title, ylabel = CURVES.get(col, (col, col))
        data = runs.dropna(subset=[col])
        if len(data):
            sns.lineplot(data=data, x="step", y=col, hue="variant", hue_order=order, palette=colours,
                         estimator="median", errorbar=lambda v: (v.min(), v.max()), ax=ax, lw=1.4)
            seeds = data.groupby("variant")["seed"].nunique()
            handles.update((f"{v} ({seeds[v]})", h) for h, v in zip(*ax.get_legend_handles_labels()))
            ax.get_legend().remove()
        if baselines and col in baselines:
            line = ax.axhline(baselines[col], color="grey", ls="--", lw=1)
            handles["mean-colour baseline"] = line
        if logy and len(data) and (data[col] > 0).all():
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.1 rather than 10^-1
            lo, hi = ax.get_ylim()
            if hi / lo < 6:  # within a decade the minor ticks (0.2, 0.3, ...) are the only labels; beyond, they crowd
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        elif len(data):
            ax.set_ylim(*_linear_ylim(data, col))
        ax.set_title((titles or [None] * n)[i] or title, fontsize=9)
        ax.set_xlabel("training steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False,
                   title="variant (seeds)", title_fontsize=8)
    fig.suptitle("Reconstruction against training steps (HDAE Fig. 5)\nline: median over seeds, band: their range"
                 + ("" if logy else f"; linear axes from {ZOOM_FROM:.0%} of the steps on"), fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


def encoded_rise(runs: pd.DataFrame, folder: str | Path | None = None) -> pd.DataFrame:
    """Per run: the encoded-x_T MSE at its first evaluation, at its lowest (and that step) and at its last, beside
    the random-x_T MSE at the first and last, and the DDIM steps of the evaluation (from the run's config)."""
    rows = []
    for (v, s), g in runs.dropna(subset=["eval_mse_enc", "eval_mse_rand"]).groupby(["variant", "seed"], sort=False):
        g = g.sort_values("step")
        enc, rand = g["eval_mse_enc"].to_numpy(float), g["eval_mse_rand"].to_numpy(float)
        low = int(np.argmin(enc))
        cfg = run_config(Path(folder) / v / f"seed{s}") if folder is not None else None
        rows.append({"variant": v, "seed": int(s), "enc_first": enc[0], "enc_min": enc[low],
                     "enc_min_step": int(g["step"].iloc[low]), "enc_last": enc[-1], "rand_first": rand[0],
                     "rand_last": rand[-1], "eval_steps": cfg.eval_steps if cfg is not None else None})
    return pd.DataFrame(rows, columns=["variant", "seed", "enc_first", "enc_min", "enc_min_step", "enc_last",
                                       "rand_first", "rand_last", "eval_steps"])


def encoded_finding(rise: pd.DataFrame) -> dict[str, Any]:
    """``Study.finding``'s arguments for the encoded-x_T curves: how far below random x_T they end, how many rise
    after their lowest point while random x_T falls, and what that curve measures."""
    steps = sorted({int(t) for t in rise["eval_steps"].dropna()})
    rising = rise["enc_last"] > rise["enc_min"] * 1.1  # 10 %: more than the evaluation's noise between steps
    return {
        "template": ("Over {n} runs the MSE from the encoded x_T ends at a median {enc:.2g}, {ratio:.0f}× below the "
                     "MSE from random x_T ({rand:.3f}, from {rand0:.3f} at the first evaluation); "
                     + ("in {rising} of them it ends more than 10 % above its lowest value (a median {rise:.0%} "
                        "above it, lowest at step {step:.0f})" if rising.any() else
                        "in none of them does it end more than 10 % above its lowest value")),
        "claim": ("x_T carries nearly all of the image, and the encoded curve measures the round trip of DiffAE's "
                  "plain DDIM inversion at T = {T} (each backward step reuses the prediction at x_t for x_t+1), an "
                  "error that can grow while the codes improve; it is no measure of the codes"),
        "checks": bool(len(rise)) and bool((rise["enc_last"] < rise["rand_last"]).all()
                                           and (rise["rand_last"] < rise["rand_first"]).all()),
        "n": len(rise), "enc": float(rise["enc_last"].median()) if len(rise) else float("nan"),
        "ratio": float((rise["rand_last"] / rise["enc_last"]).median()) if len(rise) else float("nan"),
        "rand": float(rise["rand_last"].median()) if len(rise) else float("nan"),
        "rand0": float(rise["rand_first"].median()) if len(rise) else float("nan"),
        "rising": int(rising.sum()),
        "rise": float((rise["enc_last"] / rise["enc_min"] - 1)[rising].median()) if rising.any() else 0.0,
        "step": float(rise.loc[rising, "enc_min_step"].median()) if rising.any() else float("nan"),
        "T": "/".join(map(str, steps)) or "the runs' evaluation steps",
    }


def run_config(run_dir: str | Path):
    """The TrainConfig a run was trained with (its ``config.json``, or ``train.json`` as ``hdae train`` writes it)."""
    from .config import TrainConfig

    for name in ("config.json", "train.json"):
        f = Path(run_dir) / name
        if f.is_file():
            return TrainConfig.from_dict(json.loads(f.read_text()))
    return None


def mean_colour_baselines(folder: str | Path, runs: pd.DataFrame, size: int = 256) -> pd.Series:
    """Per (variant, seed): the mean-colour MSE of the run's own held-out images (the first ``size`` of them)."""
    from .evaluation import mean_colour_mse
    from .config import TrainConfig
    from .train import held_out_batch

    out = {}
    for v, s in runs[["variant", "seed"]].drop_duplicates().itertuples(index=False):
        cfg = run_config(Path(folder) / v / f"seed{s}") or TrainConfig(seed=int(s))
        x = held_out_batch(dataclasses.replace(cfg, eval_size=size), Path(folder) / v / f"seed{s}")
        out[(v, int(s))] = float(mean_colour_mse(x).mean())
    return pd.Series(out, dtype=float)


def reference_final(runs: pd.DataFrame, column: str, reference: str = "dae") -> float:
    """The reference variant's final value of ``column``, from its worst seed (so every seed of it gets there)."""
    ref = runs[runs["variant"] == reference]
    if ref.empty:
        return float("nan")
    return float(ref.sort_values("step").groupby("seed")[column].last().max())


def speedup_sentence(table: pd.DataFrame, threshold: str, variant: str = "hdae_u", reference: str = "dae") -> str:
    """One measured sentence: how much sooner ``variant`` reaches the named threshold than ``reference``."""
    col = "speedup_vs_" + reference
    row = table[(table["threshold"] == threshold) & (table["variant"] == variant)]
    ref = table[(table["threshold"] == threshold) & (table["variant"] == reference)]
    if row.empty or ref.empty or not np.isfinite(row[col].iloc[0]):
        return f"**{variant} vs {reference} at {threshold}:** not measurable here (a run did not reach it)."
    r, q = row.iloc[0], ref.iloc[0]
    return (f"**{variant} reaches {threshold} ({r['value']:.4f}) in a median {r['median_steps']:.0f} steps "
            f"(seeds {r['min_steps']:.0f}–{r['max_steps']:.0f}, n = {r['seeds']}), {reference} in "
            f"{q['median_steps']:.0f} ({q['min_steps']:.0f}–{q['max_steps']:.0f}, n = {q['seeds']}): "
            f"{r[col]:.2f}× sooner.** The paper reports at least 3×.")


def cards_markdown(folder: str | Path, runs: pd.DataFrame) -> str:
    """The command and status of every run, from the cards beside the curves."""
    lines = []
    for v, s in runs[["variant", "seed"]].drop_duplicates().itertuples(index=False):
        d = Path(folder) / v / f"seed{s}"
        cmd = (d / "command.txt").read_text().strip() if (d / "command.txt").is_file() else "unknown"
        last = runs[(runs["variant"] == v) & (runs["seed"] == s)]["step"].max()
        lines.append(f"- **{v}, seed {s}** (last evaluation at step {last:,}): `{cmd}`")
    return "\n".join(lines) or "no runs"


def retrain(folder: str | Path, preset: str, variant: str, seed: int, steps: int, batch_size: int,
            eval_every: int, eval_size: int, eval_steps: int) -> Path:
    """Train one ablation run into ``folder/<variant>/seed<k>`` as ``hdae train`` would, with its command."""
    from .config import ModelConfig
    from .config import TrainConfig
    from .train import train

    out = Path(folder) / variant / f"seed{seed}"
    cfg = TrainConfig(model=ModelConfig.preset(preset, variant), out=str(out), steps=steps, batch_size=batch_size,
                      seed=seed, eval_every=eval_every, eval_size=eval_size, eval_steps=eval_steps,
                      log_every=max(1, min(eval_every, 50)), ckpt_every=steps, progress=False, tensorboard=False)
    t0 = time.perf_counter()
    train(cfg, overwrite=True)  # the study's own work folder: a retrain replaces the run it made before
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "command.txt").write_text(
        f"hdae train --preset {preset} --variant {variant} --seed {seed} --steps {steps} --batch {batch_size} "
        f"--eval-every {eval_every} --eval-size {eval_size} --out {out}\n")
    print(f"{variant} seed {seed}: {time.perf_counter() - t0:.0f} s")
    return out
