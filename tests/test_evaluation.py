import math

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core.evaluation import METRIC_COLUMNS, mean_colour, mean_colour_mse, reconstruction_table



def test_mean_colour_mse_known_answers():
    const = torch.ones(2, 3, 8, 8) * torch.tensor([0.3, -0.7, 0.1]).view(1, 3, 1, 1)
    assert torch.equal(mean_colour_mse(const), torch.zeros(2))
    # half the pixels at −1, half at +1 in every channel: mean 0, squared error 1 everywhere
    x = torch.ones(1, 3, 4, 4)
    x[..., :2] = -1
    assert mean_colour_mse(x).tolist() == [1.0]
    assert torch.equal(mean_colour(x), torch.zeros_like(x))


def test_reconstruction_table_rows_columns_and_reproducibility():
    torch.manual_seed(0)
    models = {"hdae_u": HDAE(ModelConfig.preset("tiny", "hdae_u")), "dae": HDAE(ModelConfig.preset("tiny", "dae"))}
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    kw = dict(steps=(2, 3), batch_size=3, progress=False, seed=1)
    df = reconstruction_table(models, images, baseline=True, **kw)
    assert list(df.columns[:6]) == ["model", "T", "x_T", *METRIC_COLUMNS]
    keys = [tuple(r) for r in df[["model", "T", "x_T"]].itertuples(index=False)]
    want = [(m, T, k) for m in models for T in (2, 3) for k in ("encoded", "random")]
    assert keys == want + [("mean colour", 0, "none")]
    assert df[list(METRIC_COLUMNS)].map(math.isfinite).all().all() and (df["n"] == 4).all()
    base = df.iloc[-1]
    assert base["MSE"] == pytest.approx(float(mean_colour_mse(images).mean()), rel=1e-5)
    # the random x_T comes from the seed alone: same numbers again, without LPIPS this time
    again = reconstruction_table(models, images, lpips_net=None, x_T=("random",), **kw)
    rand = df[df["x_T"] == "random"].reset_index(drop=True)
    assert again["MSE"].tolist() == pytest.approx(rand["MSE"].tolist(), rel=1e-5)
    assert again["LPIPS"].isna().all()


def test_reconstruction_table_encoded_diffae_kind():
    """'encoded_diffae' scores DiffAE's inversion beside the default one; an unknown kind names the valid ones."""
    torch.manual_seed(0)
    models = {"dae": HDAE(ModelConfig.preset("tiny", "dae")).eval()}
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    df = reconstruction_table(models, images, steps=(5,), lpips_net=None, progress=False,
                              x_T=("encoded", "encoded_diffae"))
    mse = df.set_index("x_T")["MSE"]
    assert list(mse.index) == ["encoded", "encoded_diffae"] and mse["encoded"] < mse["encoded_diffae"]
    with pytest.raises(ValueError, match="encoded_diffae"):
        reconstruction_table(models, images, steps=(5,), lpips_net=None, progress=False, x_T=("inverted",))


def test_the_last_evaluation_of_training_logs():
    import pandas as pd

    from hdae_core.evaluation import last_evaluation

    runs = {"a": pd.DataFrame({"step": [1, 2, 3], "eval_mse_enc": [0.5, None, 0.2],
                               "eval_lpips_enc": [0.3, None, None]})}
    final = last_evaluation(runs, ["eval_mse_enc", "eval_lpips_enc", "eval_mse_rand"], key="variant")
    assert list(final.columns) == ["variant", "step", "eval_mse_enc", "eval_lpips_enc", "eval_mse_rand"]
    row = final.iloc[0]
    assert row["step"] == 3 and row["eval_mse_enc"] == 0.2
    assert math.isnan(row["eval_lpips_enc"]) and math.isnan(row["eval_mse_rand"])
