"""Figures: image grids, curves, ECDFs and level heatmaps."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

from .editing import normalized_weights
from .hierarchy import level_shares


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] → uint8 [B, H, W, 3]."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(rows: Sequence[torch.Tensor], scale: int = 1, pad: int = 1) -> Image.Image:
    """A grid image: one row per tensor [N, 3, H, W] in [-1, 1], with white padding."""
    rows = [to_uint8(r) for r in rows]
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = img
    im = Image.fromarray(canvas)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def save_grid(path: str | Path, rows: Sequence[torch.Tensor], scale: int = 1) -> Path:
    """Write an image grid PNG (see ``image_grid``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, scale=scale).save(path)
    return path


# ---------------------------------------------------------------- labelled image grids

# Label-map colours (background, ellipse, square, triangle, star, clutter), RGB in [0, 1]: greys, pink, brown and
# olive, none of them one of the world's object colours (red, green, blue, yellow, purple, cyan), so a layout is
# never mistaken for a rendered object
LABEL_PALETTE = ((0.10, 0.10, 0.10), (1.00, 0.62, 0.78), (0.62, 0.40, 0.20), (0.97, 0.97, 0.97),
                 (0.62, 0.62, 0.18), (0.50, 0.50, 0.50))


def label_map_to_image(label_map: torch.Tensor, palette: Sequence[Sequence[float]] = LABEL_PALETTE) -> torch.Tensor:
    """Integer label maps [B, H, W] → colour images [B, 3, H, W] in [-1, 1] (one palette colour per label)."""
    lm = torch.as_tensor(label_map).long()
    if lm.dim() == 2:
        lm = lm[None]
    pal = torch.tensor(palette, dtype=torch.float32)
    if lm.numel() and int(lm.max()) >= len(pal):
        raise ValueError(f"label_map: label {int(lm.max())} has no colour; the palette has {len(pal)}")
    return (pal[lm].permute(0, 3, 1, 2) * 2 - 1).contiguous()


def label_legend(names: Sequence[str], palette: Sequence[Sequence[float]] = LABEL_PALETTE) -> list[tuple[str, tuple]]:
    """(name, colour) per label of a label map, for a grid's ``legend``."""
    if len(names) > len(palette):
        raise ValueError(f"label_legend: {len(names)} labels, the palette has {len(palette)} colours")
    return [(str(n), tuple(c)) for n, c in zip(names, palette)]


def noise_to_image(x: torch.Tensor, sigmas: float = 2.5) -> torch.Tensor:
    """Show N(0, I)-like tensors (x_T, x_t) as images: ±``sigmas`` standard deviations map to [-1, 1]."""
    return (x / sigmas).clamp(-1, 1)


@functools.lru_cache(maxsize=8)
def _font(size: int = 12):
    """DejaVu Sans, matplotlib's own font: the PNG and the vector copies set labels in the same metrics."""
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:  # pragma: no cover - matplotlib ships the font
        return ImageFont.load_default(size=size)


