"""The figure pipeline's pieces: plot helpers, parameter plumbing, the index, demo-model resolution."""
import dataclasses
import json
import warnings

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hdae_core import hierarchy, pipeline, plots, pretrained
from hdae_core.study import save_metrics
from conftest import tiny_notebook


def _png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.size


# ---------------------------------------------------------------- image grids


def test_save_grid_unchanged(tmp_path):
    rows = [torch.zeros(3, 3, 8, 8), torch.ones(2, 3, 8, 8)]
    p = plots.save_grid(tmp_path / "g.png", rows, scale=2)
    # 3 columns and 2 rows of 8 px images with 1 px padding, doubled
    assert _png_size(p) == ((3 * 9 + 1) * 2, (2 * 9 + 1) * 2)
    assert plots.to_uint8(torch.tensor([[[[-1.0]], [[0.0]], [[1.0]]]])).tolist() == [[[[0, 128, 255]]]]


def test_labeled_grid_without_labels_is_the_plain_grid():
    rows = [torch.rand(4, 3, 16, 16) * 2 - 1]
    assert plots.labeled_grid(rows, scale=2).size == plots.image_grid(rows, scale=2).size


def test_labeled_grid_adds_margins_for_labels(tmp_path):
    rows = [torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1]
    plain = plots.image_grid(rows, scale=3)
    p = plots.save_labeled_grid(tmp_path / "l.png", rows, row_labels=["first row", "second"],
                                col_labels=["a", "a much longer column label that wraps", "c"], scale=3)
    w, h = _png_size(p)
    assert w > plain.width and h > plain.height
    arr = np.asarray(Image.open(p).convert("L"))
    assert (arr[:, : w - plain.width] < 128).any(), "row labels drawn in the left margin"
    assert (arr[: h - plain.height] < 128).any(), "column labels drawn in the top margin"
    with pytest.raises(ValueError, match="row_labels"):
        plots.labeled_grid(rows, row_labels=["one"])


def test_label_map_to_image():
    lm = torch.tensor([[[0, 1], [4, 5]]])
    img = plots.label_map_to_image(lm)
    assert img.shape == (1, 3, 2, 2) and img.min() >= -1 and img.max() <= 1
    assert torch.allclose(img[0, :, 0, 1], torch.tensor(plots.LABEL_PALETTE[1]) * 2 - 1)
    with pytest.raises(ValueError, match="no colour"):
        plots.label_map_to_image(torch.tensor([[[9]]]))


def test_noise_to_image_range():
    x = plots.noise_to_image(torch.randn(2, 3, 8, 8) * 5)
    assert x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------- matplotlib figures


def test_plot_curves_png_size_and_gaps(tmp_path):
    a = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [1.0, 0.5, 0.3, 0.2], "eval": [None, 0.4, None, 0.1]})
    b = pd.DataFrame({"step": [1, 2], "loss": [0.9, 0.6]})  # no 'eval' column: that panel skips it
    fig = plots.plot_curves({"a": a, "b": b}, "step", ["loss", "eval", "missing"], path=tmp_path / "c.png",
                            ncols=3, panel_size=(4, 3), dpi=50, logy=True)
    assert _png_size(tmp_path / "c.png") == (12 * 50, 3 * 50)
    ax_loss, ax_eval, ax_missing = fig.axes[:3]
    assert len(ax_loss.lines) == 2 and len(ax_eval.lines) == 1 and len(ax_missing.lines) == 0
    assert list(ax_eval.lines[0].get_xdata()) == [2, 4]  # NaN rows dropped, not drawn as gaps
    assert ax_loss.get_yscale() == "linear"  # within one decade: log axis refused


def test_plot_curves_grid_layout(tmp_path):
    df = pd.DataFrame({"k": [1, 10, 100], "s": [0.1, 0.2, 0.3], "t": [1, 2, 3], "u": [3, 2, 1]})
    plots.plot_curves(df, "k", ["s", "t", "u"], path=tmp_path / "g.png", ncols=2, panel_size=(3, 2), dpi=40,
                      logx=True)
    assert _png_size(tmp_path / "g.png") == (6 * 40, 4 * 40)


def test_plot_curves_shades_intervals(tmp_path):
    df = pd.DataFrame({"k": [1, 10, 100], "s": [0.2, 0.3, 0.4], "s_low": [0.1, 0.25, 0.3], "s_high": [0.3, 0.35, 0.5]})
    fig = plots.plot_curves({"m": df}, "k", ["s"], path=tmp_path / "b.png", logx=True)
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.5)
    assert not plots.plot_curves({"m": df}, "k", ["s"], bands=False).axes[0].collections


