"""Run the notebooks with papermill into ``reports/<name>/`` and write ``reports/index.md`` (``hdae figures``)."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shlex
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import nbformat
import papermill
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from . import pretrained
from .checks import claims, mark, verdict
from .locking import lock_folder
from .data import open_data
from .pretrained import REPO_DIR

NOTEBOOK_DIR = REPO_DIR / "notebooks"
RAN = ("ok", "degraded")  # statuses of a notebook that ran to the end (failed / missing: it did not)
WORK = "_tmp"  # reports/_tmp: models, oracles and runs the notebooks train, reused across runs

KERNEL = "hdae"  # registered by `make venv` (ipykernel install --sys-prefix --name hdae)


@dataclass(frozen=True)
class StudySpec:
    """One study: its notebook, the question it answers, what it regenerates, how long it takes, and what the
    pipeline passes it per profile. Its first cell, notebooks/README.md and README.md quote the first four, which
    ``hdae publish`` rewrites there (the times from the published report).

    Parameter values may hold placeholders that ``parameters_for`` fills in: {out} the notebook's report
    folder, {reports} the reports folder, {work} reports/_tmp, {hdae_u} / {dae} the models to study (the
    shipped demo pair, the smoke stand-ins, or the user's --checkpoint / --checkpoint-dae). "full" runs each
    notebook with its own defaults apart from these; "smoke" shrinks it to tiny models and 2–3 DDIM steps.
    """

    name: str  # the notebook's file name without .ipynb
    regenerates: str  # the paper's figure or table it regenerates, or "none, teaching"
    full: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    needs_models: bool = True  # loads the models to study (else it trains its own)
    trains_own: str = ""  # why it is not run on the user's --checkpoint (it trains models of its own)
    takes_inception: bool = False  # computes FID when --inception-weights is given
    question: str = ""  # the question the study answers, as its first cell asks it
    after: tuple[str, ...] = ()  # studies whose outputs it reads, run first when they run in the same report

    @property
    def seconds(self) -> float | None:
        """Its run time in the last full report recorded in ``docs/study_times.json`` (None: not recorded)."""
        return (study_times().get("seconds") or {}).get(self.name)

    @property
    def time(self) -> str:
        """The study's run time for the tables, as the last recorded full report measured it."""
        if self.seconds is None:
            return "not measured yet"
        m, s = divmod(round(self.seconds), 60)
        return f"{m} min {s:02d} s" if m else f"{s} s"

    @property
    def time_line(self) -> str:
        """The **Time:** line of the notebook's first cell."""
        t = study_times()
        if self.seconds is None:
            return "**Time:** not measured yet (`hdae publish` records it from a full report)."
        return (f"**Time:** {self.time}, in the full report of {t['written']} (`make figures`: full profile, shipped "
                f"models, {t['cores']} CPU cores, {t.get('jobs', 1)} notebook(s) at a time; "
                f"{_minutes(t['total_seconds'])} for all {len(t['seconds'])} notebooks).")


TIMES_FILE = REPO_DIR / "docs" / "study_times.json"  # written by `hdae publish` from the last full report
REPORT_TIME_MARK = "**Full report:**"  # the README line that report_time_line() rewrites


def report_time_line() -> str:
    """The README's line on how long ``make figures`` took, from ``docs/study_times.json``."""
    t = study_times()
    if not t:
        return f"{REPORT_TIME_MARK} not measured yet (`hdae publish` records it from a full report)."
    return (f"{REPORT_TIME_MARK} `make figures` took {_minutes(t['total_seconds'])} on {t['cores']} CPU cores, "
            f"{t.get('jobs', 1)} notebook(s) at a time, from an empty report folder with the shipped models (the "
            f"report of {t['written']}; each notebook's time is in the table below).")


@functools.lru_cache(maxsize=1)
def study_times() -> dict[str, Any]:
    """The run times of the last published full report ({} when none is recorded)."""
    try:
        return json.loads(TIMES_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


_PAIR = {"checkpoint_hdae": "{hdae_u}", "checkpoint_dae": "{dae}"}
_ORACLE = {"oracle_dir": "{work}/oracle"}
# the one table of studies: a new study is one notebook plus one row here
STUDIES: tuple[StudySpec, ...] = (
    StudySpec("00_tour", "none, teaching", {"checkpoint_hdae": "{hdae_u}"}, {"n_images": 2, "steps": 3},
              question=("What does a diffusion autoencoder do to an image, step by step, and what does each level of "
                        "HDAE's code hold?")),
    StudySpec("01_train", "none, teaching", {"out": "{work}/01_train/run"},
              {"preset": "tiny", "variant": "hdae_u", "steps": 4, "batch_size": 8, "eval_every": 2, "eval_size": 4,
               "eval_steps": 2, "log_every": 1, "reference": ""},
              needs_models=False, trains_own="trains a model of its own (`hdae train --data` trains on your images)",
              question="What does one training run do, and how soon do its codes learn to hold the image?"),
    StudySpec("02_ablation", "HDAE Fig. 5", {"work_dir": "{work}/02_ablation"},
              {"retrain": True, "preset": "tiny", "steps": 2, "batch_size": 4, "eval_every": 1, "eval_size": 2,
               "eval_steps": 2},
              needs_models=False, trains_own="trains the Fig. 5 variants on Shapes; it does not study a given model",
              question="Does a hierarchy of codes make a diffusion autoencoder learn faster?"),
    StudySpec("03_reconstruction", "HDAE Table 1 and Fig. 6", _PAIR,
              {"n_images": 6, "steps": [2, 3], "n_show": 4, "batch_size": 6},
              question=("How well do DAE and HDAE(U) reconstruct held-out images, from their own x_T and from random "
                        "noise?")),
    StudySpec("04_hierarchy", "HDAE Fig. 7 and Fig. 8", {"checkpoint_hdae": "{hdae_u}"},
              {"n_pairs": 2, "n_frames": 4, "steps": 2},
              question=("What does each level of the hierarchy hold, seen by mixing and interpolating two images' "
                        "codes?")),
    StudySpec("05_directions", "HDAE Fig. 3 and Fig. 4", _PAIR, {"n_encode": 300},
              question=("Which attributes can a linear classifier read from the codes, and on which levels do they "
                        "live?")),
    StudySpec("06_editing", "HDAE Fig. 9, Fig. 10 and a Table 2 analogue",
              {**_PAIR, "directions_dir": "{reports}/05_directions", **_ORACLE},
              {"n_encode": 300, "n_images": 3, "steps": 2, "attributes": ["red", "large"], "sweep_attributes": ["red"],
               "k_fractions": [1.0, 0.25, 0.05], "alphas": [0.3, 1.0], "sweep_steps": 2,
               "oracle_steps": 20},
              question=("Does an edit along an attribute's direction change that attribute alone, and what do "
                        "truncated features change?"), after=("05_directions",)),
    StudySpec("07_editor", "none, teaching (Fig. 7 and Fig. 9, interactively)",
              {"checkpoint": "{hdae_u}", "checkpoint_dae": "{dae}", "directions_cache": "{reports}/05_directions",
               **_ORACLE},
              {"steps": 2, "n_images": 2, "n_stats": 128, "oracle_steps": 20},
              question="What does an edit, or a style mix, do to an image of your choice?", after=("05_directions",)),
    StudySpec("08_layout", "HDAE Fig. 11", {"checkpoint_hdae": "{hdae_u}", **_ORACLE},
              {"n_train": 200, "layout_steps": 20, "layout_batch": 16, "n_layouts": 3, "n_images": 3, "steps": 2,
               "n_pairs": 8, "pixel_oracle_steps": 10, "oracle_steps": 20},
              question="Can a label map stand in for the high-level codes, so that one layout takes many styles?"),
    StudySpec("09_sampling", "none in HDAE; DiffAE's latent DDIM sampling, on HDAE's codes",
              {**_PAIR, **_ORACLE, "cache_dir": "{work}/cache"},
              {"n_encode": 300, "latent_steps": 40, "latent_width": 64, "latent_depth": 3, "n_samples": 6,
               "latent_sample_steps": 5, "steps": 2, "n_quality": 16, "oracle_steps": 20},
              takes_inception=True,
              question="Can a latent DDIM over the codes turn the autoencoder into a generator of new images?"),
)
STUDY = {s.name: s for s in STUDIES}
NOTEBOOKS = tuple(STUDY)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {s.name: {"out_dir": "{out}", "profile": "smoke", **s.full, **s.smoke} for s in STUDIES},
    "full": {s.name: {"out_dir": "{out}", "profile": "full", **s.full} for s in STUDIES},
}


def check_inputs(checkpoint=None, checkpoint_dae=None, data=None, attributes=None) -> dict[str, str]:
    """The user's model and data (``hdae figures --checkpoint … --data … --attributes …``), checked before anything
    is written: resolved paths, or {} for the built-in demo pair on Shapes. Errors say what is wrong."""
    if not any((checkpoint, checkpoint_dae, data, attributes)):
        return {}
    if checkpoint_dae and not checkpoint:
        raise ValueError("--checkpoint-dae compares against --checkpoint: pass --checkpoint too")
    if attributes and not data:
        raise ValueError("--attributes labels the images of --data: pass --data too")
    out: dict[str, str] = {}
    sizes = {}
    for key, ck in (("checkpoint", checkpoint), ("checkpoint_dae", checkpoint_dae)):
        if ck:
            path = pretrained.resolve(ck)
            model_cfg, _ = ckpt_io.configs(path)  # a config of another shape is named here, not in every notebook
            if not ckpt_io.is_complete(path):
                raise ValueError(f"--{key.replace('_', '-')} {ck}: {path} has a weights file that is missing or cut "
                                 f"short (an interrupted copy or save?); copy the checkpoint folder again, or point "
                                 f"at a whole one")
            sizes[key] = int(model_cfg.image_size)
            out[key] = str(path)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"--checkpoint and --checkpoint-dae must share one image size, got {sizes}")
    if data:
        src = open_data(data, attributes, size=next(iter(sizes.values()), 32))
        out["data"] = str(Path(data).expanduser().resolve())
        if attributes:
            out["attributes"] = str(Path(attributes).expanduser().resolve())
        out["data_summary"] = (f"{src.n_images} images, {len(src.attribute_names)} attributes"
                               + (f", {src.n_unannotated} without an annotation row" if src.n_unannotated else ""))
    return out


