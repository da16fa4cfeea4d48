"""What the notebooks share: the Study run (report folder, figures, metrics.json) and the artefacts they look up."""
import json

import pytest
import torch
from PIL import Image

from hdae_core import oracle, pretrained
from hdae_core.study import Study


def test_study_writes_figures_and_metrics(tmp_path):
    study = Study(tmp_path / "report", profile="smoke", seed=3, threads=1)
    assert study.report.is_dir() and torch.get_num_threads() == 1
    a = torch.rand(3)
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(3)))  # the seed is set
    path = study.grid("g.png", [torch.zeros(2, 3, 8, 8), torch.ones(1, 3, 8, 8)], row_labels=["a", "b"], scale=2)
    with Image.open(path) as im:
        assert im.width > 2 * 8 * 2
    study.metrics.update(value=torch.tensor(0.5), bad=float("nan"))
    m = json.loads(study.finish().read_text())
    assert m["profile"] == "smoke" and m["value"] == 0.5 and m["bad"] is None and m["seconds"] >= 0


def test_load_oracle_prefers_shipped_then_cached(tmp_path):
    shipped = tmp_path / "pretrained"
    none, why = pretrained.load_oracle(16, tmp_path / "cache", pretrained_dir=shipped)
    assert none is None and "no attribute oracle" in why
    orc = oracle.AttributeOracle(oracle.OracleConfig(image_size=16, channels=4))
    oracle.save(orc, tmp_path / "cache" / "size16")  # no identity recorded: not a cache entry, not used
    none, why = pretrained.load_oracle(16, tmp_path / "cache", pretrained_dir=shipped)
    assert none is None and "no attribute oracle" in why
    trained, _ = pretrained.load_oracle(16, tmp_path / "other", train_steps=2, pretrained_dir=shipped)
    got, where = pretrained.load_oracle(16, tmp_path / "other", pretrained_dir=shipped)  # any steps will do
    assert where.startswith("attribute oracle loaded") and got.config == trained.config
    oracle.save(orc, shipped / "shapes16_oracle")
    _, where = pretrained.load_oracle(16, tmp_path / "cache", pretrained_dir=shipped)
    assert where.startswith("shipped")


def test_training_log_beside_a_checkpoint(tmp_path):
    from hdae_core import HDAE, ModelConfig, checkpoint

    run = tmp_path / "run"
    checkpoint.save(HDAE(ModelConfig.preset("tiny", "dae")), run / "checkpoint")
    assert pretrained.training_log(run / "checkpoint") is None
    (run / "metrics.csv").write_text("step,loss\n1,0.5\n")
    assert pretrained.training_log(run / "checkpoint") == run / "metrics.csv"
    assert pretrained.training_log(tmp_path / "nowhere") is None


@pytest.mark.parametrize("name", ["00_tour"])
def test_repo_paths_are_from_the_repository_root(name):
    assert pretrained.repo_path(f"notebooks/{name}.ipynb").is_file()


def test_a_finding_is_rendered_from_the_numbers_and_recorded(tmp_path, capsys):
    study = Study(tmp_path / "report", profile="smoke")
    study.check("AUROC vs chance", 0.996, 0.5, ">")
    text = study.finding("HDAE(U) reads `rotated` at {auroc:.3f}, DAE at {dae:.2f}", claim="the coarse levels hold it",
                         checks="AUROC vs chance", auroc=torch.tensor(0.99612), dae=0.6401)
    assert text == "HDAE(U) reads `rotated` at 0.996, DAE at 0.64: the coarse levels hold it."
    assert "**Finding.** " + text in capsys.readouterr().out  # outside a kernel it prints the Markdown
    assert study.finding("{n} images.", n=3) == "3 images."
    m = json.loads(study.finish().read_text())
    assert m["findings"] == [text, "3 images."]


def test_a_finding_whose_check_failed_says_so(tmp_path):
    study = Study(tmp_path / "report")
    study.check("random-x_T MSE vs the mean-colour baseline", 0.2, 0.15, "<")
    study.check("encoded vs random", 0.01, 0.2, "<")
    text = study.finding("random-x_T MSE {mse:.3f} against {base:.3f}", claim="the codes hold the image",
                         checks=["random-x_T MSE vs the mean-colour baseline", "encoded vs random"], mse=0.2, base=0.15)
    assert text.startswith("random-x_T MSE 0.200 against 0.150. Not shown on this model: the codes hold the image")
    assert "failed check: random-x_T MSE vs the mean-colour baseline: 0.2 < 0.15 (FAIL)" in text
    assert "encoded vs random" not in text  # only the failed ones are named
    assert study.finding("{x}", checks=False, x=1).startswith("1. Not shown on this model")
    with pytest.raises(KeyError, match="has not run"):
        study.finding("{x}", checks="no such check", x=1)
    with pytest.raises(KeyError):
        study.finding("{missing:.2f}")


def test_a_finding_in_a_kernel_is_markdown(tmp_path, monkeypatch):
    import IPython

    from hdae_core import study as study_mod

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    monkeypatch.setattr(study_mod, "display", shown.append)
    Study(tmp_path / "r").finding("{v:.1f} done", v=0.25)
    assert len(shown) == 1 and shown[0].data == "**Finding.** 0.2 done."


def test_a_finding_names_at_most_a_few_failed_checks(tmp_path):
    study = Study(tmp_path / "report")
    names = [f"attribute {i}" for i in range(6)]
    for n in names:
        study.check(n, 1.0, 0.1)
    text = study.finding("{k} attributes", claim="the frequencies are the data's", checks=names, k=6)
    assert "attribute 2: 1 <= 0.1 (FAIL); and 3 more)." in text and "attribute 3" not in text
