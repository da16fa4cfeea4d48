"""Publish a full report into the docs (``hdae publish REPORT DEST``): its figures into DEST/figures and
DEST/results.md written from its findings and checks, so the docs say what the last full run found."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from .benchdocs import sync_docs
from .checks import describe
from .pipeline import (NOTEBOOKS, RAN, REPO_DIR, REPORT_TIME_MARK, STUDIES, STUDY, TIMES_FILE, claims_line,
                       read_summary, report_time_line, study_times)

RESULTS = "results.md"
FIGURES = "figures"
COPIED = (".png", ".pdf", ".svg", ".csv")  # what a notebook's report folder holds that the docs show or link
PUBLISHED_MARK = "<!-- published by hdae publish:"  # ends results.md: the files that publish wrote


class NotPublishable(ValueError):
    """The report is not one the docs may be written from (not the full profile, or not every notebook ok)."""


def publishable(summary: dict[str, Any] | None, reports: Path) -> None:
    """Refuse (NotPublishable, one line) a report that is missing, not the full profile, or not all ok."""
    if summary is None:
        raise NotPublishable(f"{reports}: no summary.json, not an hdae report (run `hdae figures` first)")
    check_summary_shape(summary, reports)
    if summary.get("profile") != "full":
        raise NotPublishable(f"{reports}: profile {summary.get('profile')!r}; only a full report is published "
                             f"(`hdae figures` without --profile smoke)")
    nbs = summary.get("notebooks") or {}
    if summary.get("inputs"):
        raise NotPublishable(f"{reports}: made with --checkpoint / --data; the docs describe the shipped models on "
                             f"Shapes")
    not_ran = [f"{n} {nbs[n].get('status') or 'without a status' if n in nbs else 'missing'}" for n in NOTEBOOKS
               if n not in nbs or nbs[n].get("status") not in RAN]
    if not_ran:
        raise NotPublishable(f"{reports}: not every notebook ran to its end ({', '.join(not_ran)}); publish a report "
                             f"whose notebooks all ran (a degraded one is published with its failed checks named)")


def safe_relative(name: Any) -> bool:
    """Whether ``name`` is a relative path that stays where it is put (no '..', not absolute, no backslash)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and p.parts[:1] != ("~",)


def check_summary_shape(summary: dict[str, Any], reports: Path) -> None:
    """Refuse (NotPublishable, one line) a summary.json of another shape: every notebook's entry a JSON object, its
    figures and tables lists of file names inside its own folder, its seconds a number."""
    f = reports / "summary.json"
    for name, r in (summary.get("notebooks") or {}).items():
        if not isinstance(r, dict):
            raise NotPublishable(f"{f}: notebook {name!r} is {type(r).__name__} {r!r}, not a JSON object; not a "
                                 f"summary `hdae figures` wrote: rerun `hdae figures` (nothing was written)")
        for key in ("figures", "tables"):
            files = r.get(key, [])
            if not isinstance(files, list) or not all(safe_relative(x) for x in files):
                bad = files if not isinstance(files, list) else next(x for x in files if not safe_relative(x))
                raise NotPublishable(f"{f}: notebook {name!r}: {key} holds {bad!r}; expected a list of file names "
                                     f"inside {reports / name} (no '..', not absolute): rerun `hdae figures` (nothing "
                                     f"was written)")
        seconds = r.get("seconds", 0)
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
            raise NotPublishable(f"{f}: notebook {name!r}: seconds is {seconds!r}, not a number: rerun `hdae figures` "
                                 f"(nothing was written)")
        if not isinstance(r.get("status"), (str, type(None))):
            raise NotPublishable(f"{f}: notebook {name!r}: status is {r['status']!r}, not a word such as 'ok': rerun "
                                 f"`hdae figures` (nothing was written)")


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _statuses(nbs: dict[str, Any]) -> str:
    counts = {st: sum(r["status"] == st for r in nbs.values()) for st in RAN}
    return "all ok" if counts["degraded"] == 0 else f"{counts['ok']} ok and {counts['degraded']} degraded"


def _claims_note(r: dict[str, Any]) -> str:
    tested, missing = int(r.get("claims_tested") or 0), len(r.get("claims_not_shown") or [])
    if not tested:
        return ""
    return f"; the paper's claims it tests: {tested - missing} of {tested} shown on these models"