def _input_parameters(name: str, inputs: dict[str, str]) -> dict[str, Any]:
    """The data parameters every study notebook takes (01/02 train their own and take none)."""
    if not inputs.get("data") or STUDY[name].trains_own:
        return {}
    return {"data": inputs["data"], "attribute_file": inputs.get("attributes")}


# ---------------------------------------------------------------- notebooks and their parameters


def notebook_path(name: str, notebook_dir: str | Path | None = None) -> Path:
    return Path(notebook_dir or NOTEBOOK_DIR) / f"{name}.ipynb"


def parameters_cell(path: str | Path):
    """The first code cell of a notebook, which must be tagged ``parameters`` (ValueError otherwise)."""
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code:
        raise ValueError(f"{path}: no code cells")
    cell = code[0]
    if "parameters" not in cell.get("metadata", {}).get("tags", []):
        raise ValueError(f"{path}: the first code cell is not tagged 'parameters'")
    return cell


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """Names assigned in the ``parameters`` cell → their default values' source text (``papermill.inspect_notebook``)."""
    parameters_cell(path)
    return {name: p["default"] for name, p in papermill.inspect_notebook(str(path)).items()}


def check_parameters(profiles: Iterable[str] | None = None, notebook_dir: str | Path | None = None,
                     skip_missing: bool = True) -> list[str]:
    """Problems (empty when none): a parameter the pipeline passes that the notebook's parameters cell lacks."""
    problems = []
    for prof in profiles or PROFILES:
        for name, params in PROFILES[prof].items():
            path = notebook_path(name, notebook_dir)
            if not path.is_file():
                if not skip_missing:
                    problems.append(f"{prof}/{name}: notebook {path} not found")
                continue
            try:
                have = notebook_parameters(path)
            except ValueError as e:
                problems.append(f"{prof}/{name}: {e}")
                continue
            for key in params:
                if key not in have:
                    problems.append(f"{prof}/{name}: passes {key!r}, not in the notebook's parameters cell "
                                    f"(it has {', '.join(sorted(have))})")
    return problems