def _text_size(font, text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    x0, y0, x1, y1 = font.getbbox(text)
    return x1 - min(x0, 0), y1 - min(y0, 0)


def _wrap(font, text: str, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a word longer than a line is cut by characters)."""
    lines, cur = [], ""
    for word in str(text).split():
        trial = f"{cur} {word}".strip()
        if _text_size(font, trial)[0] <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = word
        while _text_size(font, cur)[0] > width and len(cur) > 1:
            cut = len(cur) - 1
            while cut > 1 and _text_size(font, cur[:cut])[0] > width:
                cut -= 1
            lines.append(cur[:cut])
            cur = cur[cut:]
    if cur:
        lines.append(cur)
    return lines


def grid_font_size(cell_height: int) -> int:
    """Label size in pixels for grid cells ``cell_height`` px tall: 12 px (readable on screen and, at a column's
    width, in print) up to 64 px cells, growing with larger ones."""
    return max(12, round(cell_height / 5.5))


def _grid_layout(rows, row_labels, col_labels, scale, pad, font_size, title, legend) -> dict[str, Any]:
    """Where everything of a labelled grid goes, in pixels: one layout for the PNG and the vector copies."""
    grid = image_grid(rows, scale=scale, pad=pad)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels: {len(row_labels)} labels for {len(rows)} rows")
    n_cols = max(len(r) for r in rows)
    if col_labels is not None and len(col_labels) > n_cols:
        raise ValueError(f"col_labels: {len(col_labels)} labels for {n_cols} columns")
    h, w = rows[0].shape[-2] * scale, rows[0].shape[-1] * scale
    font_size = font_size or grid_font_size(h)
    font = _font(font_size)
    line_h = _text_size(font, "Ag")[1] + 3
    gap = 4
    left = max((_text_size(font, str(t))[0] for t in row_labels), default=0) + 2 * gap if row_labels else 0
    width = left + grid.width
    texts: list[tuple[int, int, str]] = []
    swatches: list[tuple[int, int, int, tuple]] = []
    y = 0
    if title:
        for line in _wrap(font, str(title), width - 2 * gap):
            texts.append((gap, y + 1, line))
            y += line_h
        y += gap
    if col_labels:
        wrapped = [_wrap(font, str(t), w - gap) for t in col_labels]  # a gap between neighbouring labels
        for j, lines in enumerate(wrapped):
            x0 = left + pad * scale + j * (w + pad * scale)
            for k, line in enumerate(lines):
                texts.append((x0 + max(0, (w - _text_size(font, line)[0]) // 2), y + k * line_h + 1, line))
        y += max(len(ls) for ls in wrapped) * line_h + gap
    top = y
    for i, text in enumerate(row_labels or []):
        texts.append((gap, top + pad * scale + i * (h + pad * scale) + (h - line_h) // 2, str(text)))
    y = top + grid.height
    if legend:
        y += gap
        x, box = gap, line_h - 3
        for name, colour in legend:
            item = box + gap + _text_size(font, name)[0] + 3 * gap
            if x > gap and x + item > width:
                x, y = gap, y + line_h
            swatches.append((x, y + 1, box, tuple(colour)))
            texts.append((x + box + gap, y, name))
            x += item
        y += line_h + gap
    return {"grid": grid, "size": (width, max(y, top + grid.height)), "origin": (left, top), "texts": texts,
            "swatches": swatches, "font": font, "font_size": font_size}


def labeled_grid(rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = None, scale: int = 2, pad: int = 1,
                 font_size: int | None = None, title: str | None = None,
                 legend: Sequence[tuple[str, Sequence[float]]] | None = None) -> Image.Image:
    """``image_grid`` with a label left of each row and above each column, an optional ``title`` above and a
    ``legend`` of (name, RGB in [0, 1]) swatches below (white margins, black text; ``grid_font_size`` by default)."""
    lay = _grid_layout(rows, row_labels, col_labels, scale, pad, font_size, title, legend)
    canvas = Image.new("RGB", lay["size"], (255, 255, 255))
    canvas.paste(lay["grid"], lay["origin"])
    draw = ImageDraw.Draw(canvas)
    for x, y, text in lay["texts"]:
        draw.text((x, y), text, fill=(0, 0, 0), font=lay["font"])
    for x, y, box, colour in lay["swatches"]:
        fill = tuple(int(round(255 * c)) for c in colour)
        draw.rectangle((x, y, x + box - 1, y + box - 1), fill=fill, outline=(0, 0, 0))
    return canvas


def labeled_grid_figure(rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
                        col_labels: Sequence[str] | None = None, scale: int = 2, pad: int = 1,
                        font_size: int | None = None, title: str | None = None,
                        legend: Sequence[tuple[str, Sequence[float]]] | None = None, dpi: int = 100) -> Figure:
    """``labeled_grid`` as a matplotlib figure of the same size: the images raster, the labels text (for PDF/SVG)."""
    lay = _grid_layout(rows, row_labels, col_labels, scale, pad, font_size, title, legend)
    (W, H), (left, top), grid = lay["size"], lay["origin"], lay["grid"]
    fig = Figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.axis("off")
    ax.imshow(np.asarray(grid), extent=(left, left + grid.width, top + grid.height, top), interpolation="nearest")
    points = lay["font_size"] * 72 / dpi  # the PNG's pixel size, in points at this dpi
    for x, y, text in lay["texts"]:
        ax.text(x, y, text, fontsize=points, family="DejaVu Sans", va="top", ha="left")
    for x, y, box, colour in lay["swatches"]:
        ax.add_patch(Rectangle((x, y), box, box, facecolor=colour, edgecolor="black", lw=0.5))
    return fig


def save_labeled_grid(path: str | Path, rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
                      col_labels: Sequence[str] | None = None, scale: int = 2, title: str | None = None,
                      legend: Sequence[tuple[str, Sequence[float]]] | None = None) -> Path:
    """Write a ``labeled_grid`` PNG, and a vector copy per other format of ``figure_formats``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = dict(row_labels=row_labels, col_labels=col_labels, scale=scale, title=title, legend=legend)
    labeled_grid(rows, **kw).save(path)
    copies = vector_copies(path)
    if copies:  # the figure is laid out once for all the vector formats
        with matplotlib.rc_context(VECTOR_TEXT):
            fig = labeled_grid_figure(rows, **kw)
            for copy in copies:
                fig.savefig(copy, facecolor="white")
    return path


# ---------------------------------------------------------------- figure formats

FORMATS_ENV = "HDAE_FIGURE_FORMATS"  # set by `hdae figures --format` for its kernels (pipeline.FORMATS_ENV)
FORMATS = ("png", "pdf", "svg")
VECTOR_TEXT = {"pdf.fonttype": 42, "svg.fonttype": "none"}  # labels stay text (editable, searchable), not outlines


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'png,pdf,svg' → ('png', 'pdf', 'svg'): PNG always first (the report's index shows the PNGs)."""
    parts = text.split(",") if isinstance(text, str) else list(text or [])
    chosen = [p.strip().lower().lstrip(".") for p in parts if p.strip()]
    bad = [p for p in chosen if p not in FORMATS]
    if bad:
        raise ValueError(f"--format {', '.join(bad)}: choose from {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(["png", *chosen]))


def figure_formats() -> tuple[str, ...]:
    """The formats every figure is written in: ``$HDAE_FIGURE_FORMATS`` (``hdae figures --format``), else PNG."""
    return parse_formats(os.environ.get(FORMATS_ENV, ""))


def vector_copies(path: str | Path) -> list[Path]:
    """Where a figure saved as ``path`` gets its copies in the other formats of ``figure_formats``."""
    path = Path(path)
    return [path.with_suffix(f".{f}") for f in figure_formats() if f".{f}" != path.suffix.lower()]


# ---------------------------------------------------------------- matplotlib figures
# Figures are built with matplotlib.figure.Figure (no pyplot state): a notebook shows one with display(fig).


def _figure(n_panels: int, ncols: int | None, panel_size: tuple[float, float], dpi: int):
    ncols = max(1, min(ncols or n_panels, n_panels))
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_figure(fig, path: str | Path, dpi: int | None = None) -> Path:
    """Write a matplotlib figure as PNG at exactly figsize × dpi pixels, and a vector copy per other format of
    ``figure_formats`` beside it (``hdae figures --format png,pdf,svg``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi or fig.dpi, facecolor="white")
    for copy in vector_copies(path):
        with matplotlib.rc_context(VECTOR_TEXT):
            fig.savefig(copy, dpi=dpi or fig.dpi, facecolor="white")
    return path


def _finite(df, x: str, y: str):
    d = df[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    return d[x].to_numpy(), d[y].to_numpy()


def plot_curves(runs, x: str, ys: Sequence[str], path: str | Path | None = None, titles: Sequence[str] | None = None,
                logx: bool = False, logy: bool = False, ncols: int | None = None, xlabel: str | None = None,
                panel_size: tuple[float, float] = (4.0, 3.0), dpi: int = 100, markers: bool = True,
                suptitle: str | None = None, bands: bool = True):
    """One panel per column in ``ys`` against ``x``, one line per run ({label: DataFrame}); empty cells skipped.
    ``bands``: shade each line's interval where the frame has ``<y>_low`` / ``<y>_high`` columns."""
    if not isinstance(runs, dict):
        runs = {"": runs}
    fig, axes = _figure(len(ys), ncols, panel_size, dpi)
    for ax, y, title in zip(axes, ys, titles or ys):
        drawn = False
        for label, df in runs.items():
            if y not in df.columns or x not in df.columns:
                continue
            xs, vs = _finite(df, x, y)
            if len(xs):
                line, = ax.plot(xs, vs, marker="o" if markers and len(xs) <= 30 else None, ms=3, label=label or None)
                drawn = True
                if bands and {f"{y}_low", f"{y}_high"} <= set(df.columns):
                    b = df[[x, f"{y}_low", f"{y}_high"]].astype(float).dropna().sort_values(x)
                    ax.fill_between(b[x], b[f"{y}_low"], b[f"{y}_high"], color=line.get_color(), alpha=0.2, lw=0)
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(title)
        ax.set_xlabel(xlabel or x)
        if logx:
            ax.set_xscale("log")
        lo, hi = ax.dataLim.y0, ax.dataLim.y1
        if logy and drawn and lo > 0 and hi / lo >= 10:  # within one decade a log axis only garbles the ticks
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if drawn and any(lbl for lbl in runs):
            ax.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    if path is not None:
        save_figure(fig, path)
    return fig


def ecdf(values) -> tuple[np.ndarray, np.ndarray]:
    """(sorted values, F) with F_i = i / n: the empirical CDF as a step function's corners."""
    v = np.sort(np.asarray(torch.as_tensor(values).detach().cpu().double().flatten()))
    return v, np.arange(1, len(v) + 1) / max(len(v), 1)


def plot_ecdf(panels, path: str | Path | None = None, xlabel: str = "n̂", ncols: int | None = None,
              styles: dict[str, dict] | None = None, panel_size: tuple[float, float] = (4.5, 3.5), dpi: int = 100,
              suptitle: str | None = None):
    """ECDFs (``seaborn.ecdfplot``): ``panels`` is {panel title: {label: values}} (or one {label: values});
    ``styles`` maps label → line kwargs. A label keeps its colour in every panel."""
    first = next(iter(panels.values()), None)
    if not isinstance(first, dict):
        panels = {"": panels}
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    colours = dict(zip(labels, sns.color_palette(None if len(labels) <= 10 else "husl", n_colors=len(labels))))
    fig, axes = _figure(len(panels), ncols, panel_size, dpi)
    for ax, (title, series) in zip(axes, panels.items()):
        for label, vals in series.items():
            style = {"color": colours[label], **(styles or {}).get(label, {})}
            sns.ecdfplot(x=ecdf(vals)[0], ax=ax, label=label, **style)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction ≤ x")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=6, ncol=2)
    if suptitle:
        fig.suptitle(suptitle)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_level_heatmap(directions, path: str | Path | None = None, level_names: Sequence[str] | None = None,
                       ncols: int = 1, panel_size: tuple[float, float] = (9.0, 1.6), dpi: int = 100,
                       cmap: str = "magma", suptitle: str | None = None):
    """n̂ (Eq. 1) as a level × dimension heatmap per direction ({name: n [L, D]}), each level's share of Σ|n| at the right."""
    if not isinstance(directions, dict):
        directions = {"": directions}
    first = torch.as_tensor(next(iter(directions.values())))
    L = first.shape[0] if first.dim() == 2 else 1
    ph = panel_size[1] * max(1.0, 0.35 * L + 0.3)
    fig, axes = _figure(len(directions), ncols, (panel_size[0], ph), dpi)
    for ax, (name, n) in zip(axes, directions.items()):
        n = torch.as_tensor(n)
        n = n[None] if n.dim() == 1 else n
        names = list(level_names) if level_names else [f"z{l + 1}" if n.shape[0] > 1 else "z" for l in range(n.shape[0])]
        D = n.shape[1]
        step = 10 ** int(np.log10(max(D, 1)))  # a tick every 100 of 512 dimensions: a ruler, not a label per cell
        sns.heatmap(normalized_weights(n.detach().double().cpu()).numpy(), ax=ax, cmap=cmap, vmin=0, vmax=1, cbar=False, yticklabels=names,
                    xticklabels=False, rasterized=True)
        ax.set_xticks(np.arange(0, D, step) + 0.5, [str(d) for d in range(0, D, step)], rotation=0, fontsize=6)
        ax.tick_params(axis="y", labelsize=7, rotation=0)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlabel("dimension", fontsize=7)
        sec = ax.secondary_yaxis("right")
        sec.set_yticks(np.arange(n.shape[0]) + 0.5, [f"{s:.0%}" for s in level_shares(n)], fontsize=7)
        sec.set_ylabel("share of Σ|n|", fontsize=6)
    if len(axes) and axes[0].collections:
        fig.colorbar(axes[0].collections[0], ax=list(axes), shrink=0.8, label="n̂", pad=0.08)
    if suptitle:
        fig.suptitle(suptitle)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_bars(table, path: str | Path | None = None, ylabel: str = "", ylim: tuple[float, float] | None = None,
              title: str | None = None, size: tuple[float, float] = (9.0, 3.5), dpi: int = 100,
              hline: float | None = None, errorbar=("ci", 95), seed: int = 0, intervals=None,
              groups: Mapping[str, str] | None = None):
    """Grouped bars (``seaborn.barplot``): one group per index label of ``table`` (a DataFrame), one bar per column.

    Rows that share an index label are replicates (per image, per seed): the bar is their mean and the whisker
    ``errorbar`` (default a 95 % bootstrap interval, seeded); a label with one row has no whisker.
    ``intervals`` = (low, high), two frames shaped as ``table``: whiskers computed elsewhere (e.g. a bootstrap of
    a statistic that is no mean, such as AUROC). ``groups`` maps index labels to a group (a tier: structure /
    appearance / other): the rows are ordered by group, a group's name is written under its labels and a line
    parts it from the next. The legend of the columns stands beside the axes, off the bars."""
    fig, (ax,) = _figure(1, 1, size, dpi)
    table = table.copy()
    table.index = [str(r) for r in table.index]
    rows, cols = list(dict.fromkeys(table.index)), [str(c) for c in table.columns]
    if groups:
        group_of = {r: str(groups.get(r, "other")) for r in rows}
        rows = sorted(rows, key=lambda r: _group_rank(group_of[r], group_of.values()))  # stable within a group
    table.columns = cols
    long = table.rename_axis("_group").reset_index().melt(id_vars="_group", var_name="_bar", value_name="_value")
    long["_value"] = pd.to_numeric(long["_value"], errors="coerce")
    replicated = len(rows) < len(table)
    sns.barplot(long, x="_group", y="_value", hue="_bar", order=rows, hue_order=cols,
                errorbar=errorbar if replicated else None, seed=seed, ax=ax, err_kws={"linewidth": 1},
                capsize=0.15, legend=len(cols) > 1)
    if intervals is not None and not replicated:
        low, high = (pd.DataFrame(f).set_axis([str(r) for r in f.index]).set_axis([str(c) for c in f.columns], axis=1)
                     for f in intervals)
        for col, bars in zip(cols, ax.containers):  # one container per hue level
            for bar in bars:
                # a NaN value has no bar, so pair each bar with its row by position (group i is centred on x = i)
                row = rows[int(round(bar.get_x() + bar.get_width() / 2))]
                lo, hi = low.get(col, {}).get(row), high.get(col, {}).get(row)
                if lo is not None and hi is not None and np.isfinite([lo, hi]).all():
                    ax.plot([bar.get_x() + bar.get_width() / 2] * 2, [lo, hi], color="black", lw=1)
    ax.set_xticks(range(len(rows)), rows, rotation=40, ha="right", fontsize=8)
    ax.set_xlabel("")
    if groups:
        _group_spans(ax, [group_of[r] for r in rows])
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, pad=14 if groups else 6)
    if len(cols) > 1:
        ax.legend(fontsize=8, title=None, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(alpha=0.3, axis="y")
    ax.set_axisbelow(True)
    if path is not None:
        save_figure(fig, path)
    return fig


TIER_ORDER = ("structure", "appearance", "other")


def _group_rank(group: str, seen) -> tuple[int, int]:
    """Tiers in ``TIER_ORDER``, then any other group in the order it first appears."""
    seen = list(dict.fromkeys(seen))
    return (TIER_ORDER.index(group), 0) if group in TIER_ORDER else (len(TIER_ORDER), seen.index(group))


def _group_spans(ax, group_per_position: Sequence[str]) -> None:
    """Name each run of equal groups along the x axis (above the axes) and part the runs by a vertical line."""
    start = 0
    for i in range(1, len(group_per_position) + 1):
        if i == len(group_per_position) or group_per_position[i] != group_per_position[start]:
            ax.text((start + i - 1) / 2, 1.01, group_per_position[start], transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, style="italic")
            if i < len(group_per_position):
                ax.axvline(i - 0.5, color="grey", lw=0.8)
            start = i


def plot_level_share_matrix(shares: pd.DataFrame, path: str | Path | None = None,
                            groups: Mapping[str, str] | None = None, title: str | None = None, dpi: int = 100,
                            cell: tuple[float, float] = (0.62, 0.3)):
    """Attributes × levels (``shares``: a row per attribute, columns z1…zL) with each share printed in its cell
    (``seaborn.heatmap``); ``groups`` (attribute → tier) orders the rows and parts the tiers by a line."""
    shares = shares.astype(float)
    rows = list(shares.index)
    if groups:
        named = [str(groups.get(r, "other")) for r in rows]
        rows = sorted(rows, key=lambda r: _group_rank(str(groups.get(r, "other")), named))
    shares = shares.loc[rows]
    labels = [f"{r} ({groups.get(r, 'other')})" if groups else str(r) for r in rows]
    size = (max(5.6, 2.8 + cell[0] * shares.shape[1]), 0.9 + cell[1] * len(rows))  # room for the title at small L
    fig, (ax,) = _figure(1, 1, size, dpi)
    sns.heatmap(shares.to_numpy(), ax=ax, annot=True, fmt=".0%", cmap="Blues", vmin=0, vmax=1, linewidths=0.5,
                xticklabels=[str(c) for c in shares.columns], yticklabels=labels, annot_kws={"fontsize": 7},
                cbar_kws={"label": "share of Σ|n|", "shrink": 0.8})
    ax.tick_params(axis="y", labelsize=8, rotation=0)
    ax.tick_params(axis="x", labelsize=8, rotation=0)
    ax.set_xlabel("code level (z1: finest, last: coarsest)", fontsize=8)
    ax.set_ylabel("")
    if groups:
        tiers = [str(groups.get(r, "other")) for r in rows]
        for i in range(1, len(tiers)):
            if tiers[i] != tiers[i - 1]:
                ax.axhline(i, color="black", lw=1.2)
    if title:
        ax.set_title(title, fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig

