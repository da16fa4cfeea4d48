"""Checks, verdicts and what the pipeline and the index make of them (issue: a green run must not hide a broken study)."""
import dataclasses
import json

import pytest

from hdae_core import checks, cli, pipeline
from hdae_core.study import Study
from conftest import tiny_notebook


def test_check_relations():
    assert checks.check("mse vs baseline", 0.09, 0.148, "<")["passed"]
    assert not checks.check("mse vs baseline", 0.2, 0.148, "<")["passed"]
    assert checks.check("std", 1.0, [0.8, 1.25], "in") == {"name": "std", "value": 1.0, "bound": [0.8, 1.25],
                                                           "relation": "in", "passed": True, "kind": "sanity"}
    assert not checks.check("std", 100.0, [0.8, 1.25], "in")["passed"]
    assert checks.check("auroc", 0.7, 0.5, ">")["passed"] and not checks.check("auroc", 0.5, 0.5, ">")["passed"]
    assert not checks.check("nan", float("nan"), 1.0, "<=")["passed"]  # NaN never passes
    assert not checks.check("nan", float("nan"), 1.0, ">=")["passed"]
    with pytest.raises(ValueError, match="relation"):
        checks.check("x", 1, 2, "==")
    with pytest.raises(ValueError, match="kind"):
        checks.check("x", 1, 2, "<", kind="hope")


def test_verdict():
    good = checks.check("a", 1, 2, "<")
    bad = checks.check("b", 3, 2, "<")
    assert checks.verdict({"checks": [good]}) == ("ok", [])
    status, failed = checks.verdict({"checks": [good, bad]})
    assert status == "degraded" and len(failed) == 1 and failed[0].startswith("b: 3 < 2")
    assert checks.verdict({"mse": 0.1})[0] == "degraded"  # a study without checks is not ok
    assert checks.verdict(None)[0] == "degraded"


def test_claims_leave_the_status_alone():
    # a claim of the paper that does not show on these models is a result: reported, not a degraded study
    sane = checks.check("mse vs mean colour", 0.1, 0.2, "<")
    shown = checks.check("TF lowers leakage", -0.01, 0.0, "<", kind="claim")
    missed = checks.check("TF lowers leakage (DAE)", 0.02, 0.0, "<", kind="claim")
    assert checks.verdict({"checks": [sane, shown, missed]}) == ("ok", [])
    assert checks.claims({"checks": [sane, shown, missed]}) == (2, [checks.describe(missed)])
    assert checks.describe(missed).endswith("(NOT SHOWN)") and checks.describe(shown).endswith("(shown)")
    # claims alone do not make a study ok: it must also show that it measured something
    assert checks.verdict({"checks": [shown]}) == ("degraded", ["no sanity checks written to metrics.json"])
    assert checks.claims({"checks": [sane]}) == (0, []) and checks.claims(None) == (0, [])
    # records written before checks had a kind are sanity checks
    old = {k: v for k, v in checks.check("b", 3, 2, "<").items() if k != "kind"}
    assert checks.verdict({"checks": [old]})[0] == "degraded"


def test_study_check_writes_checks(tmp_path, capsys):
    study = Study(tmp_path / "s")
    assert study.check("mse vs mean colour", 0.09, 0.148, "<")
    assert not study.check("auroc vs chance", 0.4, 0.5, ">")
    assert "FAIL" in capsys.readouterr().out
    m = json.loads(study.finish().read_text())
    assert [c["name"] for c in m["checks"]] == ["mse vs mean colour", "auroc vs chance"]
    assert [c["passed"] for c in m["checks"]] == [True, False]
    assert set(m["checks"][0]) >= {"name", "value", "bound", "passed"}


def test_study_claim_is_recorded_as_a_claim(tmp_path, capsys):
    study = Study(tmp_path / "s")
    assert not study.claim("TF leakage at matched success, minus k = all", 0.01, 0.0, "<")
    assert "(NOT SHOWN)" in capsys.readouterr().out
    text = study.finding("leakage {d:+.2f}", claim="truncation lowers leakage",
                         checks="TF leakage at matched success, minus k = all", d=0.01)
    assert text.startswith("leakage +0.01. Not shown on this model: truncation lowers leakage")
    m = json.loads(study.finish().read_text())
    assert m["checks"][0]["kind"] == "claim" and not m["checks"][0]["passed"]


