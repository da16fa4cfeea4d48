"""Attribute oracle and the oracle-measured disentanglement score: known answers and a fast training check."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from hdae_core import HDAE, ModelConfig
from hdae_core import oracle as oracle_mod
from hdae_core.data import Shapes
from hdae_core.oracle import AttributeOracle, OracleConfig, disentanglement_scores, edit_sweep, train_oracle
from hdae_core.stats import LatentStats

NAMES = ["red", "large", "striped", "rotated"]



class FixedOracle(nn.Module):
    """Returns p_before for all-zero images and p_after for anything else (as logits)."""

    def __init__(self, p_before, p_after):
        super().__init__()
        self.p0, self.p1 = torch.tensor(p_before, dtype=torch.float64), torch.tensor(p_after, dtype=torch.float64)

    def forward(self, x):
        after = x.flatten(1).abs().sum(1) > 0
        p = torch.where(after[:, None], self.p1, self.p0)
        return torch.logit(p)


def test_disentanglement_scores_known_answers():
    # two images; Δp per image: red +0.6/+0.4, large +0.2/−0.4, striped −0.1/+0.1, rotated 0/−0.2
    p0 = [[0.1, 0.5, 0.5, 0.3], [0.2, 0.6, 0.4, 0.5]]
    p1 = [[0.7, 0.7, 0.4, 0.3], [0.6, 0.2, 0.5, 0.3]]
    fake = FixedOracle(p0, p1)
    # per-image fixed probabilities: feed image i of each batch its own row
    x0 = torch.zeros(2, 3, 4, 4)
    x1 = torch.ones(2, 3, 4, 4)
    pairs = [("red", "large", 0.8)]
    s = disentanglement_scores(fake, x0, x1, "red", NAMES, correlated=pairs)
    assert s["success"] == pytest.approx(0.5)
    assert s["leakage"] == pytest.approx((0.2 + 0.4 + 0.1 + 0.1 + 0.0 + 0.2) / 6)
    assert s["partner_leakage"] == pytest.approx((0.2 + 0.4) / 2)
    assert s["partner"] == "large"
    assert s["leakage_excl_partner"] == pytest.approx((0.1 + 0.1 + 0.0 + 0.2) / 4)
    assert s["delta"]["large"] == pytest.approx(-0.1)
    per = s["per_image"]  # the means above, image by image (what the bootstrap intervals resample)
    assert per["success"].tolist() == pytest.approx([0.6, 0.4])
    assert per["leakage"].tolist() == pytest.approx([(0.2 + 0.1 + 0.0) / 3, (0.4 + 0.1 + 0.2) / 3])
    assert per["partner_leakage"].tolist() == pytest.approx([0.2, 0.4])
    # an edit away from the attribute: success counts the decrease
    s = disentanglement_scores(fake, x1, x0, "red", NAMES, correlated=pairs, sign=-1)
    assert s["success"] == pytest.approx(0.5)
    # partner lookup works from either side of the pair; no pair gives NaN
    assert disentanglement_scores(fake, x0, x1, "large", NAMES, correlated=pairs)["partner"] == "red"
    assert math.isnan(disentanglement_scores(fake, x0, x1, "striped", NAMES, correlated=pairs)["partner_leakage"])
    with pytest.raises(KeyError, match="unknown target"):
        disentanglement_scores(fake, x0, x1, "blond", NAMES)


def test_oracle_any_size_and_save_load(tmp_path):
    o = AttributeOracle(OracleConfig(image_size=32, channels=8)).eval()
    for size in (16, 32, 64):
        x = torch.rand(2, 3, size, size) * 2 - 1
        assert o(x).shape == (2, 13)
        p = o.predict_proba(x)
        assert p.shape == (2, 13) and ((p >= 0) & (p <= 1)).all()
    oracle_mod.save(o, tmp_path / "o", report={"mean_accuracy": 0.5})
    o2 = oracle_mod.load(tmp_path / "o")
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.allclose(o(x), o2(x))
    assert o2.attribute_names == Shapes.attribute_names
    assert oracle_mod.read_report(tmp_path / "o")["mean_accuracy"] == 0.5


@pytest.mark.slow
def test_oracle_beats_majority_baseline():
    torch.manual_seed(0)
    o, rep = train_oracle(size=16, n_train=20_000, steps=200, batch_size=32, seed=0, progress=False,
                          n_test=600, lr=3e-3, channels=16)
    acc, base = rep["accuracy"], rep["majority_baseline"]
    assert set(acc) == set(Shapes.attribute_names)
    # chance by majority class is ≈0.5 for the switches and ≈0.75 for is_<shape>
    assert rep["mean_majority_baseline"] < 0.62
    assert rep["mean_accuracy"] > 0.75, rep
    assert rep["mean_accuracy"] > rep["mean_majority_baseline"] + 0.15
    # the easy, image-wide attributes are learned outright, each well above its own baseline
    for name in ("red", "bright_background", "large", "left_side", "top_side", "lit_from_left"):
        assert acc[name] > base[name] + 0.3, (name, acc[name], base[name])


def test_edit_sweep_rows_with_a_stub_manipulate():
    model = HDAE(ModelConfig.preset("tiny")).eval()
    L, D = model.num_levels, model.code_dim
    stats = LatentStats(torch.zeros(L, D), torch.ones(L, D))
    direction = torch.randn(L * D)
    calls = []

    def manipulate(codes, direction, alpha, stats, k=None, levels=None):
        calls.append((k, alpha))
        return codes + alpha * direction.reshape(1, L, D) / direction.norm()

    o = AttributeOracle(OracleConfig(image_size=16, channels=8)).eval()
    images = Shapes(16).batch([0, 1])["image"]
    df = edit_sweep(model, o, images, direction, stats, "red", ks=[None, 8], alphas=[-1.0, 0.0, 2.0], steps=3,
                    manipulate_fn=manipulate, correlated=[("red", "large", 0.8)], progress=False)
    assert isinstance(df, pd.DataFrame) and len(df) == 6
    assert {"k", "alpha", "success", "leakage", "partner_leakage"} <= set(df.columns)
    assert calls == [(None, -1.0), (None, 0.0), (None, 2.0), (8, -1.0), (8, 0.0), (8, 2.0)]
    # α = 0 changes nothing
    zero = df[df.alpha == 0.0]
    assert (zero[["success", "leakage", "partner_leakage"]].abs() < 1e-6).all().all()
    for score in ("success", "leakage", "partner_leakage"):  # each mean inside its bootstrap interval
        assert (df[f"{score}_low"] <= df[score] + 1e-9).all() and (df[score] <= df[f"{score}_high"] + 1e-9).all()


def test_per_image_scores_known_answers():
    p0 = torch.tensor([[0.1, 0.5, 0.5, 0.3], [0.2, 0.6, 0.4, 0.5]])
    p1 = torch.tensor([[0.7, 0.7, 0.4, 0.3], [0.6, 0.2, 0.5, 0.3]])
    s = oracle_mod.per_image_scores(p0, p1, "red", NAMES, correlated=[("large", "red", 0.8)])
    assert s["success"].tolist() == pytest.approx([0.6, 0.4])
    assert s["leakage"].tolist() == pytest.approx([0.1, 0.7 / 3])
    assert s["partner_leakage"].tolist() == pytest.approx([0.2, 0.4])
    assert oracle_mod.per_image_scores(p0, p1, "red", NAMES, sign=-1)["success"].tolist() == pytest.approx([-0.6, -0.4])
    assert torch.isnan(oracle_mod.per_image_scores(p0, p1, "red", NAMES)["partner_leakage"]).all()
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        oracle_mod.per_image_scores(p0[:, :3], p1[:, :3], "red", NAMES)
