"""What every study notebook shares: its report folder, its metrics, its figures and the closing ``metrics.json``."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from IPython.display import Image, Markdown, display

from . import plots
from .checks import check as _check, describe
from .data import open_data
from .pretrained import repo_path

METRICS_FILE = "metrics.json"
NOT_SHOWN = "Not shown on this model"  # how a finding whose check failed says so
MAX_NAMED = 3  # failed checks a finding names (the report's index lists them all)


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()  # tensors and numpy arrays / scalars
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def _show_markdown(text: str) -> None:
    """Markdown in a Jupyter kernel (papermill included), plain text elsewhere."""
    try:
        from IPython import get_ipython
        in_kernel = getattr(get_ipython(), "kernel", None) is not None
    except ImportError:  # pragma: no cover - IPython is a dependency
        in_kernel = False
    if in_kernel:
        display(Markdown(text))
    else:
        print(text)


def save_metrics(out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``out_dir/metrics.json`` (the headline numbers ``index.md`` shows): plain JSON, NaN/inf as null."""
    path = Path(out_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(metrics), indent=2, allow_nan=False) + "\n")
    return path


class Study:
    """One notebook's run: seeds and threads set, ``report`` folder made, ``metrics`` collected, timed."""

    def __init__(self, out_dir: str | Path, profile: str = "full", seed: int = 0, threads: int = 1):
        torch.set_num_threads(threads)  # the suite runs beside other jobs; small convolutions gain little from more
        torch.manual_seed(seed)
        self.report = repo_path(out_dir)  # relative paths are from the repository root, whatever the kernel's cwd
        self.report.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.metrics: dict[str, Any] = {"profile": profile}
        self.data = None  # the StudyData the notebook runs on (``use_data``): described in metrics.json
        self._t0 = time.perf_counter()

    def use_data(self, data=None, attributes=None, size: int = 32, **kw):
        """Open the study's images (``hdae_core.data.open_data``): Shapes, or the user's folder / LMDB + attributes."""
        self.data = open_data(data, attributes, size=size, **kw)
        for note in self.data.notes:
            print(f"note: {note}")
        return self.data

    def skip(self, part: str, why: str) -> None:
        """Record (in metrics.json, hence the report) that ``part`` of the study was skipped, and why."""
        self.metrics.setdefault("skipped", {})[part] = why
        display(Markdown(f"**Skipped — {part}:** {why}"))

    def path(self, name: str) -> Path:
        return self.report / name

    def show(self, name: str) -> Path:
        """Display the PNG ``name`` of the report folder (figures are files first, so the index shows them too)."""
        path = self.path(name)
        display(Image(filename=str(path)))
        return path

    def grid(self, name: str, rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
             col_labels: Sequence[str] | None = None, scale: int = 1, title: str | None = None,
             legend: Sequence[tuple[str, Sequence[float]]] | None = None) -> Path:
        """Save rows of images in [-1, 1] as the labelled grid ``name`` (with a copy per format of
        ``plots.figure_formats``) and display it; ``legend``: (name, RGB) swatches below, as ``plots.label_legend``."""
        plots.save_labeled_grid(self.path(name), rows, row_labels=row_labels, col_labels=col_labels, scale=scale,
                                title=title, legend=legend)
        return self.show(name)

    def check(self, name: str, value: Any, bound: Any, relation: str = "<=") -> bool:
        """A sanity check: hold a headline against its baseline or bound (``checks.check``), record it in
        ``metrics["checks"]`` and print it; returns whether it passed. A failed one makes the notebook *degraded*."""
        return self._record(_check(name, value, bound, relation))

    def claim(self, name: str, value: Any, bound: Any, relation: str = "<=") -> bool:
        """A claim check: whether one of the paper's claims shows on these models, recorded like ``check`` and
        reported as shown / not shown; it leaves the notebook's status alone (a claim not shown is a result)."""
        return self._record(_check(name, value, bound, relation, kind="claim"))

    def _record(self, c: dict[str, Any]) -> bool:
        self.metrics.setdefault("checks", []).append(c)
        print(describe(c))
        return c["passed"]

    def finding(self, template: str, *, claim: str = "", checks: str | bool | Sequence[str | bool] = (),
                **values: Any) -> str:
        """Render ``template.format(**values)`` (what the run measured) and ``claim`` (what that shows) as one
        Markdown sentence, display it and record it in ``metrics["findings"]``. ``checks`` (names of checks already
        run, or their outcomes) decide the claim: when one failed, the finding says it is not shown on this model."""
        plain = {k: v.item() if hasattr(v, "item") and getattr(v, "ndim", 0) == 0 else v for k, v in values.items()}
        observed = template.format(**plain).strip().rstrip(".")
        claim = claim.format(**plain).strip().rstrip(".")
        failed = [c for c in self._checks_named(checks) if not c["passed"]]
        if not failed:
            text = f"{observed}: {claim}." if claim else f"{observed}."
        else:
            named = [describe(c) if "value" in c else "the check it rests on" for c in failed]
            more = len(named) - MAX_NAMED
            why = "; ".join(named[:MAX_NAMED]) + (f"; and {more} more" if more > 0 else "")
            text = f"{observed}. {NOT_SHOWN}: {claim or 'what this finding claims'} (failed check: {why})."
        self.metrics.setdefault("findings", []).append(text)
        _show_markdown(f"**Finding.** {text}")
        return text

    def _checks_named(self, checks) -> list[dict[str, Any]]:
        """The recorded checks a finding depends on (a bool stands for a check's outcome)."""
        if isinstance(checks, (str, bool)):
            checks = [checks]
        recorded = {c["name"]: c for c in self.metrics.get("checks", [])}
        out = []
        for c in checks:
            if isinstance(c, bool):
                out.append({"passed": c})
            elif c in recorded:
                out.append(recorded[c])
            else:
                raise KeyError(f"finding depends on check {c!r}, which this study has not run "
                               f"(it ran: {', '.join(recorded) or 'none'})")
        return out

    def finish(self) -> Path:
        """Record the run time and write ``metrics.json``; prints the metrics."""
        self.metrics["seconds"] = round(time.perf_counter() - self._t0, 1)
        if self.data is not None:
            self.metrics["data"] = self.data.describe()
        path = save_metrics(self.report, self.metrics)
        print(json.dumps(_plain(self.metrics), indent=1)[:3000])
        return path
