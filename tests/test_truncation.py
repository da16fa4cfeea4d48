"""Truncated features at equal success: interpolation, matched leakage, the oracle's vote, sparsity, the sweep."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from hdae_core import HDAE, ModelConfig, truncation
from hdae_core.editing import manipulate
from hdae_core.oracle import per_image_scores
from hdae_core.stats import LatentStats
from hdae_core.truncation import (
    Frontier, at_success, k_entries, matched_table, sparsity_table, sweep_frontier, vote_table, weight_share,
)
from conftest import codes_matter

NAMES = ["red", "large", "striped"]


def test_k_entries():
    assert k_entries(1.0, 512) is None
    assert k_entries(0.1, 512) == 51 and k_entries(0.008, 512) == 4 and k_entries(0.008, 128) == 1
    assert k_entries(0.001, 100) == 1  # never zero entries
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        k_entries(0.0, 10)


def test_at_success_walks_the_curve_from_the_origin():
    s, lk = np.array([0.1, 0.3, 0.5]), np.array([0.01, 0.03, 0.09])
    v, j, w = at_success(s, lk, 0.2)
    assert v == pytest.approx(0.02) and j == 2 and w == pytest.approx(0.5)
    v, j, w = at_success(s, lk, 0.05)  # between α = 0 (success 0, leakage 0) and the first α
    assert v == pytest.approx(0.005) and j == 1
    assert at_success(s, lk, 0.5)[0] == pytest.approx(0.09)  # exactly on a point
    v, j, _ = at_success(s, lk, 0.6)
    assert math.isnan(v) and j == -1  # never reached
    # not monotone: the first crossing in α order counts, not a later one
    v, j, _ = at_success(np.array([0.3, 0.1, 0.5]), np.array([0.03, 0.0, 0.2]), 0.2)
    assert j == 1 and v == pytest.approx(0.02)
    # batched over leading axes
    v, _, _ = at_success(np.stack([s, 2 * s]), np.stack([lk, lk]), 0.2)
    assert v.tolist() == pytest.approx([0.02, 0.01])
    with pytest.raises(ValueError, match="positive"):
        at_success(s, lk, 0.0)


def synthetic(n=64, seed=0, tf_leak=0.1, full_leak=0.2, jitter=0.0):
    """A frontier with known answers: success = α·c_i for every curve; leakage = slope·success per image,
    slope ``full_leak`` at k = all and ``tf_leak`` for the truncated curves (plus per-image jitter)."""
    g = np.random.default_rng(seed)
    alphas = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    ks = [1.0, 0.1, 0.01]
    c = g.uniform(0.5, 1.5, n)
    success = np.broadcast_to(alphas[:, None] * c[None], (len(ks), 2, len(alphas), n)).copy()
    slope = np.array([full_leak, tf_leak, tf_leak])[:, None, None, None]
    leakage = slope * success + jitter * g.standard_normal(success.shape) ** 2
    return Frontier("red", "M", ks, [None, 10, 1], ["renormalised", "masked"], alphas, success, leakage,
                    np.zeros_like(success))


def test_matched_table_known_answer():
    fr = synthetic()
    t = matched_table(fr, success_levels=[0.2, 0.4], n_boot=200)
    assert len(t) == 3 * 2 * 2
    assert list(t.columns[:8]) == ["attribute", "model", "k_fraction", "step_rule", "success_level", "leakage",
                                   "ci_low", "ci_high"]
    full = t[(t.k_fraction == 1.0) & (t.success_level == 0.4)]
    assert full["leakage"].tolist() == pytest.approx([0.08, 0.08])  # 0.2 · 0.4, both rules
    tf = t[(t.k_fraction == 0.1) & (t.success_level == 0.2)].iloc[0]
    assert tf["leakage"] == pytest.approx(0.02) and tf["delta"] == pytest.approx(-0.02)
    # leakage ∝ success on every image: each resample interpolates to the same leakage
    assert tf["ci_low"] == pytest.approx(0.02) and tf["ci_high"] == pytest.approx(0.02)
    assert tf["delta_high"] < 0 and tf["reached"] == 1.0
    # the matched α: mean success is α·mean(c)
    assert tf["alpha"] == pytest.approx(0.2 / fr.success[0, 0, :, :].mean(-1)[0] * 0.1, rel=1e-6)
    # a level beyond every curve: no value, no interval
    far = matched_table(fr, success_levels=[100.0], n_boot=50)
    assert far["leakage"].isna().all() and far["ci_low"].isna().all() and (far["reached"] == 0).all()


def test_matched_intervals_cover_and_widen_with_noise():
    fr = synthetic(jitter=0.05, seed=1)
    t = matched_table(fr, success_levels=[0.4], n_boot=300)
    assert (t["ci_low"] <= t["leakage"] + 1e-12).all() and (t["leakage"] <= t["ci_high"] + 1e-12).all()
    assert (t["ci_high"] - t["ci_low"] > 1e-3).all()
    same = matched_table(synthetic(tf_leak=0.2, full_leak=0.2, jitter=0.05, seed=1), success_levels=[0.4], n_boot=300)
    tf = same[same.k_fraction < 1]
    assert ((tf["delta_low"] < 0) & (tf["delta_high"] > 0)).all()  # no difference: the interval straddles 0


def test_vote_table_counts_preferences_and_ties():
    fr = synthetic(n=8)
    # at k = 0.1, per-image leakage: images 0–3 lower than k = all (prefer TF), 4–5 equal (ties), 6–7 higher
    fr.leakage[1] = fr.leakage[0].copy()
    fr.leakage[1, :, :, :4] *= 0.5
    fr.leakage[1, :, :, 6:] *= 2.0
    v = vote_table(fr, success_levels=[0.4], tolerance=1e-4, n_boot=200)
    assert list(v.columns[:8]) == ["attribute", "model", "k_fraction", "success_level", "prefer_tf", "ci_low",
                                   "ci_high", "n"]
    r = v[v.k_fraction == 0.1].iloc[0]
    assert r["prefer_tf"] == pytest.approx(0.5) and r["ties"] == pytest.approx(0.25)
    assert r["prefer_full"] == pytest.approx(0.25) and r["n"] == 8
    assert 0 <= r["ci_low"] <= 0.5 <= r["ci_high"] <= 1
    # a level the curves never reach: no vote
    assert vote_table(fr, success_levels=[100.0], n_boot=20)["prefer_tf"].isna().all()


def test_weight_share_and_sparsity_against_gaussian():
    assert weight_share(torch.tensor([4.0, -3.0, 2.0, 1.0]), 0.25) == pytest.approx(0.4)
    assert weight_share(torch.tensor([1.0, 0.0, 0.0]), 0.01) == 1.0  # at least one entry
    one_hot = torch.zeros(10_000)
    one_hot[7] = -2.0
    t = sparsity_table({"M": {"spike": one_hot}}, tops=[0.01], n_random=4)
    r = t.iloc[0]
    assert r["share"] == 1.0 and r["entries"] == 100
    # top 1 % of |N(0, 1)|: E[|z|; |z| > z_0.995] / E|z| = 2φ(2.576) / √(2/π) ≈ 0.0362
    assert r["random_mean"] == pytest.approx(2 * math.exp(-2.5758 ** 2 / 2) / math.sqrt(2 * math.pi)
                                             / math.sqrt(2 / math.pi), abs=0.003)
    assert r["random_sd"] < 0.01 and r["ratio"] > 20


class MeanScorer(torch.nn.Module):
    """p(attribute j) = σ(8 · mean of channel j): a cheap stand-in oracle that reads the image."""

    attribute_names = NAMES

    def predict_proba(self, images):
        return torch.sigmoid(8 * images.mean((2, 3)))


def test_sweep_frontier_matches_direct_edits():
    torch.manual_seed(0)
    model = codes_matter(HDAE(ModelConfig.preset("tiny", "hdae_u")).eval())
    L, D = model.num_levels, model.code_dim
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    stats = LatentStats(torch.zeros(L, D), torch.ones(L, D))
    n = torch.randn(L, D, generator=g)
    alphas = [0.5, 2.0]
    fr = sweep_frontier(model, MeanScorer(), images, n, stats, "red", "tiny", k_fractions=[1.0, 0.1],
                        alphas=alphas, steps=2, correlated=[("red", "large", 0.8)], batch_size=4)
    assert fr.success.shape == (2, 2, 2, 3) and fr.ks == [None, round(0.1 * L * D)]
    # k = all is one edit whatever the step rule
    assert np.array_equal(fr.success[0, 0], fr.success[0, 1])
    # each entry is the edit made and scored directly, one (k, rule, α) at a time
    with torch.no_grad():
        codes = model.encode(images)
        x_T = model.encode_stochastic(images, codes, 2)
        p0 = MeanScorer().predict_proba(model.decode(x_T, codes, 2))
        for ri, rule in enumerate(fr.step_rules):
            x1 = model.decode(x_T, manipulate(codes, n, 2.0, stats, k=fr.ks[1], step_rule=rule), 2)
            want = per_image_scores(p0, MeanScorer().predict_proba(x1), "red", NAMES, [("red", "large", 0.8)])
            assert np.allclose(fr.success[1, ri, 1], want["success"].numpy(), atol=1e-5)
            assert np.allclose(fr.leakage[1, ri, 1], want["leakage"].numpy(), atol=1e-5)
            assert np.allclose(fr.partner_leakage[1, ri, 1], want["partner_leakage"].numpy(), atol=1e-5)
    # the masked step is shorter, so its edit moves the target less far from the unedited decode
    assert not np.allclose(fr.success[1, 0], fr.success[1, 1])
    table = truncation.frontier_table(fr, n_boot=50)
    assert len(table) == 2 * 2 * 2 and (table["ci_low"] <= table["leakage"] + 1e-12).all()
    assert {"attribute", "model", "k_fraction", "step_rule", "alpha", "success", "leakage", "ci_low",
            "ci_high"} <= set(table.columns)
    with pytest.raises(ValueError, match="1.0"):
        sweep_frontier(model, MeanScorer(), images, n, stats, "red", k_fractions=[0.1], alphas=alphas, steps=2)
    with pytest.raises(ValueError, match="increasing positive"):
        sweep_frontier(model, MeanScorer(), images, n, stats, "red", alphas=[0.0, 1.0], steps=2)


def test_plot_and_finding_are_rendered_from_the_tables(tmp_path):
    fr = synthetic(jitter=0.01)
    table = truncation.frontier_table(fr, n_boot=50)
    fig = truncation.plot_frontier(table, [0.2, 0.4], path=tmp_path / "f.png", title="red, M")
    assert (tmp_path / "f.png").stat().st_size > 0 and len(fig.axes) == 2
    matched = matched_table(fr, [0.2, 0.4], n_boot=100)
    votes = vote_table(fr, [0.2, 0.4], n_boot=100)
    text = truncation.tf_finding(matched, votes, "red", "M")
    assert text.startswith("M, `red`") and "lowers leakage" in text and "76%" in text
    same = synthetic(tf_leak=0.2, full_leak=0.2, jitter=0.05, seed=1)
    text = truncation.tf_finding(matched_table(same, [0.4], n_boot=100), vote_table(same, [0.4], n_boot=100),
                                 "red", "M")
    assert "no k lowers leakage" in text
    worse = synthetic(tf_leak=0.4, full_leak=0.2, jitter=0.01)
    text = truncation.tf_finding(matched_table(worse, [0.4], n_boot=100), vote_table(worse, [0.4], n_boot=100),
                                 "red", "M")
    assert "no k lowers leakage" in text and "k = 0.1, 0.01 raise it" in text


def test_tables_records_and_fixed_alpha():
    fr = synthetic(jitter=0.01)
    t = truncation.tables([fr], [0.2, 0.4], n_boot=50)
    for key, cols in truncation.KEYS.items():
        assert list(t[key].columns[:len(cols)]) == cols
        rows = truncation.records(t[key], key)
        assert rows and all(list(r) == cols for r in rows)
    assert all(r["leakage"] is not None for r in truncation.records(t["tf_matched"], "tf_matched"))
    nan_rows = truncation.records(truncation.tables([fr], [100.0], n_boot=20)["tf_matched"], "tf_matched")
    assert all(r["leakage"] is None and r["ci_low"] is None for r in nan_rows)  # JSON null, not NaN
    fixed = truncation.fixed_alpha_table(t["tf_frontier"], 0.4)
    assert len(fixed) == 3 and set(fixed["alpha"]) == {0.4} and {"leakage_low", "success_high"} <= set(fixed.columns)
    with pytest.raises(ValueError, match="not in the sweep"):
        truncation.fixed_alpha_table(t["tf_frontier"], 0.33)
    # the most selective α of the untruncated edit: the largest success minus leakage, one row per attribute, model
    best = truncation.most_selective(t["tf_frontier"])
    full = t["tf_frontier"][(t["tf_frontier"]["k_fraction"] >= 1) & (t["tf_frontier"]["step_rule"] == "renormalised")]
    margin = full["success"] - full["leakage"]
    assert len(best) == 1 and best["k_fraction"].iloc[0] == 1.0
    assert best["alpha"].iloc[0] == full.loc[margin.idxmax(), "alpha"] and margin.max() > margin.min()
    assert len(truncation.most_selective(t["tf_frontier"].iloc[:0])) == 0
    text = truncation.step_rule_finding(truncation.tables([synthetic()], [0.2, 0.4], n_boot=20)["tf_matched"])
    assert "differ by 0.000 at the median" in text  # without jitter the synthetic rules share one curve
    empty = truncation.tables([], [0.2])
    assert list(empty["tf_vote"].columns) == truncation.KEYS["tf_vote"]


def test_sparsity_finding_renders_each_model():
    spike = torch.zeros(1000)
    spike[:3] = 1.0
    t = sparsity_table({"M": {"a": spike, "b": torch.ones(1000)}}, tops=[0.01], n_random=8)  # b: flatter than chance
    text = truncation.sparsity_finding(t)
    assert text.startswith("M: the top 1% of the entries (10 of 1000)") and "1 of 2 lie more than two sd" in text
