"""hdae publish: a full report's findings, checks and figures become docs/results.md and docs/figures; any other
report is refused in one line, before a file is written."""
import json
import re

import pytest
from PIL import Image

from hdae_core import cli, pipeline
from hdae_core.publish import NotPublishable, publish


def _report(root, profile="full", status="ok", drop=None):
    """A report folder as `hdae figures` writes it: summary.json, and per notebook a figure, a table and metrics."""
    nbs = {}
    for name in pipeline.NOTEBOOKS:
        if name == drop:
            continue
        out = root / name
        out.mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(out / "figure.png")
        (out / "table.csv").write_text("a,b\n1,2\n")
        check = {"name": f"{name} | headline vs baseline", "value": 0.25, "bound": 0.5, "relation": "<",
                 "passed": status == "ok"}
        metrics = {"profile": profile, "checks": [check], "findings": [f"{name}: measured 0.250 against 0.500."]}
        (out / "metrics.json").write_text(json.dumps(metrics))
        nbs[name] = {"status": status, "seconds": 30.0, "error": None, "notebook": str(out / f"{name}.ipynb"),
                     "figures": ["figure.png"], "tables": ["table.csv"], "metrics": metrics}
    summary = {"profile": profile, "notebooks": nbs, "ran": list(nbs), "inputs": {}, "command": "hdae figures",
               "written": "2026-01-01 00:00 UTC"}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def test_publish_writes_results_and_figures_from_the_report(tmp_path):
    docs = tmp_path / "docs"
    earlier = _report(tmp_path / "earlier")  # an earlier publish wrote stale.png: its name must not stay linked
    (earlier / "04_hierarchy" / "figure.png").rename(earlier / "04_hierarchy" / "stale.png")
    summary = json.loads((earlier / "summary.json").read_text())
    summary["notebooks"]["04_hierarchy"]["figures"] = ["stale.png"]
    (earlier / "summary.json").write_text(json.dumps(summary))
    publish(earlier, docs)
    assert (docs / "figures" / "04_hierarchy" / "stale.png").is_file()
    (docs / "figures" / "shapes_world.png").write_bytes(b"kept")  # not a notebook's: left alone
    (docs / "figures" / "04_hierarchy" / "notes.txt").write_text("mine")  # not published: left alone
    path = publish(_report(tmp_path / "reports"), docs)
    text = path.read_text()
    assert path == docs / "results.md" and "do not edit by hand" in text
    for name in pipeline.NOTEBOOKS:
        assert f"## {name}" in text and f"- {name}: measured 0.250 against 0.500." in text
        assert pipeline.STUDY[name].question in text
        assert (docs / "figures" / name / "figure.png").is_file() and (docs / "figures" / name / "table.csv").is_file()
    assert r"04_hierarchy \| headline vs baseline | sanity | 0.25 < 0.5 (pass) |" in text  # a | in a name stays in its cell
    assert not (docs / "figures" / "04_hierarchy" / "stale.png").exists()
    assert (docs / "figures" / "shapes_world.png").read_bytes() == b"kept"
    assert (docs / "figures" / "04_hierarchy" / "notes.txt").read_text() == "mine"
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (docs / link).is_file(), link


@pytest.mark.parametrize("kind, message", [("smoke", "only a full report"), ("failed", "not every notebook ran"),
                                           ("missing", "09_sampling missing"), ("none", "not an hdae report")])
def test_publish_refuses_other_reports_before_writing(tmp_path, kind, message):
    reports = tmp_path / "reports"
    if kind == "none":
        reports.mkdir()
    else:
        _report(reports, profile="smoke" if kind == "smoke" else "full",
                status="failed" if kind == "failed" else "ok", drop="09_sampling" if kind == "missing" else None)
    with pytest.raises(NotPublishable, match=message):
        publish(reports, tmp_path / "docs")
    assert not (tmp_path / "docs").exists()