def test_ecdf_values():
    xs, F = plots.ecdf(torch.tensor([0.5, 0.0, 1.0, 0.25]))
    assert xs.tolist() == [0.0, 0.25, 0.5, 1.0]
    assert F.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_plot_ecdf_panels(tmp_path):
    panels = {"DAE": {"a": torch.rand(50), "b": np.random.rand(30)}, "HDAE": {"a": torch.rand(2, 25)}}
    fig = plots.plot_ecdf(panels, path=tmp_path / "e.png", panel_size=(4, 3), dpi=50,
                          styles={"b": {"ls": "--"}})
    assert _png_size(tmp_path / "e.png") == (8 * 50, 3 * 50)
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].lines[1].get_linestyle() == "--"
    # a single {label: values} mapping is one panel
    plots.plot_ecdf({"x": [0.1, 0.2]}, path=tmp_path / "one.png", panel_size=(4, 3), dpi=50)
    assert _png_size(tmp_path / "one.png") == (4 * 50, 3 * 50)


def test_level_shares():
    n = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 0.0]])
    assert np.allclose(hierarchy.level_shares(n), [0.5, 0.5, 0.0])
    assert np.allclose(hierarchy.level_shares(torch.zeros(2, 3)), [0.5, 0.5])


def test_plot_level_heatmap(tmp_path):
    dirs = {"red": torch.randn(4, 16), "large": torch.randn(4, 16)}
    fig = plots.plot_level_heatmap(dirs, path=tmp_path / "h.png", dpi=50)
    w, h = _png_size(tmp_path / "h.png")
    assert w == 9 * 50 and h > 0
    im = fig.axes[0].collections[0].get_array()  # seaborn's heatmap: one mesh cell per (level, dimension)
    assert im.shape == (4, 16) and float(im.min()) == 0.0 and float(im.max()) == 1.0  # n̂ of Eq. 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["z1", "z2", "z3", "z4"]
    # a DAE direction is one row
    fig = plots.plot_level_heatmap(torch.randn(1, 16), path=tmp_path / "d.png", dpi=50)
    assert fig.axes[0].collections[0].get_array().shape == (1, 16)


def test_plot_bars(tmp_path):
    t = pd.DataFrame({"DAE": [0.6, 0.9], "HDAE": [0.7, 0.95]}, index=["red", "large"])
    fig = plots.plot_bars(t, path=tmp_path / "b.png", size=(5, 3), dpi=40, ylim=(0, 1), hline=0.5)
    assert _png_size(tmp_path / "b.png") == (5 * 40, 3 * 40)
    bars = [b for c in fig.axes[0].containers for b in c]
    assert len(bars) == 4
    heights = sorted(round(b.get_height(), 6) for b in bars)
    assert heights == [0.6, 0.7, 0.9, 0.95] and len(fig.axes[0].lines) == 1  # the hline; one row a group: no interval


def test_plot_bars_draw_given_intervals():
    t = pd.DataFrame({"DAE": [0.6, 0.9], "HDAE": [0.7, 0.95]}, index=["red", "large"])
    low, high = t - 0.05, t + 0.03
    high.loc["large", "DAE"] = float("nan")  # no interval: no whisker
    ax = plots.plot_bars(t, intervals=(low, high)).axes[0]
    spans = sorted((round(min(l.get_ydata()), 6), round(max(l.get_ydata()), 6)) for l in ax.lines)
    assert spans == [(0.55, 0.63), (0.65, 0.73), (0.9, 0.98)]


def test_plot_bars_pairs_intervals_with_their_bar_past_a_missing_value():
    # a NaN value draws no bar; the whiskers after it must stay on their own rows, not shift by one
    t = pd.DataFrame({"DAE": [0.6, float("nan"), 0.8], "HDAE": [0.7, 0.75, 0.9]}, index=["x", "y", "z"])
    ax = plots.plot_bars(t, intervals=(t - 0.05, t + 0.05)).axes[0]
    whiskers = sorted((round(l.get_xdata()[0], 6), round(min(l.get_ydata()), 6)) for l in ax.lines)
    assert whiskers == [(-0.2, 0.55), (0.2, 0.65), (1.2, 0.7), (1.8, 0.75), (2.2, 0.85)]


def test_plot_bars_replicates_get_intervals(tmp_path):
    rng = np.random.default_rng(0)
    t = pd.DataFrame({"MSE": rng.normal(0.05, 0.01, 40), "LPIPS": rng.normal(0.2, 0.02, 40)},
                     index=["DAE"] * 20 + ["HDAE"] * 20)
    fig = plots.plot_bars(t, path=tmp_path / "ci.png", size=(5, 3), dpi=40)
    ax = fig.axes[0]
    assert sorted(round(b.get_height(), 6) for c in ax.containers for b in c) == sorted(
        round(v, 6) for v in t.groupby(level=0, sort=False).mean().to_numpy().ravel())
    spans = [np.nanmax(l.get_ydata()) - np.nanmin(l.get_ydata()) for l in ax.lines]
    assert len(spans) == 4 and min(spans) > 0  # a 95 % interval on every bar


