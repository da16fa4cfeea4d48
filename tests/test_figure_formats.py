"""Figures in more formats (``hdae figures --format``), labelled grids at a readable size, and ``--quick``."""
import dataclasses
import json
import os

import pandas as pd
import pytest
import torch

from hdae_core import cli, pipeline, plots
from conftest import tiny_notebook


def test_parse_formats_puts_png_first_and_refuses_others():
    assert plots.parse_formats("pdf, SVG") == ("png", "pdf", "svg")
    assert plots.parse_formats("") == ("png",) and plots.parse_formats(["png", ".pdf"]) == ("png", "pdf")
    with pytest.raises(ValueError, match="--format eps: choose from png, pdf, svg"):
        plots.parse_formats("png,eps")
    assert pipeline.FORMATS_ENV == plots.FORMATS_ENV  # the pipeline names it without importing plots


def test_figures_get_a_copy_per_format(tmp_path, monkeypatch):
    df = pd.DataFrame({"step": [1, 2, 3], "mse": [0.3, 0.2, 0.1]})
    plots.plot_curves(df, "step", ["mse"], path=tmp_path / "plain.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.png"]  # PNG only, unless asked
    monkeypatch.setenv(plots.FORMATS_ENV, "png,pdf,svg")
    plots.plot_curves(df, "step", ["mse"], path=tmp_path / "c.png")
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert "<svg" in (tmp_path / "c.svg").read_text()


def test_labelled_grid_copies_keep_their_labels_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv(plots.FORMATS_ENV, "svg,pdf")
    rows = [torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1]
    png = plots.save_labeled_grid(tmp_path / "g.png", rows, row_labels=["first", "second"],
                                  col_labels=["A", "all from A", "B"], scale=4, title="a title",
                                  legend=plots.label_legend(["background", "ellipse"]))
    svg = (tmp_path / "g.svg").read_text()
    for text in ("first", "all from A", "a title", "ellipse"):
        assert text in svg, f"{text!r} is text in the SVG, not outlines"
    assert (tmp_path / "g.pdf").is_file()
    # the vector copy has the PNG's size: one layout, two renderers
    fig = plots.labeled_grid_figure(rows, row_labels=["first", "second"], col_labels=["A", "all from A", "B"],
                                    scale=4, title="a title", legend=plots.label_legend(["background", "ellipse"]))
    assert tuple(round(v * fig.dpi) for v in fig.get_size_inches()) == plots.labeled_grid(
        rows, row_labels=["first", "second"], col_labels=["A", "all from A", "B"], scale=4, title="a title",
        legend=plots.label_legend(["background", "ellipse"])).size == _size(png)


def _size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_grid_labels_are_readable_and_label_maps_not_object_coloured():
    assert plots.grid_font_size(32) == 12 and plots.grid_font_size(64) == 12 and plots.grid_font_size(128) > 12
    from hdae_core.data.shapes import LABEL_NAMES, PALETTE

    assert len(plots.LABEL_PALETTE) == len(LABEL_NAMES)
    for colour in plots.LABEL_PALETTE:
        # far from every colour an object can have (in RGB), so a layout never reads as a rendered object
        assert min(float(((torch.tensor(colour) - torch.tensor(c)) ** 2).sum().sqrt()) for c in PALETTE) > 0.25


def test_format_and_quick_flags_reach_the_run():
    args = cli.build_parser().parse_args(["figures", "--format", "png,pdf", "--quick", "--only", "04"])
    opts = pipeline.FiguresOptions.from_args(args)
    assert (opts.formats, opts.quick) == ("png,pdf", True)
    assert opts.command() == "hdae figures --format png,pdf --quick"
    assert pipeline.FiguresOptions().command() == "hdae figures"


def test_a_bad_format_is_refused_before_anything_is_written(tmp_path, capsys):
    args = cli.build_parser().parse_args(["figures", "--format", "png,jpg", "--out", str(tmp_path / "rep")])
    assert pipeline.main(args) == 2
    assert "--format jpg" in capsys.readouterr().err and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("name", ["02_ablation", "05_directions", "06_editing", "08_layout"])
def test_classroom_notebooks_take_quick(name):
    assert pipeline.takes_quick(name)
    assert pipeline.notebook_parameters(pipeline.notebook_path(name))["quick"] == "False"


@pytest.mark.slow
def test_run_writes_the_formats_and_passes_quick_where_taken(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    body = ("import json, pathlib\nimport pandas as pd\nfrom hdae_core import plots\np = pathlib.Path(out_dir)\n"
            "plots.plot_curves(pd.DataFrame({'s': [1, 2], 'y': [1.0, 0.5]}), 's', ['y'], path=p / 'fig.png')\n"
            "(p / 'metrics.json').write_text(json.dumps({'quick': globals().get('quick')}))")
    tiny_notebook(nbdir / "00_tour.ipynb", body)
    tiny_notebook(nbdir / "01_train.ipynb", body)
    nb = json.loads((nbdir / "01_train.ipynb").read_text())  # 01 takes quick, 00 does not
    nb["cells"][0]["source"] += "\nquick = False"
    (nbdir / "01_train.ipynb").write_text(json.dumps(nb))
    names = ("00_tour", "01_train")
    monkeypatch.setattr(pipeline, "NOTEBOOKS", names)
    monkeypatch.setattr(pipeline, "PROFILES", {"smoke": {n: {"out_dir": "{out}"} for n in names}})
    monkeypatch.setattr(pipeline, "STUDY", {n: dataclasses.replace(st, needs_models=False)
                                            for n, st in pipeline.STUDY.items()})
    monkeypatch.delenv(plots.FORMATS_ENV, raising=False)
    s = pipeline.run("smoke", reports=tmp_path / "rep", progress=False, notebook_dir=nbdir, formats="svg,pdf",
                     quick=True)
    for n in names:
        assert sorted(p.name for p in (tmp_path / "rep" / n).glob("fig.*")) == ["fig.pdf", "fig.png", "fig.svg"]
        assert s["notebooks"][n]["figures"] == ["fig.png"]  # the index shows the PNGs
    assert s["notebooks"]["01_train"]["metrics"] == {"quick": True}
    assert s["notebooks"]["00_tour"]["metrics"] == {"quick": None}
    assert "no quick parameter" in s["notebooks"]["00_tour"]["note"]
    assert s["formats"] == "png,svg,pdf" and s["quick"] is True
    assert plots.FORMATS_ENV not in os.environ  # set for the kernels only
