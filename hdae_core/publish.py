"""Publish a full report into the docs (``hdae publish REPORT DEST``): its figures into DEST/figures and
DEST/results.md written from its findings and checks, so the docs say what the last full run found."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .checks import describe
from .pipeline import NOTEBOOKS, RAN, REPO_DIR, STUDIES, STUDY, TIMES_FILE, read_summary, study_times

RESULTS = "results.md"
FIGURES = "figures"
COPIED = (".png", ".pdf", ".svg", ".csv")  # what a notebook's report folder holds that the docs show or link


class NotPublishable(ValueError):
    """The report is not one the docs may be written from (not the full profile, or not every notebook ok)."""


def publishable(summary: dict[str, Any] | None, reports: Path) -> None:
    """Refuse (NotPublishable, one line) a report that is missing, not the full profile, or not all ok."""
    if summary is None:
        raise NotPublishable(f"{reports}: no summary.json, not an hdae report (run `hdae figures` first)")
    if summary.get("profile") != "full":
        raise NotPublishable(f"{reports}: profile {summary.get('profile')!r}; only a full report is published "
                             f"(`hdae figures` without --profile smoke)")
    nbs = summary.get("notebooks") or {}
    if summary.get("inputs"):
        raise NotPublishable(f"{reports}: made with --checkpoint / --data; the docs describe the shipped models on "
                             f"Shapes")
    not_ran = [f"{n} {nbs[n]['status'] if n in nbs else 'missing'}" for n in NOTEBOOKS
               if n not in nbs or nbs[n].get("status") not in RAN]
    if not_ran:
        raise NotPublishable(f"{reports}: not every notebook ran to its end ({', '.join(not_ran)}); publish a report "
                             f"whose notebooks all ran (a degraded one is published with its failed checks named)")


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _statuses(nbs: dict[str, Any]) -> str:
    counts = {st: sum(r["status"] == st for r in nbs.values()) for st in RAN}
    return "all ok" if counts["degraded"] == 0 else f"{counts['ok']} ok and {counts['degraded']} degraded"


def results_markdown(summary: dict[str, Any], figures: dict[str, list[str]]) -> str:
    """docs/results.md: per study its question, findings, checks and figures, from the report alone."""
    nbs = summary["notebooks"]
    total = float(summary.get("seconds") or sum(float(r.get("seconds") or 0) for r in nbs.values()))
    lines = ["# Results", "",
             "Written by `hdae publish` from the last full report; do not edit by hand (rerun `make figures`, then "
             "`hdae publish reports docs`).", "",
             f"Report written {summary.get('written', '?')} by `{summary.get('command') or 'hdae figures'}`: "
             f"{len(nbs)} notebooks, {_statuses(nbs)}, in {_duration(total)} "
             f"({summary.get('jobs') or 1} at a time on {summary.get('cores') or '?'} cores).", ""]
    for name in NOTEBOOKS:
        r, spec = nbs[name], STUDY[name]
        m = r.get("metrics") or {}
        lines += [f"## {name}", "", spec.question, "",
                  f"Regenerates: {spec.regenerates}. Ran in {_duration(float(r.get('seconds') or 0))}: "
                  f"**{r['status']}**" + (" (a check failed: its finding says what is not shown on this model)"
                                          if r["status"] == "degraded" else "") + ".", ""]
        lines += [f"- {f}" for f in m.get("findings") or []] or ["- (this study records no findings)"]
        lines.append("")
        checks = m.get("checks") or []
        if checks:
            lines += ["| check | result |", "|---|---|"]
            lines += [f"| {_cell(c.get('name'))} | {_cell(describe(c)[len(str(c.get('name'))) + 2:])} |"
                      for c in checks]
            lines.append("")
        for fig in figures.get(name, []):
            if fig.endswith(".png"):
                lines += [f"![{name}: {fig}]({FIGURES}/{name}/{fig})", ""]
        tables = [f for f in figures.get(name, []) if f.endswith(".csv")]
        if tables:
            lines += ["Tables: " + " · ".join(f"[{t}]({FIGURES}/{name}/{t})" for t in tables), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def publish(reports: str | Path, dest: str | Path) -> Path:
    """Copy a full report's figures and tables into ``dest/figures/<notebook>/`` (replacing that notebook's earlier
    copies) and write ``dest/results.md``; NotPublishable, before anything is written, for another report."""
    reports, dest = Path(reports).expanduser().resolve(), Path(dest).expanduser().resolve()
    summary = read_summary(reports) if reports.is_dir() else None
    publishable(summary, reports)
    copied: dict[str, list[str]] = {}
    for name in NOTEBOOKS:
        src = reports / name
        files = [f for f in summary["notebooks"][name].get("figures", []) + summary["notebooks"][name].get("tables", [])
                 if Path(f).suffix in COPIED and (src / f).is_file()]
        out = dest / FIGURES / name
        if out.is_dir():
            shutil.rmtree(out)  # this notebook's earlier published copies: stale names must not stay linked
        for f in files:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, out / f)
        copied[name] = sorted(files)
    path = dest / RESULTS
    path.write_text(results_markdown(summary, copied))
    if dest == (REPO_DIR / "docs").resolve():  # the checkout's own docs: its times and the text quoting them too
        record_times(summary)
        sync_text()
    return path


def record_times(summary: dict[str, Any], path: Path = TIMES_FILE) -> Path:
    """``docs/study_times.json``: each notebook's run time in a full report, the text's only source of times."""
    times = {"written": summary["written"], "cores": summary.get("cores") or os.cpu_count(),
             "total_seconds": round(float(summary.get("seconds") or 0), 1), "jobs": summary.get("jobs") or 1,
             "seconds": {n: summary["notebooks"][n]["seconds"] for n in NOTEBOOKS}}
    path.write_text(json.dumps(times, indent=2) + "\n")
    study_times.cache_clear()
    return path


def _row(line: str) -> str:
    """A table row naming a study, its question / regenerates / time cells rewritten from STUDIES."""
    cells = line.strip().strip("|").split("|")
    name = next((n for n in NOTEBOOKS if n in cells[0]), None)
    if name is None or len(cells) < 4:
        return line
    spec = STUDY[name]
    cells[1:4] = [f" {spec.question} ", f" {spec.regenerates} ", f" {spec.time} "]
    return "|" + "|".join(cells) + "|"


def sync_text(root: Path = REPO_DIR) -> list[Path]:
    """Rewrite what quotes STUDIES: each notebook's Regenerates and Time lines, the README tables' rows."""
    import nbformat

    changed = []
    for spec in STUDIES:
        path = root / "notebooks" / f"{spec.name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        paragraphs = nb.cells[0].source.split("\n\n")
        new = paragraphs[:1] + [spec.question, f"**Regenerates:** {spec.regenerates}", spec.time_line] + paragraphs[4:]
        if new != paragraphs:
            nb.cells[0].source = "\n\n".join(new)
            path.write_text(nbformat.writes(nb) + "\n")  # as the notebooks are stored
            changed.append(path)
    for readme in (root / "README.md", root / "notebooks" / "README.md"):
        text = readme.read_text()
        new = "\n".join(_row(line) if line.startswith("|") else line for line in text.split("\n"))
        if new != text:
            readme.write_text(new)
            changed.append(readme)
    return changed


def main(args) -> int:
    """``hdae publish REPORT DEST``: 0 when published, 2 (one line) when the report is refused."""
    try:
        path = publish(args.report, args.dest)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"published {args.report} -> {path} and {path.parent / FIGURES}/")
    return 0
