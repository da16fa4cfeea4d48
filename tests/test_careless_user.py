"""A careless user's inputs: each is refused in one line that names it and says what to do, before anything is
written, and nothing the user already had is lost."""
import json

import pytest
from PIL import Image

from hdae_core import cli, pipeline
from hdae_core.publish import NotPublishable, publish


# ---------------------------------------------------------------- hdae publish


def _report(root):
    """A full report as `hdae figures` writes it (the fields publish reads)."""
    nbs = {}
    for name in pipeline.NOTEBOOKS:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "figure.png")
        nbs[name] = {"status": "ok", "seconds": 1.0, "figures": ["figure.png"], "tables": [], "metrics": {}}
    summary = {"profile": "full", "notebooks": nbs, "ran": list(nbs), "inputs": {}, "written": "now"}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def _edit_summary(report, change):
    s = json.loads((report / "summary.json").read_text())
    change(s["notebooks"][pipeline.NOTEBOOKS[0]])
    (report / "summary.json").write_text(json.dumps(s))


def test_publish_never_writes_outside_dest_for_a_figure_named_with_dotdot(tmp_path):
    report = _report(tmp_path / "report")
    (tmp_path / "outside.png").write_bytes(b"the report's neighbour")
    _edit_summary(report, lambda r: r.update(figures=["../../outside.png"]))
    with pytest.raises(NotPublishable, match=r"figures holds '\.\./\.\./outside\.png'.*no '\.\.'"):
        publish(report, tmp_path / "docs")
    assert not (tmp_path / "docs").exists()


def test_publish_never_deletes_what_a_hand_edited_results_md_lists_outside_figures(tmp_path):
    report, docs = _report(tmp_path / "report"), tmp_path / "docs"
    publish(report, docs)
    (tmp_path / "mine.txt").write_text("mine")
    (docs / "notes.png").write_bytes(b"mine too")
    results = docs / "results.md"
    text = results.read_text().replace("<!-- published by hdae publish: ",
                                       "<!-- published by hdae publish: ../mine.txt figures/../notes.png notes.png ")
    results.write_text(text)
    publish(report, docs)
    assert (tmp_path / "mine.txt").read_text() == "mine" and (docs / "notes.png").read_bytes() == b"mine too"


@pytest.mark.parametrize("change", [
    lambda r: r.clear() or r.update(ok=1),  # status missing: refused by the status check, as before
    lambda r: r.update(figures="figure.png"),
    lambda r: r.update(tables=[3]),
    lambda r: r.update(seconds="long"),
])
def test_publish_refuses_a_summary_of_another_shape_in_one_line(tmp_path, change, capsys):
    report = _report(tmp_path / "report")
    _edit_summary(report, change)
    assert cli.main(["publish", str(report), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hdae: error: ") and err.count("\n") == 1 and str(report) in err
    assert not (tmp_path / "docs").exists()


def test_publish_refuses_a_notebook_entry_that_is_not_an_object(tmp_path, capsys):
    report = _report(tmp_path / "report")
    s = json.loads((report / "summary.json").read_text())
    s["notebooks"][pipeline.NOTEBOOKS[0]] = "ok"
    (report / "summary.json").write_text(json.dumps(s))
    assert cli.main(["publish", str(report), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert "not a JSON object" in err and err.count("\n") == 1


def test_publish_refuses_a_dest_that_is_a_file(tmp_path, capsys):
    report = _report(tmp_path / "report")
    (tmp_path / "dest").write_text("mine")
    assert cli.main(["publish", str(report), str(tmp_path / "dest")]) == 2
    assert "is a file, not a folder; choose another DEST" in capsys.readouterr().err
    assert (tmp_path / "dest").read_text() == "mine"