def test_hdae_publish_command(tmp_path, capsys):
    reports = _report(tmp_path / "reports", profile="smoke")
    assert cli.main(["publish", str(reports), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only a full report" in err
    reports = _report(tmp_path / "full")
    assert cli.main(["publish", str(reports), str(tmp_path / "docs")]) == 0
    assert (tmp_path / "docs" / "results.md").is_file()


def test_a_degraded_report_is_published_with_its_failed_checks(tmp_path):
    text = publish(_report(tmp_path / "reports", status="degraded"), tmp_path / "docs").read_text()
    assert "0 ok and 10 degraded" in text and "0.25 < 0.5 (FAIL)" in text
    assert "**degraded** (a sanity check failed" in text


def test_claims_not_shown_are_published_beside_an_ok_status(tmp_path):
    reports = _report(tmp_path / "reports")
    summary = json.loads((reports / "summary.json").read_text())
    r = summary["notebooks"]["06_editing"]
    r["metrics"]["checks"].append({"name": "red: TF leakage minus k = all", "value": 0.01, "bound": 0.0,
                                   "relation": "<", "passed": False, "kind": "claim"})
    r["claims_tested"], r["claims_not_shown"] = 1, ["red: TF leakage minus k = all: 0.01 < 0 (NOT SHOWN)"]
    (reports / "summary.json").write_text(json.dumps(summary))
    text = publish(reports, tmp_path / "docs").read_text()
    assert "10 notebooks, all ok" in text
    assert "The paper's claims: 0 of 1 tested shown on these models (06_editing: 1 not shown" in text
    assert "**ok**; the paper's claims it tests: 0 of 1 shown on these models." in text
    assert "| red: TF leakage minus k = all | claim | 0.01 < 0 (NOT SHOWN) |" in text


def test_times_come_from_the_recorded_report(tmp_path, monkeypatch):
    from hdae_core import publish as P

    times = tmp_path / "study_times.json"
    monkeypatch.setattr(pipeline, "TIMES_FILE", times)
    pipeline.study_times.cache_clear()
    spec = pipeline.STUDY["04_hierarchy"]
    assert spec.time == "not measured yet" and "not measured yet" in spec.time_line
    assert "not measured yet" in pipeline.report_time_line()
    summary = json.loads((_report(tmp_path / "reports") / "summary.json").read_text())
    summary["notebooks"]["04_hierarchy"]["seconds"] = 95.4
    P.record_times(summary, times)
    assert spec.time == "1 min 35 s" and spec.seconds == 95.4
    assert spec.time_line.startswith("**Time:** 1 min 35 s, in the full report of 2026-01-01 00:00 UTC")
    assert pipeline.report_time_line().startswith("**Full report:** `make figures` took ")
    row = P._row("| [`04_hierarchy`](x) | old question | old | 9 min |")
    assert row == f"| [`04_hierarchy`](x) | {spec.question} | {spec.regenerates} | 1 min 35 s |"
    monkeypatch.undo()
    pipeline.study_times.cache_clear()


def test_publish_never_replaces_what_it_did_not_write(tmp_path):
    reports = _report(tmp_path / "reports")
    theirs = tmp_path / "theirs"
    (theirs / "figures" / "04_hierarchy").mkdir(parents=True)
    (theirs / "results.md").write_text("# My results\n")
    with pytest.raises(NotPublishable, match="results.md: not written by hdae publish"):
        publish(reports, theirs)
    (theirs / "results.md").unlink()
    (theirs / "figures" / "04_hierarchy" / "figure.png").write_bytes(b"my figure")  # the same name as one it copies
    with pytest.raises(NotPublishable, match="figure.png: not written by an earlier hdae publish"):
        publish(reports, theirs)
    assert (theirs / "figures" / "04_hierarchy" / "figure.png").read_bytes() == b"my figure"
    assert sorted(p.name for p in theirs.rglob("*")) == ["04_hierarchy", "figure.png", "figures"]
