"""hdae figures writes only into a new, empty or recognised report folder, one run at a time, and says what is stale."""
import dataclasses
import json
import os
import subprocess
import time
import sys

import pytest

from hdae_core import cli, pipeline
from conftest import tiny_notebook

NAMES = ("00_tour", "01_train")


@pytest.fixture
def tiny_studies(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    for n in NAMES:
        tiny_notebook(nbdir / f"{n}.ipynb", "import json, pathlib\np = pathlib.Path(out_dir); p.mkdir(exist_ok=True)\n"
                      "(p / 'metrics.json').write_text(json.dumps({'checks': [{'name': 'c', 'value': 1, 'bound': 0, "
                      "'relation': '>', 'passed': True}]}))")
    monkeypatch.setattr(pipeline, "NOTEBOOKS", NAMES)
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(pipeline, "PROFILES", {"smoke": {n: {"out_dir": "{out}"} for n in NAMES}})
    monkeypatch.setattr(pipeline, "STUDY", {n: dataclasses.replace(s, needs_models=False)
                                            for n, s in pipeline.STUDY.items()})
    return nbdir


def _figures(*argv):
    return pipeline.main(cli.build_parser().parse_args(["figures", "--profile", "smoke", "--no-progress", *argv]))


def test_an_unrelated_folder_is_refused_and_left_alone(tiny_studies, tmp_path, capsys):
    theirs = tmp_path / "thesis"
    (theirs / "00_tour").mkdir(parents=True)
    (theirs / "00_tour" / "draft.txt").write_text("chapter 1")
    (theirs / "index.md").write_text("my index")
    for extra in ([], ["--overwrite"]):
        assert _figures("--out", str(theirs), *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(theirs) in err and "not an hdae report" in err
    assert (theirs / "00_tour" / "draft.txt").read_text() == "chapter 1"
    assert (theirs / "index.md").read_text() == "my index"
    assert sorted(p.name for p in theirs.iterdir()) == ["00_tour", "index.md"]


def test_an_earlier_report_needs_overwrite(tiny_studies, tmp_path, capsys):
    out = tmp_path / "rep"
    assert _figures("--out", str(out)) == 0
    before = (out / "summary.json").read_text()
    assert _figures("--out", str(out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert _figures("--out", str(out), "--overwrite", "--only", "00") == 0
    assert json.loads((out / "summary.json").read_text())["notebooks"]["01_train"]["status"] == "ok"  # kept


def test_a_summary_of_another_shape_is_refused_in_one_line(tiny_studies, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"something": "else"}))
    assert _figures("--out", str(out), "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "summary.json: not an hdae report summary" in err
    (out / "summary.json").write_text("{not json")
    assert _figures("--out", str(out), "--overwrite") == 2
    assert "not an hdae report summary" in capsys.readouterr().err


@pytest.mark.parametrize("only", [[""], [" , "], ["", ""]])
def test_a_selection_of_nothing_is_an_error(only, tmp_path, capsys):
    with pytest.raises(ValueError, match="selects no notebook"):
        pipeline.select(only)
    argv = [a for o in only for a in ("--only", o)]
    assert _figures("--out", str(tmp_path / "rep"), *argv) == 2
    assert not (tmp_path / "rep").exists()


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    holder = pipeline.lock_reports(out)
    try:
        with pytest.raises(pipeline.ReportFolderBusy, match=f"another hdae figures run \\(process {os.getpid()}\\)"):
            pipeline.lock_reports(out)
        # from another process too (flock is per open file, so this is what a second `hdae figures` meets)
        code = (f"import sys; from pathlib import Path; from hdae_core import pipeline\n"
                f"try:\n    pipeline.lock_reports(Path({str(out)!r}))\nexcept pipeline.ReportFolderBusy as e:\n"
                f"    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 3 and "is writing to this folder" in r.stdout
    finally:
        holder.close()
    pipeline.lock_reports(out).close()  # released: the next run may write


def test_a_run_stopped_midway_leaves_the_rest_marked_incomplete(tiny_studies, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    assert _figures("--out", str(out)) == 0
    real = pipeline.execute

    def killed_after_the_first(name, *a, **kw):
        if name == "01_train":
            raise KeyboardInterrupt  # as a Ctrl-C or a kill mid-run
        return real(name, *a, **kw)

    monkeypatch.setattr(pipeline, "execute", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):  # one at a time: 00 has ended before 01 starts
        _figures("--out", str(out), "--overwrite", "--jobs", "1")
    nbs = json.loads((out / "summary.json").read_text())["notebooks"]
    assert nbs["00_tour"]["status"] == "ok" and nbs["01_train"]["status"] == "incomplete"
    index = (out / "index.md").read_text()
    assert "incomplete 1 (01_train)" in index


def test_a_relative_checkpoint_means_the_folder_under_the_working_directory(tmp_path, monkeypatch):
    import torch

    from hdae_core import HDAE, ModelConfig, checkpoint, pretrained

    # the same relative path exists in the checkout (the shipped model); the user's own must win
    rel = "data/pretrained/shapes32_dae"
    torch.manual_seed(0)
    checkpoint.save(HDAE(ModelConfig.preset("tiny", "dae")), tmp_path / rel)
    monkeypatch.chdir(tmp_path)
    inputs = pipeline.check_inputs(checkpoint=rel)
    assert inputs["checkpoint"] == str((tmp_path / rel).resolve())
    assert pretrained.resolve(rel).is_absolute()


def test_two_runs_of_one_variant_get_labels_of_their_own(tmp_path):
    import torch

    from hdae_core import HDAE, ModelConfig, checkpoint, pretrained

    for run in ("run_a", "run_b"):
        torch.manual_seed(0)
        checkpoint.save(HDAE(ModelConfig.preset("tiny", "hdae_u")), tmp_path / run / "checkpoint")
    folders = pretrained.model_folders(tmp_path / "run_a", tmp_path / "run_b")
    assert list(folders) == ["HDAE(U) [run_b]", "HDAE(U) [run_a]"]
    checkpoint.save(HDAE(ModelConfig.preset("tiny", "hdae_u")), tmp_path / "x" / "run_a" / "checkpoint")
    folders = pretrained.model_folders(tmp_path / "run_a", tmp_path / "x" / "run_a")
    assert len(set(folders)) == 2 and len(folders) == 2


def test_notebooks_run_side_by_side_after_what_they_read(monkeypatch):
    import threading

    events, lock = [], threading.Lock()

    def run_one(name):
        with lock:
            events.append(("start", name))
        time.sleep(0.2)
        with lock:
            events.append(("end", name))
        return {"status": "ok"}

    done = []
    names = ["03_reconstruction", "05_directions", "06_editing", "07_editor"]
    pipeline._schedule(names, run_one, lambda n, r: done.append(n), jobs=2)
    assert sorted(done) == sorted(names)
    order = [e for e in events]
    for late in ("06_editing", "07_editor"):  # they read 05's directions: never before 05 has ended
        assert order.index(("end", "05_directions")) < order.index(("start", late))
    starts = [n for kind, n in order[:2] if kind == "start"]
    assert len(starts) == 2  # two at once from the start
    # one at a time keeps the order of the studies apart from what they wait for
    events.clear()
    pipeline._schedule(names, run_one, lambda n, r: None, jobs=1)
    assert [n for kind, n in events if kind == "start"] == names


def test_an_interrupt_lets_the_running_notebook_finish_and_records_it():
    import threading

    gate = threading.Event()
    recorded = []

    def run_one(name):
        if name == "01_train":
            gate.wait(5)
            raise KeyboardInterrupt
        gate.set()
        time.sleep(0.3)
        return {"status": "ok"}

    with pytest.raises(KeyboardInterrupt):
        pipeline._schedule(["00_tour", "01_train", "02_ablation"], run_one, lambda n, r: recorded.append(n), jobs=2)
    assert recorded == ["00_tour"]  # it was running when 01 failed: it ends and is recorded; 02 never starts


def test_the_longest_chain_starts_first(monkeypatch):
    times = {"03_reconstruction": 120.0, "05_directions": 60.0, "06_editing": 350.0, "09_sampling": 140.0}
    monkeypatch.setattr(pipeline, "study_times", lambda: {"seconds": times})
    chain = pipeline._critical_path(list(times))
    assert chain["05_directions"] == 410.0 and chain["06_editing"] == 350.0 and chain["03_reconstruction"] == 120.0
    started = []
    pipeline._schedule(list(times), lambda n: started.append(n) or {"status": "ok"}, lambda n, r: None, jobs=2)
    assert started[0] == "05_directions"  # 06 waits on it: together the longest chain