# ---------------------------------------------------------------- pipeline plumbing


def test_profiles_cover_every_notebook():
    for prof, nbs in pipeline.PROFILES.items():
        assert list(nbs) == list(pipeline.NOTEBOOKS), prof
        for name, params in nbs.items():
            assert params.get("out_dir") == "{out}", (prof, name)


def test_select():
    assert pipeline.select(None) == list(pipeline.NOTEBOOKS)
    assert pipeline.select(["03"]) == ["03_reconstruction"]
    assert pipeline.select(["09_sampling", "tour"]) == ["00_tour", "09_sampling"]  # pipeline order
    assert pipeline.select(["layout,editing.ipynb"]) == ["06_editing", "08_layout"]
    with pytest.raises(ValueError, match="no such notebook"):
        pipeline.select(["nope"])


def test_parameters_for_fills_placeholders(tmp_path):
    models = {"hdae_u": tmp_path / "h", "dae": tmp_path / "d"}
    for prof in pipeline.PROFILES:
        for name in pipeline.NOTEBOOKS:
            p = pipeline.parameters_for(prof, name, tmp_path / "rep", models)
            assert not any("{" in str(v) for v in p.values()), (prof, name, p)
            assert p["out_dir"] == str((tmp_path / "rep" / name).resolve())
    p = pipeline.parameters_for("smoke", "03_reconstruction", tmp_path, models)
    assert p["checkpoint_hdae"] == str(tmp_path / "h") and p["checkpoint_dae"] == str(tmp_path / "d")


