"""Known-answer tests for the tier tables of level shares."""
import pandas as pd
import pytest

from hdae_core import hierarchy


def _shares():
    return pd.DataFrame({"z1": [0.6, 0.1, 0.25], "z2": [0.2, 0.1, 0.25], "z3": [0.1, 0.3, 0.25], "z4": [0.1, 0.5, 0.25]},
                        index=["red", "is_star", "lit"])


def test_half_shares_and_tiers():
    h = hierarchy.half_shares(_shares())
    assert h.loc["red", "fine_half"] == pytest.approx(0.8) and h.loc["is_star", "coarse_half"] == pytest.approx(0.8)
    t = hierarchy.tier_table(_shares(), structure=["is_star"], appearance=["red", "lit"])
    assert t.loc["red", "mostly_on"] == "fine" and t.loc["red", "as_predicted"]
    assert t.loc["is_star", "mostly_on"] == "coarse" and t.loc["is_star", "as_predicted"]
    assert t.loc["lit", "mostly_on"] == "even" and not t.loc["lit", "as_predicted"]  # a tie is neither half
    s = hierarchy.tier_summary(t, {"structure": ["is_star"], "appearance": ["red", "lit", "missing"]})
    assert s["structure"] == {"n": 1, "as_predicted": 1.0, "attributes": ["is_star"]}
    assert s["appearance"]["n"] == 2 and s["appearance"]["as_predicted"] == 0.5


def test_odd_levels_leave_the_middle_out_and_one_level_is_refused():
    three = pd.DataFrame({"z1": [0.5], "z2": [0.3], "z3": [0.2]}, index=["a"])
    h = hierarchy.half_shares(three)
    assert h.loc["a", "fine_half"] == pytest.approx(0.5) and h.loc["a", "coarse_half"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="two levels"):
        hierarchy.half_shares(pd.DataFrame({"z1": [1.0]}, index=["a"]))