_WRITES = ("from hdae_core.study import Study\ns = Study(out_dir)\n"
           "s.check('headline vs baseline', value, 1.0, '<')\ns.claim('claim vs paper', value, -1.0, '<')\n"
           "s.finish()")


@pytest.mark.slow  # runs notebooks through papermill kernels
def test_pipeline_verdicts_index_and_strict(tmp_path, monkeypatch, capsys):
    names = ("00_tour", "01_train", "03_reconstruction")
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    tiny_notebook(nbdir / "00_tour.ipynb", _WRITES)  # value 0 < 1: ok
    tiny_notebook(nbdir / "01_train.ipynb", _WRITES)  # value 5: degraded
    tiny_notebook(nbdir / "03_reconstruction.ipynb", "import json, pathlib\n"
              "(pathlib.Path(out_dir) / 'metrics.json').write_text(json.dumps({'v': 1}))")  # no checks
    monkeypatch.setattr(pipeline, "NOTEBOOKS", names)
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(pipeline, "PROFILES", {"smoke": {
        "00_tour": {"out_dir": "{out}", "value": 0}, "01_train": {"out_dir": "{out}", "value": 5},
        "03_reconstruction": {"out_dir": "{out}", "value": 0}}})
    monkeypatch.setattr(pipeline, "STUDY", {n: dataclasses.replace(st, needs_models=False) for n, st in pipeline.STUDY.items()})
    reports = tmp_path / "rep"
    s = pipeline.run("smoke", reports=reports, progress=False)
    nbs = s["notebooks"]
    assert [nbs[n]["status"] for n in names] == ["ok", "degraded", "degraded"]
    assert s["ok"] and not s["all_checks_passed"]
    assert nbs["01_train"]["failed_checks"] == ["headline vs baseline: 5 < 1 (FAIL)"]
    assert nbs["03_reconstruction"]["failed_checks"] == ["no sanity checks written to metrics.json"]
    index = (reports / "index.md").read_text()
    assert "| **DEGRADED** |" in index and "headline vs baseline: 5 < 1 (FAIL)" in index
    assert "| headline vs baseline | sanity | 0 | < 1 | pass |" in index
    assert "| headline vs baseline | sanity | 5 | < 1 | **FAIL** |" in index
    assert "| claim vs paper | claim | 0 | < -1 | **NOT SHOWN** |" in index
    assert "3 of 3 notebooks ran, 1 with every sanity check passed" in index
    assert index.splitlines()[2] == "**Not all ok: degraded 2 (01_train, 03_reconstruction).**"
    # 00_tour is ok although its claim did not show: the index counts the claims apart
    assert nbs["00_tour"]["claims_tested"] == 1 and nbs["00_tour"]["claims_not_shown"]
    assert index.splitlines()[4] == ("The paper's claims: 0 of 2 tested shown on these models (00_tour: 1 not "
                                     "shown; 01_train: 1 not shown; a claim not shown is a result, not a fault).")
    ok = {n: {"status": "ok"} for n in names}
    assert pipeline._verdict(ok) == "All 3 notebooks ok: every study ran and passed its sanity checks."
    assert pipeline._verdict({**ok, "09_sampling": {"status": "failed"}}) == "Not all ok: failed 1 (09_sampling)."

    # the command: ran is exit 0, --strict makes degraded an error
    args = cli.build_parser().parse_args(["figures", "--profile", "smoke", "--reports", str(reports)])
    assert pipeline.main(args) == 2  # an earlier report is replaced only with --overwrite
    assert "--overwrite" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["figures", "--profile", "smoke", "--reports", str(reports), "--overwrite"])
    assert not args.strict and args.inception_weights is None
    assert pipeline.main(args) == 0
    assert "degraded" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["figures", "--profile", "smoke", "--reports", str(reports), "--strict",
                                          "--overwrite"])
    assert pipeline.main(args) == 1
    args = cli.build_parser().parse_args(["figures", "--profile", "smoke", "--reports", str(reports), "--strict",
                                          "--only", "00", "--overwrite"])
    assert pipeline.main(args) == 0


def test_inception_weights_must_exist(tmp_path):
    with pytest.raises(cli.UserError, match="missing.pth does not exist"):
        cli.build_parser().parse_args(["figures", "--inception-weights", str(tmp_path / "missing.pth")])
    w = tmp_path / "inception.pth"
    w.write_bytes(b"")
    args = cli.build_parser().parse_args(["figures", "--inception-weights", str(w)])
    assert args.inception_weights == str(w)