def test_notebook_parameters_and_check(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('out_dir = "x"\nsteps = 3  # DDIM\nks: list = [1, 2]\nn = 2 * 3\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    nb.metadata["kernelspec"] = {"name": "hdae", "display_name": "Python (hdae)", "language": "python"}
    nbformat.write(nb, tmp_path / "00_tour.ipynb")
    # papermill's own reading of the cell: the defaults' source text
    assert pipeline.notebook_parameters(tmp_path / "00_tour.ipynb") == {"out_dir": '"x"', "steps": "3", "ks": "[1, 2]",
                                                                         "n": "2 * 3"}
    problems = pipeline.check_parameters(["smoke"], notebook_dir=tmp_path)
    assert problems and all(p.startswith("smoke/00_tour: passes") for p in problems)
    assert not any("'out_dir'" in p or "'steps'" in p for p in problems)
    # untagged first code cell
    cell.metadata["tags"] = []
    nbformat.write(nb, tmp_path / "00_tour.ipynb")
    with pytest.raises(ValueError, match="parameters"):
        pipeline.notebook_parameters(tmp_path / "00_tour.ipynb")


def test_save_metrics_is_strict_json(tmp_path):
    p = save_metrics(tmp_path, {"a": torch.tensor(0.5), "b": np.float32(2), "c": float("nan"),
                                         "d": {"e": [1, np.int64(2)], "f": float("inf")}, "g": torch.arange(2)})
    assert json.loads(p.read_text()) == {"a": 0.5, "b": 2.0, "c": None, "d": {"e": [1, 2], "f": None}, "g": [0, 1]}


def test_flatten_and_format():
    assert pipeline.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert pipeline._fmt(0.123456) == "0.1235" and pipeline._fmt(float("nan")) == "nan"


def test_write_index(tmp_path):
    (tmp_path / "00_tour").mkdir()
    summary = {"profile": "smoke", "written": "now", "seconds": 75.0, "warnings": ["models missing"],
               "notebooks": {
                   "00_tour": {"status": "ok", "seconds": 12.0, "error": None, "notebook": "x",
                               "metrics": {"mse": 0.25, "nested": {"auroc": 0.9}}, "figures": ["a.png"],
                               "tables": ["t.csv"]},
                   "01_train": {"status": "failed", "seconds": 3.0, "error": "ValueError: boom", "notebook": None,
                                "metrics": None, "figures": [], "tables": []}}}
    text = pipeline.write_index(tmp_path, summary).read_text()
    assert "![00_tour a.png](00_tour/a.png)" in text
    assert "| nested.auroc | 0.9 |" in text and "| mse | 0.25 |" in text
    assert "[t.csv](00_tour/t.csv)" in text
    assert "**FAILED**" in text and "ValueError: boom" in text
    assert "WARNING:** models missing" in text
    assert "1 of 2 notebooks ran" in text


@pytest.mark.slow
def test_run_continues_past_a_failure(tmp_path, monkeypatch, capsys):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    tiny_notebook(nbdir / "00_tour.ipynb",
                   "import json, pathlib\nfrom PIL import Image\np = pathlib.Path(out_dir)\n"
                   "Image.new('RGB', (4, 4)).save(p / 'fig.png')\n"
                   "(p / 'metrics.json').write_text(json.dumps({'value': value}))")
    tiny_notebook(nbdir / "01_train.ipynb", "raise RuntimeError('deliberate')")
    monkeypatch.setattr(pipeline, "NOTEBOOKS", ("00_tour", "01_train", "02_ablation"))
    monkeypatch.setattr(pipeline, "PROFILES", {"smoke": {n: {"out_dir": "{out}", "value": 7} for n in
                                                         ("00_tour", "01_train", "02_ablation")}})
    monkeypatch.setattr(pipeline, "STUDY", {n: dataclasses.replace(st, needs_models=False) for n, st in pipeline.STUDY.items()})
    reports = tmp_path / "rep"
    s = pipeline.run("smoke", reports=reports, progress=False, notebook_dir=nbdir)
    nbs = s["notebooks"]
    # 00_tour ran but wrote no checks: degraded, not ok (tests/test_checks.py covers the verdicts)
    assert [nbs[n]["status"] for n in ("00_tour", "01_train", "02_ablation")] == ["degraded", "failed", "missing"]
    assert not s["ok"]
    assert nbs["00_tour"]["metrics"] == {"value": 7} and nbs["00_tour"]["figures"] == ["fig.png"]
    assert "RuntimeError" in nbs["01_train"]["error"] and "deliberate" in nbs["01_train"]["error"]
    assert (reports / "00_tour" / "00_tour.ipynb").is_file() and (reports / "01_train" / "01_train.ipynb").is_file()
    index = (reports / "index.md").read_text()
    assert "00_tour/fig.png" in index and "| value | 7 |" in index
    assert json.loads((reports / "summary.json").read_text())["notebooks"]["00_tour"]["status"] == "degraded"

    # --only keeps the other notebooks' earlier results in the index; the exit code reflects the selection
    class Args:
        profile, only, overwrite = "smoke", ["00"], True

    Args.reports = str(reports)

    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    assert pipeline.main(Args) == 0
    s2 = json.loads((reports / "summary.json").read_text())
    assert s2["notebooks"]["01_train"]["status"] == "failed"  # kept from the first run
    Args.only = None
    assert pipeline.main(Args) == 1
    assert "failed" in capsys.readouterr().err


# ---------------------------------------------------------------- demo models


def test_resolve(tmp_path):
    ck = tmp_path / "shapes32_hdae_u"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "config.json").write_text("{}")
    assert pretrained.resolve("shapes32_hdae_u", tmp_path) == ck
    assert pretrained.resolve(str(ck)) == ck
    assert pretrained.resolve(str(run)) == run / "checkpoint"
    assert pretrained.available(tmp_path) == ["shapes32_hdae_u"]
    with pytest.raises(FileNotFoundError) as e:
        pretrained.resolve("shapes32_dae", tmp_path)
    msg = str(e.value)
    assert "shapes32_hdae_u" in msg and "hdae train --preset shapes32 --variant dae" in msg


def test_repo_path():
    assert pretrained.repo_path("data/x") == pretrained.REPO_DIR / "data" / "x"
    assert pretrained.repo_path("/abs/x").as_posix() == "/abs/x"
    assert pretrained.PRETRAINED_DIR == pretrained.REPO_DIR / "data" / "pretrained"


def test_demo_models_full_falls_back_loudly(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pretrained, "_train_smoke", lambda key, work, steps, progress: calls.append(key) or
                        work / "smoke_models" / key / "checkpoint")
    ck = tmp_path / "pre" / "shapes32_hdae_u"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text("{}")
    seen = []
    with pytest.warns(pretrained.PretrainedMissingWarning, match="shapes32_dae"):
        got = pretrained.demo_models("full", tmp_path / "work", pretrained_dir=tmp_path / "pre", warn=seen.append)
    assert sorted(calls) == ["dae", "hdae_u"]  # both fall back: one resolution for every comparison
    assert got["dae"] == tmp_path / "work" / "smoke_models" / "dae" / "checkpoint"
    assert len(seen) == 1 and "hdae train" in seen[0]
    # both shipped: no training, no warning
    (tmp_path / "pre" / "shapes32_dae").mkdir()
    (tmp_path / "pre" / "shapes32_dae" / "config.json").write_text("{}")
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pretrained.demo_models("full", tmp_path / "work", pretrained_dir=tmp_path / "pre")
    assert not calls and got == {"hdae_u": ck, "dae": tmp_path / "pre" / "shapes32_dae"}
    with pytest.raises(ValueError, match="profile"):
        pretrained.demo_models("fast", tmp_path)