def results_markdown(summary: dict[str, Any], figures: dict[str, list[str]]) -> str:
    """docs/results.md: per study its question, findings, checks and figures, from the report alone."""
    nbs = summary["notebooks"]
    total = float(summary.get("seconds") or sum(float(r.get("seconds") or 0) for r in nbs.values()))
    lines = ["# Results", "",
             "Written by `hdae publish` from the last full report; do not edit by hand (rerun `make figures`, then "
             "`hdae publish reports docs`).", "",
             f"Report written {summary.get('written', '?')} by `{summary.get('command') or 'hdae figures'}`: "
             f"{len(nbs)} notebooks, {_statuses(nbs)}, in {_duration(total)} "
             f"({summary.get('jobs') or 1} at a time on {summary.get('cores') or '?'} cores). {claims_line(nbs)}", ""]
    for name in NOTEBOOKS:
        r, spec = nbs[name], STUDY[name]
        m = r.get("metrics") or {}
        lines += [f"## {name}", "", spec.question, "",
                  f"Regenerates: {spec.regenerates}. Ran in {_duration(float(r.get('seconds') or 0))}: "
                  f"**{r['status']}**" + (" (a sanity check failed: its finding says what is not shown on this model)"
                                          if r["status"] == "degraded" else "") + _claims_note(r) + ".", ""]
        lines += [f"- {f}" for f in m.get("findings") or []] or ["- (this study records no findings)"]
        lines.append("")
        checks = m.get("checks") or []
        if checks:
            lines += ["| check | kind | result |", "|---|---|---|"]
            lines += [f"| {_cell(c.get('name'))} | {c.get('kind', 'sanity')} | "
                      f"{_cell(describe(c)[len(str(c.get('name'))) + 2:])} |" for c in checks]
            lines.append("")
        for fig in figures.get(name, []):
            if fig.endswith(".png"):
                lines += [f"![{name}: {fig}]({FIGURES}/{name}/{fig})", ""]
        tables = [f for f in figures.get(name, []) if f.endswith(".csv")]
        if tables:
            lines += ["Tables: " + " · ".join(f"[{t}]({FIGURES}/{name}/{t})" for t in tables), ""]
    published = " ".join(f"{FIGURES}/{n}/{f}" for n in NOTEBOOKS for f in figures.get(n, []))
    lines += ["", f"{PUBLISHED_MARK} {published} -->"]  # what the next publish may replace, and nothing else
    return "\n".join(lines).rstrip("\n") + "\n"


def _ours(results: Path) -> bool:
    """Whether ``results`` is a results.md written by ``hdae publish``."""
    try:
        head = results.read_text().splitlines()[:3]
    except (OSError, UnicodeDecodeError):
        return False
    return len(head) == 3 and head[0] == "# Results" and head[2].startswith("Written by `hdae publish`")


def published_before(dest: Path) -> set[str]:
    """The files (relative to ``dest``) an earlier ``hdae publish`` wrote there: listed at the end of its
    results.md (or, from a results.md that predates the list, linked in it)."""
    results = dest / RESULTS
    if not results.exists() or not _ours(results):
        return set()
    text = results.read_text()
    if PUBLISHED_MARK in text:
        listed = set(text.split(PUBLISHED_MARK, 1)[1].split("-->", 1)[0].split())
    else:
        listed = set(re.findall(r"\]\(([^)]+)\)", text))
    # only files under DEST/figures are ever a publish's: a hand-edited list naming anything else is not followed
    return {m for m in listed if m.startswith(f"{FIGURES}/") and safe_relative(m)}


def publish(reports: str | Path, dest: str | Path) -> Path:
    """Copy a full report's figures and tables into ``dest/figures/<notebook>/`` and write ``dest/results.md``,
    replacing only what an earlier publish wrote there; NotPublishable, before anything is written, for another
    report or for a DEST whose results.md or figure files something else wrote."""
    reports, dest = Path(reports).expanduser().resolve(), Path(dest).expanduser().resolve()
    summary = read_summary(reports) if reports.is_dir() else None
    publishable(summary, reports)
    for folder in (dest, dest / FIGURES):
        if folder.exists() and not folder.is_dir():
            raise NotPublishable(f"{folder}: is a file, not a folder; choose another DEST (nothing was written)")
    results = dest / RESULTS
    if results.exists() and not _ours(results):
        raise NotPublishable(f"{results}: not written by hdae publish; move it away or choose another DEST "
                             f"(nothing was written)")
    earlier = published_before(dest)  # what an earlier publish put there: the only files it may replace
    copies = {name: [f for f in summary["notebooks"][name].get("figures", []) + summary["notebooks"][name].get(
        "tables", []) if Path(f).suffix in COPIED and (reports / name / f).is_file()] for name in NOTEBOOKS}
    theirs = [dest / FIGURES / n / f for n, fs in copies.items() for f in fs
              if (dest / FIGURES / n / f).exists() and f"{FIGURES}/{n}/{f}" not in earlier]
    if theirs:
        raise NotPublishable(f"{theirs[0]}: not written by an earlier hdae publish; move it away or choose another "
                             f"DEST (nothing was written)")
    for rel in earlier:  # stale names of an earlier publish must not stay linked; nothing else is touched
        (dest / rel).unlink(missing_ok=True)
    for name, files in copies.items():
        for f in files:
            (dest / FIGURES / name / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(reports / name / f, dest / FIGURES / name / f)
    copied = {name: sorted(files) for name, files in copies.items()}
    path = dest / RESULTS
    path.write_text(results_markdown(summary, copied))
    if dest == (REPO_DIR / "docs").resolve():  # the checkout's own docs: its times and the text quoting them too
        record_times(summary)
        sync_text()
        sync_docs()
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
    """Rewrite what quotes STUDIES: each notebook's Regenerates and Time lines, the README tables' rows and the
    README's line on the full report's time."""
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
        new = "\n".join(_row(line) if line.startswith("|") else
                        report_time_line() if line.startswith(REPORT_TIME_MARK) else line for line in text.split("\n"))
        if new != text:
            readme.write_text(new)
            changed.append(readme)
    return changed


def main(args) -> int:
    """``hdae publish REPORT DEST``: 0 when published, 2 (one line) when the report is refused."""
    try:
        path = publish(args.report, args.dest)
    except ValueError as e:
        print(f"hdae: error: {e}", file=sys.stderr)
        return 2
    print(f"published {args.report} -> {path} and {path.parent / FIGURES}/")
    return 0
