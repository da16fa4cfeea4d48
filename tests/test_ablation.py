"""Known-answer tests for the Fig. 5 ablation tables: reading seed folders, steps to a threshold, finals."""
import numpy as np
import pandas as pd
import pytest

from hdae_core import ablation


def _write(folder, variant, seed, steps, mse_rand):
    d = folder / variant / f"seed{seed}"
    d.mkdir(parents=True)
    rows = []
    for s, m in zip(steps, mse_rand):
        rows.append({"step": s, "images": s * 4, "loss": 1.0, "eval_mse_enc": m / 10, "eval_mse_rand": m,
                     "eval_lpips_enc": m / 5, "eval_lpips_rand": m / 2})
        rows.append({"step": s + 1, "images": (s + 1) * 4, "loss": 1.0})  # a log row without evaluation
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)


@pytest.fixture
def runs(tmp_path):
    _write(tmp_path, "dae", 0, [100, 200, 300, 400], [0.5, 0.3, 0.2, 0.15])
    _write(tmp_path, "dae", 1, [100, 200, 300, 400], [0.5, 0.35, 0.25, 0.18])
    _write(tmp_path, "hdae_u", 0, [100, 200, 300], [0.4, 0.15, 0.1])
    _write(tmp_path, "hdae_u", 1, [100, 200, 300], [0.3, 0.2, 0.12])
    (tmp_path / "dae_u").mkdir()  # a variant folder without runs counts as missing
    return tmp_path, *ablation.read_runs(tmp_path, ["dae", "hdae_u", "dae_u", "hdae_e"])


def test_read_runs_keeps_evaluation_rows_per_seed(runs):
    _, df, missing = runs
    assert missing == ["dae_u", "hdae_e"]
    assert len(df) == 14 and set(df["seed"]) == {0, 1}
    assert df["eval_mse_rand"].notna().all()


def test_steps_to_threshold_and_speedup(runs):
    _, df, _ = runs
    hits = ablation.steps_to_threshold(df, "eval_mse_rand", 0.2).set_index(["variant", "seed"])["step"]
    assert hits[("dae", 0)] == 300 and hits[("dae", 1)] == 400
    assert np.isnan(ablation.steps_to_threshold(df, "eval_mse_rand", 0.16)["step"].iloc[1])
    assert hits[("hdae_u", 0)] == 200 and hits[("hdae_u", 1)] == 200
    # DAE's final value from its worst seed: 0.18, reached by dae seed 1 only at its end
    ref = ablation.reference_final(df, "eval_mse_rand", "dae")
    assert ref == pytest.approx(0.18)
    t = ablation.threshold_table(df, "eval_mse_rand", {"dae final": ref}).set_index("variant")
    assert t.loc["dae", "median_steps"] == 400 and t.loc["dae", "reached"] == 2
    assert t.loc["hdae_u", "median_steps"] == 250 and t.loc["hdae_u", "min_steps"] == 200
    assert t.loc["hdae_u", "speedup_vs_dae"] == pytest.approx(400 / 250)
    sentence = ablation.speedup_sentence(t.reset_index(), "dae final")
    assert "1.60× sooner" in sentence
    # a bar nobody reaches is reported as not reached, never as a number
    never = ablation.threshold_table(df, "eval_mse_rand", {"0.01": 0.01})
    assert never["reached"].sum() == 0 and never["median_steps"].isna().all()
    assert "not measurable" in ablation.speedup_sentence(never, "0.01")


def test_final_values_flattened_and_checks(runs):
    _, df, _ = runs
    fin = ablation.final_values(df).set_index("variant")
    assert fin.loc["dae", "eval_mse_rand"] == pytest.approx(0.165)
    assert fin.loc["dae", "eval_mse_rand_min"] == pytest.approx(0.15)
    flat = ablation.flattened(df, "eval_mse_rand", last=2, tol=0.5)
    assert flat[("hdae_u", 0)] and not ablation.flattened(df, "eval_mse_rand", last=3, tol=0.05)[("dae", 0)]
    baselines = pd.Series({("dae", 0): 0.16, ("dae", 1): 0.16, ("hdae_u", 0): 0.16, ("hdae_u", 1): 0.16})
    checks = {c["name"]: c for c in ablation.checks(df, baselines)}
    assert checks["dae/seed0: final eval_mse_rand < mean-colour baseline"]["passed"]
    assert not checks["dae/seed1: final eval_mse_rand < mean-colour baseline"]["passed"]
    assert all(c["passed"] for n, c in checks.items() if "falls" in n)
    assert ablation.checks(df.iloc[:0], baselines)[0]["passed"] is False


def test_mean_colour_baselines_use_each_runs_held_out_images(runs):
    folder, df, _ = runs
    b = ablation.mean_colour_baselines(folder, df, size=16)
    assert b[("dae", 0)] == b[("hdae_u", 0)] != b[("dae", 1)]
    assert 0.05 < b[("dae", 0)] < 0.3


def test_encoded_rise_and_its_finding(runs):
    folder, df, _ = runs
    df = df.copy()
    # hdae_u seed 0's encoded curve dips at step 200 and ends 50 % above that low while random x_T falls
    sel = (df["variant"] == "hdae_u") & (df["seed"] == 0)
    df.loc[sel, "eval_mse_enc"] = [0.02, 0.01, 0.015]
    rise = ablation.encoded_rise(df, folder)
    row = rise[(rise["variant"] == "hdae_u") & (rise["seed"] == 0)].iloc[0]
    assert (row["enc_first"], row["enc_min"], row["enc_min_step"], row["enc_last"]) == (0.02, 0.01, 200, 0.015)
    assert row["rand_first"] == 0.4 and row["rand_last"] == 0.1 and row["eval_steps"] is None  # no config.json
    f = ablation.encoded_finding(rise)
    assert f["checks"] is True and f["rising"] == 1 and f["rise"] == pytest.approx(0.5) and f["step"] == 200
    text = f["template"].format(**f)
    assert "in 1 of them it ends more than 10 % above its lowest value (a median 50% above it" in text
    # an encoded curve at or above random x_T's: the claim is not shown
    df.loc[sel, "eval_mse_enc"] = 1.0
    assert ablation.encoded_finding(ablation.encoded_rise(df))["checks"] is False


def test_ablation_curves_put_random_x_T_first_and_the_legend_beside(runs, tmp_path):
    _, df, _ = runs
    fig = ablation.plot_ablation_curves(df, path=tmp_path / "c.png", baselines={"eval_mse_rand": 0.3})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("Random x_T") and titles[2].startswith("Encoded x_T")
    assert [ax.get_xlabel() for ax in fig.axes] == ["training steps"] * 4
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["dae (2)", "hdae_u (2)", "mean-colour baseline"]
    assert fig.axes[0].get_yscale() == "log"
    linear = ablation.plot_ablation_curves(df, logy=False)
    assert linear.axes[0].get_yscale() == "linear" and linear.axes[0].get_ylim()[1] < 0.5  # the early fall cut