def select(only: Iterable[str] | None) -> list[str]:
    """Notebook names from ``--only`` values: a full name ('03_reconstruction'), its number ('03') or its topic."""
    if only is None:
        return list(NOTEBOOKS)
    if isinstance(only, str):
        only = [only]
    chosen = []
    for q in only:
        for part in str(q).split(","):
            part = part.strip().removesuffix(".ipynb")
            if not part:
                continue
            hits = [n for n in NOTEBOOKS if n == part or n.split("_", 1)[0] == part or n.split("_", 1)[1] == part]
            if not hits:
                raise ValueError(f"--only {part!r}: no such notebook; choose from {', '.join(NOTEBOOKS)}")
            chosen += [h for h in hits if h not in chosen]
    if not chosen:
        raise ValueError(f"--only {', '.join(map(repr, only)) or repr('')}: selects no notebook; give a number, "
                         f"name or topic of one of {', '.join(NOTEBOOKS)}")
    return [n for n in NOTEBOOKS if n in chosen]


# ---------------------------------------------------------------- the report folder: whose it is, and one writer


SUMMARY_KEYS = {"profile", "notebooks", "ran"}
REPORT_LOCK = ".figures.lock"
DEFAULT_REPORTS = REPO_DIR / "reports"  # the checkout's own generated folder (only README.md is tracked there)


class ReportFolderBusy(RuntimeError):
    """Another ``hdae figures`` is writing into the report folder."""


def read_summary(reports: Path) -> dict[str, Any] | None:
    """The report folder's ``summary.json`` (None when there is none); ValueError naming it when it is not one of
    ours (unreadable or of another shape), since every later run would otherwise trip over it."""
    f = reports / "summary.json"
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{f}: not an hdae report summary ({type(e).__name__}); move it away or choose another "
                         f"--out") from None
    if not isinstance(d, dict) or not SUMMARY_KEYS <= set(d) or not isinstance(d.get("notebooks"), dict):
        raise ValueError(f"{f}: not an hdae report summary (expected keys {sorted(SUMMARY_KEYS)}); move it away or "
                         f"choose another --out")
    return d


