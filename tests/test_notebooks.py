"""The notebooks are the source: stored clean, parameterised as the pipeline expects, thin, and lint-free.

What a notebook saved in JupyterLab (through ``make lab``'s save hook) must satisfy; no kernel needed.
"""
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from pyflakes.api import check as pyflakes_check
from pyflakes.reporter import Reporter

from hdae_core import notebooks, pipeline

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
PATHS = sorted(NB_DIR.glob("*.ipynb"))
MAX_CELL_LINES = 25


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_notebooks_are_the_only_source():
    assert [p.stem for p in PATHS] == list(pipeline.NOTEBOOKS)
    assert not list(NB_DIR.glob("*.py")), "no generators beside the notebooks: edit the .ipynb themselves"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_stored_clean_with_stable_ids(path):
    raw = json.loads(path.read_text())
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [c.get("id") for c in raw["cells"]]
    # ids written in the file: nbformat would mint random ones on every load otherwise
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids {ids}"
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
    assert not notebooks.clean_file(path, check=True), (
        f"{path.name} holds outputs or run metadata: save it from `make lab`, or run "
        f"python -m hdae_core.notebooks {path.relative_to(ROOT)}")
    assert raw["metadata"]["kernelspec"]["name"] == pipeline.KERNEL


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_introduction_and_parameters_cell(path):
    # every notebook opens the same way, from its row of pipeline.STUDIES: the question, Regenerates, Time,
    # then what to look for
    spec = pipeline.STUDY[path.stem]
    nb = nbformat.read(path, as_version=4)
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and intro.source.startswith(f"# {path.stem[:2]} · ")
    paragraphs = intro.source.split("\n\n")
    assert paragraphs[1] == spec.question, f"{path.name}: the question of its STUDIES row comes first"
    assert paragraphs[2] == f"**Regenerates:** {spec.regenerates}"
    assert paragraphs[3] == spec.time_line
    assert paragraphs[4].startswith("**What to look for.**")
    assert "parameters" in pipeline.parameters_cell(path).metadata["tags"]
    params = pipeline.notebook_parameters(path)
    assert {"out_dir", "seed", "profile", "quick"} <= set(params), "the parameters every study shares"


def _table_rows(path: Path) -> dict[str, list[str]]:
    """The rows of the Markdown tables in ``path`` whose first cell names a notebook, by notebook."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        name = re.match(r"\W*(\d\d_\w+)", cells[0]) if cells else None
        if name and name.group(1) in pipeline.STUDY:
            name = name.group(1)
            rows[name] = cells
    return rows


@pytest.mark.parametrize("readme", ["README.md", "notebooks/README.md"])
def test_the_notebook_tables_agree_with_the_studies(readme):
    rows = _table_rows(ROOT / readme)
    assert list(rows) == list(pipeline.NOTEBOOKS), f"{readme}: one row per study, in order"
    for name, cells in rows.items():
        spec = pipeline.STUDY[name]
        assert spec.regenerates in cells, f"{readme}, {name}: regenerates {spec.regenerates!r}"
        assert spec.time in cells, f"{readme}, {name}: time {spec.time!r}"
        assert spec.question in cells, f"{readme}, {name}: question {spec.question!r}"


def test_the_readme_states_the_full_report_time_recorded():
    # the README's time for `make figures` is the recorded full report's, rewritten by `hdae publish`
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith(pipeline.REPORT_TIME_MARK)]
    assert lines == [pipeline.report_time_line()]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_cells_are_thin_and_lint_free(path):
    nb = nbformat.read(path, as_version=4)
    long = {i: len(src.splitlines()) for i, src in enumerate(_code(nb)) if len(src.splitlines()) > MAX_CELL_LINES}
    assert not long, f"{path.name}: code cells longer than {MAX_CELL_LINES} lines (cell: lines) {long}"
    # the cells in order, as the kernel runs them; IPython magics are not Python
    script = "\n\n".join("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
                         for src in _code(nb)) + "\n"

    class Collect:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines.append(text)

    out, err = Collect(), Collect()
    pyflakes_check(script, path.name, Reporter(out, err))
    problems = "".join(out.lines + err.lines)
    assert not problems, f"{path.name}: pyflakes over the cells' code:\n{problems}"


def test_every_passed_parameter_exists():
    assert pipeline.check_parameters(skip_missing=False) == []


def test_full_profile_is_the_notebooks_own_defaults():
    where = {"out_dir", "profile", "checkpoint", "checkpoint_hdae", "checkpoint_dae", "out", "work_dir",
             "directions_dir", "directions_cache", "oracle_dir", "cache_dir"}  # where things go, not what is studied
    for name, params in pipeline.PROFILES["full"].items():
        assert set(params) <= where, f"full/{name} overrides the notebook's study parameters: {set(params) - where}"


def test_unknown_parameters_are_errors_in_tests(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("value = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": pipeline.KERNEL, "display_name": "Python (hdae)", "language": "python"}
    nbformat.write(nb, tmp_path / "n.ipynb")
    # papermill only logs an unknown parameter; the pipeline raises it as a warning, which pyproject makes an error
    with pytest.raises(pipeline.UnknownParameterWarning, match="Passed unknown parameter: not_a_parameter"):
        pipeline.execute("n", {"value": 1, "not_a_parameter": 1}, tmp_path / "out", notebook_dir=tmp_path)


def test_a_notebook_run_and_saved_in_lab_is_stored_unchanged():
    path = NB_DIR / "03_reconstruction.ipynb"
    stored = path.read_text()
    nb = nbformat.reads(stored, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2025-01-01T00:00:00"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.9", "mimetype": "text/x-python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    model = {"type": "notebook", "content": nb}
    notebooks.pre_save_hook(model=model, path=str(path), contents_manager=None)
    assert nbformat.writes(model["content"]) + "\n" == stored


def test_the_hdae_kernel_runs_this_environment():
    python = Path(pipeline.kernel_python(pipeline.KERNEL))
    assert python.parent == Path(sys.executable).parent, f"kernel 'hdae' runs {python}, not {sys.executable}"
    assert python.resolve() == Path(sys.executable).resolve()
    with pytest.raises(ValueError, match="make venv"):
        pipeline.kernel_python("no-such-kernel-hdae")
