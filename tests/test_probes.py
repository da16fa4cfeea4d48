"""Probes at equal code width: views of the codes, per-view held-out AUROC, the wins and their finding."""
import pytest
import torch

from hdae_core.probes import equal_width_auroc, equal_width_finding, equal_width_views, equal_width_wins


def test_views_hold_the_width_equal():
    codes = torch.randn(20, 3, 4)
    v = equal_width_views(codes, seed=1)
    assert list(v) == ["all levels", "z1", "z2", "z3", "random projection"]
    assert torch.equal(v["z2"][:, 0], codes[:, 1]) and v["all levels"] is codes
    assert v["random projection"].shape == (20, 1, 4)
    assert torch.equal(v["random projection"], equal_width_views(codes, seed=1)["random projection"])  # seeded
    assert equal_width_views(codes, width=6)["random projection"].shape == (20, 1, 6)
    assert list(equal_width_views(torch.randn(5, 1, 4))) == ["code"]


def test_a_level_that_holds_the_attribute_wins_at_equal_width():
    g = torch.Generator().manual_seed(0)
    N = 400
    hier = torch.randn(N, 3, 4, generator=g)
    flat = torch.randn(N, 1, 4, generator=g)
    # "a" lives in level z2 (index 1) of the hierarchy and nowhere in the flat code; "b" in both, as strongly
    a = (hier[:, 1, 0] > 0).float()
    b = (hier[:, 0, 2] + 0.3 * torch.randn(N, generator=g) > 0).float()
    flat[:, 0, 3] = hier[:, 0, 2]
    attrs = torch.stack([a, b], 1)
    t = equal_width_auroc({"FLAT": flat, "HIER": hier}, attrs, ["a", "b"], seed=0)
    assert set(t["view"]) == {"code", "all levels", "z1", "z2", "z3", "random projection"}
    assert (t[t.view != "all levels"]["width"] == 4).all() and (t[t.view == "all levels"]["width"] == 12).all()
    at = t.set_index(["model", "view", "attribute"])["auroc"]
    assert at["HIER", "z2", "a"] > 0.97 and abs(at["HIER", "z1", "a"] - 0.5) < 0.15 and abs(at["FLAT", "code", "a"] - 0.5) < 0.15
    assert (t["ci_low"] <= t["auroc"]).all() and (t["auroc"] <= t["ci_high"]).all()
    wins = equal_width_wins(t, "HIER", "FLAT").set_index("attribute")
    assert wins.loc["a", "level_wins"] and wins.loc["a", "best_level"] == "z2"
    assert not wins.loc["b", "level_wins"]  # equally readable from both: no win
    text = equal_width_finding(wins.reset_index(), "HIER", "FLAT", 4)
    assert "`a` (z2" in text and "reads 1 of 2 attributes" in text
    assert "`b`" not in text.split("projection of")[0]


def test_plot_equal_width_writes_the_figure(tmp_path):
    import pandas as pd
    rows = [{"model": m, "view": v, "attribute": a, "auroc": 0.8, "ci_low": 0.7, "ci_high": 0.9}
            for m, v in (("FLAT", "code"), ("HIER", "z1"), ("HIER", "random projection")) for a in ("a", "b")]
    from hdae_core.probes import plot_equal_width
    fig = plot_equal_width(pd.DataFrame(rows), path=tmp_path / "w.png", title="t")
    assert (tmp_path / "w.png").stat().st_size > 0
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["FLAT code", "HIER z1", "HIER random projection"]