def check_destination(reports: Path, overwrite: bool = False) -> None:
    """The report folder may be new or empty, the checkout's own reports/, or (with ``overwrite``) an earlier hdae
    report; anything else is refused with one line, before a file is touched."""
    if not reports.exists():
        return
    if not reports.is_dir():
        raise ValueError(f"--out {reports}: is a file, not a folder; choose a new or empty folder")
    if not any(reports.iterdir()) or reports == DEFAULT_REPORTS.resolve():
        read_summary(reports)
        return
    if read_summary(reports) is None:
        raise ValueError(f"--out {reports}: holds files that are not an hdae report; choose a new or empty folder "
                         f"(nothing was written)")
    if not overwrite:
        raise ValueError(f"--out {reports}: holds an earlier hdae report; pass --overwrite to replace its notebooks' "
                         f"results, or choose a new folder")


def lock_reports(reports: Path):
    """Held while a run writes the report: a second run into the same folder stops with one line."""
    return lock_folder(reports, REPORT_LOCK, ReportFolderBusy, "hdae figures run")


def _fill(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(subs)
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    return value


def parameters_for(profile: str, name: str, reports: str | Path, models: dict[str, Path] | None) -> dict[str, Any]:
    """The parameters ``run`` passes to one notebook, placeholders filled in."""
    reports = Path(reports).expanduser().resolve()
    subs = {"out": str(reports / name), "reports": str(reports), "work": str(reports / WORK),
            "hdae_u": str((models or {}).get("hdae_u", "")), "dae": str((models or {}).get("dae", ""))}
    return {k: _fill(v, subs) for k, v in PROFILES[profile][name].items()}


# ---------------------------------------------------------------- execution


FORMATS_ENV = "HDAE_FIGURE_FORMATS"  # plots.FORMATS_ENV, named here so that a plain run need not import plots


def takes_quick(name: str, notebook_dir: str | Path | None = None) -> bool:
    """Whether the notebook's parameters cell has ``quick`` (``--quick`` is passed only to those)."""
    path = notebook_path(name, notebook_dir)
    return path.is_file() and "quick" in notebook_parameters(path)


@contextlib.contextmanager
def _kernel_env(formats: str | None = None):
    """Environment for the kernels: this checkout's package first on the path, one BLAS/OpenMP thread, and the
    figure formats (``--format``) when given; without it the kernels inherit the caller's."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", FORMATS_ENV)}
    parts = [str(REPO_DIR)] + [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    if formats:
        os.environ[FORMATS_ENV] = formats
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _error_summary(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}".strip()


class UnknownParameterWarning(UserWarning):
    """papermill was passed a parameter the notebook's parameters cell does not define (an error in the tests)."""


class _UnknownParameters(logging.Handler):
    """Collects papermill's "Passed unknown parameter" log records, which it only logs."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "unknown parameter" in record.getMessage():
            self.messages.append(record.getMessage())


def kernel_python(kernel: str = KERNEL) -> str:
    """The interpreter the Jupyter kernel ``kernel`` runs (ValueError naming the fix when it is not registered)."""
    try:
        return KernelSpecManager().get_kernel_spec(kernel).argv[0]
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel named {kernel!r}: `make venv` registers 'hdae' for this environment "
                         f"(or pass --kernel with one of: {', '.join(sorted(KernelSpecManager().find_kernel_specs()))})"
                         ) from None


@contextlib.contextmanager
def _quiet_deprecations():
    """The kernel machinery's deprecation chatter hidden (papermill's "Passed unknown parameter" still warns).
    ``warnings.catch_warnings`` swaps process-wide state, so only the main thread may use it; notebooks run in
    worker threads (``--jobs``) run inside the main thread's ``_schedule`` call, which holds it for them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def execute(name: str, params: dict[str, Any], out_dir: Path, notebook_dir: str | Path | None = None,
            timeout: float | None = None, kernel: str = KERNEL) -> dict[str, Any]:
    """Run one notebook into ``out_dir/<name>.ipynb``; a result dict (status ok | failed | missing, seconds, error)."""
    src = notebook_path(name, notebook_dir)
    res: dict[str, Any] = {"status": "missing", "seconds": 0.0, "error": None, "notebook": None}
    if not src.is_file():
        res["error"] = f"notebook {src} not found"
        return res

    if out_dir.exists():
        shutil.rmtree(out_dir)  # stale figures from an earlier run must not be listed
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f"{name}.ipynb"
    t0 = time.perf_counter()
    unknown = _UnknownParameters()
    logging.getLogger("papermill").addHandler(unknown)
    try:
        with _quiet_deprecations():
            papermill.execute_notebook(str(src), str(out_nb), parameters=params, kernel_name=kernel,
                                       progress_bar=False, log_output=False, cwd=str(REPO_DIR),
                                       execution_timeout=timeout,
                                       # the kernel's own start-up chatter ("running over TCP without encryption")
                                       extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        res["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - one failing notebook must not stop the others
        res["status"] = "failed"
        res["error"] = _error_summary(e)
    finally:
        logging.getLogger("papermill").removeHandler(unknown)
    for msg in unknown.messages:
        warnings.warn(f"{name}: {msg}", UnknownParameterWarning, stacklevel=2)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["notebook"] = str(out_nb) if out_nb.exists() else None
    return res


def _read_metrics(out_dir: Path) -> dict[str, Any] | None:
    f = out_dir / "metrics.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        return {"error": f"metrics.json unreadable: {e}"}


def _artifacts(out_dir: Path) -> dict[str, list[str]]:
    def rel(ps):
        return sorted(str(p.relative_to(out_dir)) for p in ps)
    return {"figures": rel(out_dir.rglob("*.png")), "tables": rel(out_dir.rglob("*.csv"))}


# ---------------------------------------------------------------- the index


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``{'a': {'b': 1}}`` → ``{'a.b': 1}``)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        s = ", ".join(_fmt(x) for x in v)
        return s if len(s) <= 80 else s[:77] + "…"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _verdict(nbs: dict[str, dict[str, Any]]) -> str:
    """One line for the top of the index: all ok, or which notebooks are not and how."""
    if all(r["status"] == "ok" for r in nbs.values()):
        return f"All {len(nbs)} notebooks ok: every study ran and passed its sanity checks."
    by_status: dict[str, list[str]] = {}
    for name, r in nbs.items():
        if r["status"] != "ok":
            by_status.setdefault(r["status"], []).append(name)
    parts = [f"{st} {len(names)} ({', '.join(names)})" for st, names in by_status.items()]
    return f"Not all ok: {'; '.join(parts)}."


def claims_line(nbs: dict[str, dict[str, Any]]) -> str:
    """How many of the paper's claims the studies tested and how many show on these models (claim checks)."""
    tested = sum(int(r.get("claims_tested") or 0) for r in nbs.values())
    if not tested:
        return "No claim of the paper was tested (no claim checks ran)."
    missing = {n: len(r.get("claims_not_shown") or []) for n, r in nbs.items() if r.get("claims_not_shown")}
    where = "; ".join(f"{n}: {k} not shown" for n, k in missing.items())
    return (f"The paper's claims: {tested - sum(missing.values())} of {tested} tested shown on these models"
            + (f" ({where}; a claim not shown is a result, not a fault)." if where else "."))


def write_index(reports: Path, summary: dict[str, Any]) -> Path:
    """``reports/index.md``: per notebook its status, run time, headline numbers and every figure inline."""
    nbs = summary["notebooks"]
    inputs = summary.get("inputs") or {}
    ran = sum(r["status"] in RAN for r in nbs.values())
    ok = sum(r["status"] == "ok" for r in nbs.values())
    lines = ["# hdae reports", "", f"**{_verdict(nbs)}**", "", claims_line(nbs), "",
             f"Profile **{summary['profile']}**, written {summary['written']}; "
             f"{ran} of {len(nbs)} notebooks ran, {ok} with every sanity check passed; "
             f"notebooks took {_duration(sum(r['seconds'] for r in nbs.values()))} "
             f"(last invocation {_duration(summary['seconds'])} including set-up). "
             f"Regenerate with `{summary.get('command') or 'hdae figures --profile ' + summary['profile']}`.", ""]
    if inputs:
        lines += [f"Model `{inputs.get('checkpoint', 'the demo pair')}`"
                  + (f" against `{inputs['checkpoint_dae']}`" if inputs.get("checkpoint_dae") else " (no DAE to compare)")
                  + f"; data `{inputs.get('data', 'built-in Shapes')}`"
                  + (f" ({inputs['data_summary']})" if inputs.get("data_summary") else "")
                  + (f"; attributes `{inputs['attributes']}`" if inputs.get("attributes") else "") + ".", ""]
    for w in summary.get("warnings", []):
        lines += [f"> **WARNING:** {w}", ""]
    lines += ["| notebook | status | time | figures | tables | checks not passed | paper's claims shown |",
              "|---|---|---:|---:|---:|---|---:|"]
    for name, r in nbs.items():
        status = r["status"] if r["status"] == "ok" else f"**{r['status'].upper()}**"
        failed = "; ".join(_fmt(c) for c in r.get("failed_checks", []))
        tested = int(r.get("claims_tested") or 0)
        shown = f"{tested - len(r.get('claims_not_shown') or [])} of {tested}" if tested else ""
        lines.append(f"| [{name}](#{name.replace('_', '-')}) | {status} | {_duration(r['seconds'])} | "
                     f"{len(r.get('figures', []))} | {len(r.get('tables', []))} | {failed} | {shown} |")
    lines += ["", "Status: **ok**, it ran and every sanity check passed (the study measured something: a trained "
              "model beats a trivial baseline, an edit moves its attribute); **degraded**, it ran but a sanity check "
              "did not pass; **failed** or **missing**, it did not run; **incomplete**, the run stopped before it "
              "finished (or is still running). A *claim* check asks whether one of the paper's claims shows on these "
              "models; shown or not, it is a result and leaves the status alone.", ""]
    for name, r in nbs.items():
        lines += [f"## {name}", ""]
        link = f"[{name}.ipynb]({name}/{name}.ipynb)" if r.get("notebook") else "no executed notebook"
        lines += [f"Status **{r['status']}** in {_duration(r['seconds'])} — {link}.", ""]
        if r.get("error"):
            lines += ["```", str(r["error"])[:2000], "```", ""]
        for w in r.get("parameter_problems", []):
            lines += [f"> parameter problem: {w}", ""]
        if r.get("note"):
            lines += [f"> {r['note']}", ""]
        m = r.get("metrics")
        for part, why in ((m or {}).get("skipped") or {}).items():
            lines += [f"> **Skipped — {part}:** {why}", ""]
        for note in ((m or {}).get("data") or {}).get("notes") or []:
            lines += [f"> data note: {note}", ""]
        checks = (m or {}).get("checks") or []
        if checks:
            lines += ["| check | kind | value | bound | result |", "|---|---|---|---|---|"]
            lines += [f"| {_fmt(c.get('name'))} | {c.get('kind', 'sanity')} | {_fmt(c.get('value'))} | "
                      f"{_fmt(c.get('relation', ''))} {_fmt(c.get('bound'))} | "
                      f"{mark(c) if c.get('passed') else '**' + mark(c) + '**'} |" for c in checks]
            lines.append("")
        elif r["status"] in RAN:
            lines += ["> no checks written to metrics.json", ""]
        if m:
            flat = flatten({k: v for k, v in m.items() if k != "checks"})
            lines += ["| headline | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items()]
            lines.append("")
        if r.get("tables"):
            lines += ["Tables: " + " · ".join(f"[{t}]({name}/{t})" for t in r["tables"]), ""]
        if r.get("parameters"):
            lines += ["<details><summary>parameters</summary>", "", "```json",
                      json.dumps(r["parameters"], indent=1, default=str), "```", "", "</details>", ""]
        for fig in r.get("figures", []):
            lines += [f"![{name} {fig}]({name}/{fig})", ""]
    path = reports / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- run


def run(profile: str = "full", only: Iterable[str] | None = None, reports: str | Path = "reports",
        progress: bool = True, notebook_dir: str | Path | None = None, pretrained_dir: str | Path | None = None,
        timeout: float | None = None, kernel: str = KERNEL,
        inception_weights: str | Path | None = None, checkpoint=None, checkpoint_dae=None, data=None,
        attributes=None, command: str | None = None, overwrite: bool = False, formats: str | None = None,
        quick: bool = False, jobs: int = 1) -> dict[str, Any]:
    """Run the notebooks (all, or ``only``) with the profile's parameters; returns the summary (``summary['ok']``:
    every selected notebook ran; ``summary['all_checks_passed']``: and none is degraded). ``inception_weights``
    goes to the notebooks that take it (FID on real images). ``reports`` must be new, empty, the checkout's
    reports/ or (with ``overwrite``) an earlier report: ``check_destination``. ``formats`` ('png,pdf,svg'): every
    figure is also written in these (the kernels read it from ``plots.FORMATS_ENV``); ``quick``: ``quick=True`` to
    every notebook whose parameters cell has it (a classroom run: fewer images and steps, the same figures)."""
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    if formats:
        from .plots import parse_formats  # lazy, as the CLI: plots brings matplotlib and seaborn

        formats = ",".join(parse_formats(formats))  # an unknown format is refused before anything runs
    kernel_python(kernel)  # a clear error before any work when the kernel is missing
    names = select(only)
    # the user's model and data (or {}: the demo pair on Shapes), checked before anything is written
    inputs = check_inputs(checkpoint, checkpoint_dae, data, attributes)
    not_run = {n: STUDY[n].trains_own for n in names if inputs.get("checkpoint") and STUDY[n].trains_own}
    names = [n for n in names if n not in not_run]
    t0 = time.perf_counter()
    reports = Path(reports).expanduser().resolve()
    check_destination(reports, overwrite)
    reports.mkdir(parents=True, exist_ok=True)
    lock = lock_reports(reports)
    try:
        return _run_locked(profile, names, not_run, inputs, reports, t0, progress, notebook_dir, pretrained_dir,
                           timeout, kernel, inception_weights, command, formats, quick, jobs)
    finally:
        if lock is not None:
            lock.close()


def _critical_path(names: list[str]) -> dict[str, float]:
    """Each study's recorded time plus the longest chain of selected studies waiting on it: run the largest first."""
    chain: dict[str, float] = {}
    for n in reversed(names):
        waiting = [chain[m] for m in names if n in STUDY[m].after and m in chain]
        chain[n] = (STUDY[n].seconds or 0.0) + max(waiting, default=0.0)
    return chain


def _schedule(names: list[str], run_one, finished, jobs: int) -> None:
    """Run ``run_one`` on every study, ``jobs`` at a time (one kernel each), a study only once the selected ones it
    reads (``StudySpec.after``) have finished, the longest critical path first; ``finished(name, result)`` after
    each. A failure to start or an interrupt stops new work; what runs still finishes and is recorded."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    # one at a time: the studies' own order; side by side: the longest chain of work first, so it ends soonest
    priority = _critical_path(names) if jobs > 1 else dict.fromkeys(names, 0.0)
    pending, done, running = list(names), set(), {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            while pending or running:
                ready = sorted((n for n in pending if all(d in done or d not in names for d in STUDY[n].after)),
                               key=lambda n: (-priority[n], names.index(n)))
                for n in ready[: max(1, jobs) - len(running)]:
                    pending.remove(n)
                    running[pool.submit(run_one, n)] = n
                complete, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in complete:
                    n = running.pop(f)
                    done.add(n)
                    finished(n, f.result())
        except BaseException:
            pending.clear()
            for f in wait(running).done:  # the ones already running end and are recorded
                if f.exception() is None:
                    finished(running[f], f.result())
            raise


def _run_locked(profile, names, not_run, inputs, reports: Path, t0: float, progress, notebook_dir, pretrained_dir,
                timeout, kernel, inception_weights, command, formats=None, quick=False, jobs=1) -> dict[str, Any]:
    work = reports / WORK
    run_warnings: list[str] = []

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    models: dict[str, Path] = {}
    model_error = None
    if inputs.get("checkpoint"):
        models = {"hdae_u": Path(inputs["checkpoint"]), "dae": inputs.get("checkpoint_dae", "")}
    elif any(STUDY[n].needs_models for n in names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pretrained.PretrainedMissingWarning)
                models = pretrained.demo_models(profile, work, progress=progress, pretrained_dir=pretrained_dir,
                                                warn=run_warnings.append)
        except Exception as e:  # noqa: BLE001 - the notebooks that need no model still run
            model_error = f"demo models unavailable: {_error_summary(e)}"
            run_warnings.append(model_error)
        for w in run_warnings:
            log(f"WARNING: {w}")

    # earlier results stay in the index when only some notebooks run
    summary_file = reports / "summary.json"
    previous = {}
    prev = read_summary(reports)
    if prev is not None and prev.get("profile") == profile and (prev.get("inputs") or {}) == inputs:
        previous = prev["notebooks"]
    results: dict[str, dict[str, Any]] = {n: previous[n] for n in NOTEBOOKS if n in previous and n not in names}
    for n, why in not_run.items():
        results[n] = {"status": "not run", "seconds": 0.0, "error": None, "notebook": None,
                      "note": f"not run with --checkpoint: {why}", "figures": [], "tables": []}
    # until a notebook finishes, the index says so: a run killed midway leaves these, not the previous statuses
    for n in names:
        results[n] = {"status": "incomplete", "seconds": 0.0, "notebook": None, "figures": [], "tables": [],
                      "error": "did not finish: this run was stopped before it (or is still running)"}

    def write_summary() -> dict[str, Any]:
        ordered = {n: results[n] for n in NOTEBOOKS if n in results}
        summary = {"profile": profile, "reports": str(reports), "ran": names, "notebooks": ordered,
                   "ok": all(n in ordered and ordered[n]["status"] in RAN for n in names),
                   "all_checks_passed": all(n in ordered and ordered[n]["status"] == "ok" for n in names),
                   "warnings": run_warnings, "seconds": round(time.perf_counter() - t0, 1),
                   "inputs": inputs, "command": command, "formats": formats or "png", "quick": quick,
                   "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
                   "jobs": jobs}
        summary_file.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        summary["index"] = str(write_index(reports, summary))
        return summary

    write_summary()
    bar = tqdm(total=len(names), desc="notebooks", unit="nb", disable=not progress, file=sys.stderr)

    def run_one(name: str) -> dict[str, Any]:
        out_dir = reports / name
        params = parameters_for(profile, name, reports, models)
        params.update(_input_parameters(name, inputs))
        if inception_weights and STUDY[name].takes_inception:
            params["inception_weights"] = str(Path(inception_weights).expanduser().resolve())
        quick_note = None
        if quick:
            if takes_quick(name, notebook_dir):
                params["quick"] = True
            else:
                quick_note = "--quick: this notebook has no quick parameter, so it ran at its own size"
        problems = [p.split(": ", 1)[1] for p in check_parameters([profile], notebook_dir)
                    if p.startswith(f"{profile}/{name}:")]
        if STUDY[name].needs_models and model_error:
            res = {"status": "failed", "seconds": 0.0, "error": model_error, "notebook": None}
        else:
            res = execute(name, params, out_dir, notebook_dir, timeout, kernel)
        res["parameters"] = params
        res["parameter_problems"] = problems
        if quick_note:
            res["note"] = quick_note
        res["metrics"] = _read_metrics(out_dir) if out_dir.is_dir() else None
        res["failed_checks"], res["claims_tested"], res["claims_not_shown"] = [], 0, []
        if res["status"] == "ok":  # it ran: its own sanity checks decide between ok and degraded
            res["status"], res["failed_checks"] = verdict(res["metrics"])
            res["claims_tested"], res["claims_not_shown"] = claims(res["metrics"])
        res.update(_artifacts(out_dir) if out_dir.is_dir() else {"figures": [], "tables": []})
        return res

    lock = threading.Lock()

    def finished(name: str, res: dict[str, Any]) -> None:
        with lock:  # one summary at a time, after every notebook: a long run's index is readable while it runs
            results[name] = res
            if res["status"] != "ok":
                log(f"{name}: {res['status'].upper()} after {res['seconds']}s: {res['error']}")
            write_summary()
            bar.update(1)

    with _kernel_env(formats=formats), _quiet_deprecations():
        _schedule(names, run_one, finished, jobs)
    bar.close()
    return write_summary()


def default_jobs() -> int:
    """Notebooks run at once by default: one per core, at most two (each kernel uses one thread; more at once only
    contend for memory)."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class FiguresOptions:
    """``hdae figures``'s options, as ``run`` takes them; defaults in one place."""

    profile: str = "full"
    only: list[str] | None = None
    reports: str = "reports"
    progress: bool = True
    pretrained_dir: str | None = None
    kernel: str = KERNEL
    inception_weights: str | None = None
    checkpoint: str | None = None
    checkpoint_dae: str | None = None
    data: str | None = None
    attributes: str | None = None
    overwrite: bool = False
    formats: str | None = None
    quick: bool = False
    jobs: int = field(default_factory=lambda: default_jobs())
    strict: bool = False

    @classmethod
    def from_args(cls, args) -> "FiguresOptions":
        """From parsed arguments (missing ones keep their defaults; ``--no-progress`` turns progress off)."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        if getattr(args, "no_progress", False):
            given["progress"] = False
        return cls(**given)

    def command(self) -> str:
        """The ``hdae figures`` line that regenerates this report (quoted for a shell)."""
        flags = {"profile": "--profile", "checkpoint": "--checkpoint", "checkpoint_dae": "--checkpoint-dae",
                 "data": "--data", "attributes": "--attributes", "reports": "--out"}
        parts = ["hdae", "figures"]
        for key, flag in flags.items():
            v = getattr(self, key)
            if v and v != getattr(FiguresOptions, key):
                parts += [flag, shlex.quote(str(v))]
        if self.formats:
            parts += ["--format", shlex.quote(self.formats)]
        if self.quick:
            parts.append("--quick")
        return " ".join(parts)


def main(args) -> int:
    """``hdae figures``: exit code 0 when every selected notebook ran (with ``--strict``: and every sanity check passed),
    1 otherwise; 2 for a refused input or destination (one line, nothing written)."""
    opts = FiguresOptions.from_args(args)
    try:
        summary = run(**{f.name: getattr(opts, f.name) for f in fields(opts) if f.name != "strict"},
                      command=opts.command())
    except (ValueError, ReportFolderBusy) as e:
        print(f"hdae: error: {e}", file=sys.stderr)
        return 2
    failed = [n for n in summary["ran"] if summary["notebooks"][n]["status"] not in RAN]
    degraded = [n for n in summary["ran"] if summary["notebooks"][n]["status"] == "degraded"]
    for n in summary["ran"]:
        r = summary["notebooks"][n]
        print(f"{n:<20} {r['status']:<8} {_duration(r['seconds']):>7}" + (f"  {r['error']}" if r["error"] else ""))
        for c in r.get("failed_checks", []):
            print(f"{'':<20} failed check: {c}")
        for c in r.get("claims_not_shown", []):
            print(f"{'':<20} claim not shown: {c}")
    print(claims_line({n: summary["notebooks"][n] for n in summary["ran"]}))
    print(f"index: {summary['index']}  ({_duration(summary['seconds'])})")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    if degraded:
        print(f"{len(degraded)} notebook(s) degraded (a check failed): {', '.join(degraded)}"
              + ("" if opts.strict else " (--strict makes this an error)"), file=sys.stderr)
    return 1 if failed or (degraded and opts.strict) else 0
