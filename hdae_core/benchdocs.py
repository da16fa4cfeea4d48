"""Benchmark numbers in the docs, written from the benchmark's own record and never typed by hand.

``benchmarks/editor_latency.py --record`` writes ``docs/benchmarks/editor_latency.json``; ``sync_latency()``
(run by it, and by ``hdae publish ... docs``) rewrites the table in ``docs/performance.md`` between its markers
and the README's **Render:** line from that record.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from .pretrained import REPO_DIR

LATENCY_FILE = Path("docs") / "benchmarks" / "editor_latency.json"
LATENCY_BEGIN = "<!-- editor_latency.json: begin (written by benchmarks/editor_latency.py --record) -->"
LATENCY_END = "<!-- editor_latency.json: end -->"
RENDER_MARK = "**Render:**"  # the README line on the editor's latency
TARGET_S = 0.5  # a Render click's median at T = 20 on 2 cores


def spread(ts: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile and maximum of some timings (seconds), and how many."""
    ts = [float(t) for t in ts]
    p90 = statistics.quantiles(ts, n=10, method="inclusive")[-1] if len(ts) > 1 else ts[0]
    return {"median": round(statistics.median(ts), 4), "p90": round(p90, 4), "max": round(max(ts), 4), "n": len(ts)}


def read_latency(root: Path | None = None) -> dict[str, Any]:
    """The recorded editor latency ({} when none is recorded or the file is unreadable)."""
    try:
        return json.loads(((root or REPO_DIR) / LATENCY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def latency_table(record: dict[str, Any]) -> str:
    """The Markdown table of a latency record: one row per (threads, T)."""
    if not record.get("rows"):
        return "Not measured yet: run `python benchmarks/editor_latency.py --record`."
    lines = [f"Recorded {record['written']} on {record['machine']} (torch {record['torch']}, "
             f"{record['cores']} cores), `{record['model']}`, {record['renders']} Renders per row:", "",
             "| threads | T | first Render of an image | later Renders, median / p90 / max | α strip, median | "
             "DAE's edit beside it, median |", "|---:|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        dae = f"{r['dae']['median']:.3f} s" if r.get("dae") else "—"
        lines.append(f"| {r['threads']} | {r['steps']} | {r['first']:.2f} s | {r['renders']['median']:.3f} s / "
                     f"{r['renders']['p90']:.3f} s / {r['renders']['max']:.3f} s | {r['strip']['median']:.3f} s | "
                     f"{dae} |")
    return "\n".join(lines)


def render_line(record: dict[str, Any]) -> str:
    """The README's **Render:** line: the median Render at T = 20 on all the recorded cores, beside the target."""
    rows = [r for r in record.get("rows") or [] if r["steps"] == 20]
    if not rows:
        return f"{RENDER_MARK} not measured yet (`python benchmarks/editor_latency.py --record`)."
    r = max(rows, key=lambda r: r["threads"])
    held = "within" if r["renders"]["median"] <= TARGET_S else "over"
    return (f"{RENDER_MARK} a Render click takes {r['renders']['median']:.2f} s at the median "
            f"({r['renders']['p90']:.2f} s p90) on the shipped `{record['model']}` at T = 20 with {r['threads']} "
            f"thread(s) on a {record['cores']}-core CPU, {held} the {TARGET_S} s target; the first Render of an image "
            f"also inverts it ({r['first']:.2f} s). Recorded {record['written']} by `benchmarks/editor_latency.py` "
            f"([docs/performance.md](docs/performance.md#the-editors-render-click)).")


def sync_latency(root: Path | None = None) -> list[Path]:
    """Rewrite docs/performance.md's latency table and the README's **Render:** line from the record."""
    root = root or REPO_DIR
    record, changed = read_latency(root), []
    perf = root / "docs" / "performance.md"
    text = perf.read_text()
    if LATENCY_BEGIN in text and LATENCY_END in text:
        head, rest = text.split(LATENCY_BEGIN, 1)
        _, tail = rest.split(LATENCY_END, 1)
        new = f"{head}{LATENCY_BEGIN}\n{latency_table(record)}\n{LATENCY_END}{tail}"
        if new != text:
            perf.write_text(new)
            changed.append(perf)
    readme = root / "README.md"
    text = readme.read_text()
    new = "\n".join(render_line(record) if line.startswith(RENDER_MARK) else line for line in text.split("\n"))
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    return changed
