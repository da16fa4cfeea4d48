"""Latent DDIM (DiffAE §3.3): network shapes, save/load, and a toy two-cluster fit."""
import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core import evaluation, latent
from hdae_core.latent import LatentConfig, LatentDDIM, sample_codes, sample_images, train_latent
from hdae_core.stats import LatentStats



def test_forward_shape_and_schedule_free():
    cfg = LatentConfig(code_levels=3, code_dim=4, width=32, depth=10)
    net = LatentDDIM(cfg)
    z = torch.randn(5, 12)
    eps = net(z, torch.randint(0, cfg.T, (5,)))
    assert eps.shape == (5, 12)
    # a skip layer per hidden layer: depth − 1 modulated layers plus the output projection
    assert len(net.layers) == cfg.depth - 1
    with pytest.raises(ValueError, match=r"\[B, 12\]"):
        net(torch.randn(5, 3, 4), torch.zeros(5, dtype=torch.long))


def _two_clusters(n, g):
    center = torch.randn(8, generator=g)
    center = 3 * center / center.norm()
    which = torch.randint(0, 2, (n,), generator=g)
    x = torch.where(which[:, None] == 1, center, -center) + 0.5 * torch.randn(n, 8, generator=g) + 1.0
    return x, torch.stack([-center + 1.0, center + 1.0])


@pytest.mark.slow
def test_two_cluster_fit_covers_both_modes():
    g = torch.Generator().manual_seed(0)
    x, centers = _two_clusters(2000, g)
    codes = x.reshape(-1, 2, 4)  # L = 2 levels of D = 4
    stats = LatentStats.from_codes(codes)
    cfg = LatentConfig(code_levels=2, code_dim=4, width=64, depth=4)
    # EMA smooths the last iterates' noise, which otherwise shows up as over-dispersed samples
    model = train_latent(codes, stats, cfg, steps=400, batch_size=256, lr=3e-3, seed=0, progress=False,
                         ema_decay=0.99)
    assert not model.training
    s = sample_codes(model, 800, stats, steps=50, generator=torch.Generator().manual_seed(1))
    assert s.shape == (800, 2, 4)
    s = s.reshape(800, 8)
    d = torch.cdist(s, centers)
    frac = (d.argmin(1) == 1).float().mean()
    assert 0.2 < frac < 0.8, f"one cluster dominates: {frac:.2f}"
    data_std = x.std(0)
    # loose: a few hundred steps of a tiny MLP, but a collapsed or exploded sampler fails these
    assert ((s.mean(0) - x.mean(0)).abs() / data_std).mean() < 0.35
    ratio = (s.std(0) / data_std).mean()
    assert 0.6 < ratio < 1.8, f"sample std / data std = {ratio:.2f}"
    # most samples land near a cluster (data: mean distance to its centre ≈ 0.5·√8 ≈ 1.4)
    assert d.min(1).values.median() < 2.5


def test_sampling_is_reproducible_and_save_load(tmp_path):
    cfg = LatentConfig(code_levels=2, code_dim=3, width=16, depth=3)
    codes = torch.randn(50, 2, 3) * 2 + 1
    stats = LatentStats.from_codes(codes)
    model = train_latent(codes, stats, cfg, steps=3, batch_size=16, seed=0, progress=False, ema_decay=0.9)
    a = sample_codes(model, 4, stats, steps=10, generator=torch.Generator().manual_seed(3))
    b = sample_codes(model, 4, stats, steps=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    latent.save(model, tmp_path / "lat", stats=stats)
    model2 = latent.load(tmp_path / "lat")
    stats2 = LatentStats.load(tmp_path / "lat")
    assert model2.config == cfg
    c = sample_codes(model2, 4, stats2, steps=10, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, c)


def test_sample_images_tiny_model():
    model = HDAE(ModelConfig.preset("tiny")).eval()
    L, D = model.num_levels, model.code_dim
    cfg = LatentConfig(code_levels=L, code_dim=D, width=16, depth=3)
    stats = LatentStats(torch.zeros(L, D), torch.ones(L, D))
    lat = LatentDDIM(cfg).eval()
    images, codes = sample_images(model, lat, 2, stats, latent_steps=5, image_steps=5,
                                  generator=torch.Generator().manual_seed(0), return_codes=True)
    assert images.shape == (2, 3, 16, 16) and codes.shape == (2, L, D)
    assert torch.isfinite(images).all()


def _mixture(n, width, g):
    """A two-component Gaussian mixture in ``width`` dims: means ±m (one direction), per-dimension scales 0.3–2."""
    m = torch.randn(width, generator=g)
    m = 1.5 * m / m.std()
    scale = 0.3 + 1.7 * torch.rand(width, generator=g)
    which = torch.randint(0, 2, (n,), generator=g)
    x = torch.where(which[:, None] == 1, m, -m) + scale * torch.randn(n, width, generator=g) + 0.5
    return x, m


@pytest.mark.slow
def test_mixture_at_code_width_reproduces_its_moments():
    # the real width: HDAE(U) at 32 px holds L = 4 codes of D = 128; an ε latent over-disperses here by ~100×
    L, D = 4, 128
    g = torch.Generator().manual_seed(0)
    x, m = _mixture(3000, L * D, g)
    codes = x.reshape(-1, L, D)
    stats = LatentStats.from_codes(codes)
    cfg = LatentConfig(code_levels=L, code_dim=D, width=256, depth=4)
    model = train_latent(codes, stats, cfg, steps=1200, batch_size=128, lr=3e-4, seed=0, progress=False)
    s = sample_codes(model, 1000, stats, steps=50, generator=torch.Generator().manual_seed(1)).reshape(1000, L * D)
    z = stats.standardize(s.reshape(-1, L, D)).flatten(1)
    per_dim_std = z.std(0)
    assert 0.8 <= per_dim_std.median() <= 1.25, f"median per-dimension std of standardised samples {per_dim_std.median():.3f}"
    assert (per_dim_std > 0.6).float().mean() > 0.95 and (per_dim_std < 1.6).float().mean() > 0.95
    # the means: within a few standard errors of the data's, per dimension
    assert (z.mean(0).abs() < 0.2).float().mean() > 0.95
    # both components, in about their proportions: the projection on m is bimodal at ±‖m‖²
    proj = (s - x.mean(0)) @ m / m.pow(2).sum()
    frac = (proj > 0).float().mean()
    assert 0.4 < frac < 0.6, f"component weight {frac:.2f}, expected 0.5"
    assert (proj.abs() - 1).abs().median() < 0.2, "samples fall between the components"
    # the correlation the mixture puts along m is kept: variance along m̂ as in the data
    mh = m / m.norm()
    ratio = ((s - s.mean(0)) @ mh).var() / ((x - x.mean(0)) @ mh).var()
    assert 0.8 < ratio < 1.25, f"variance along the mixture axis: sample / data = {ratio:.2f}"


def test_eps_latent_config_loads_as_eps():
    d = LatentConfig(code_levels=1, code_dim=4).to_dict()
    assert d["prediction"] == "v"
    d.pop("prediction")  # a config written before the field existed
    assert LatentConfig.from_dict(d).prediction == "eps"
    with pytest.raises(ValueError, match="prediction"):
        LatentConfig(prediction="x0")


class _ConstantAE(torch.nn.Module):
    """A stand-in autoencoder whose code is an image's mean and whose decode paints that mean everywhere."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"in_channels": 3, "image_size": 4})()
        self.num_levels, self.code_dim = 1, 1

    def encode(self, x):
        return x.mean((1, 2, 3))[:, None, None]

    def decode(self, x_T, codes, steps, progress=False):
        return codes.reshape(-1, 1, 1, 1).expand_as(x_T).clone()


class _BrightOracle:
    """Reads one attribute, 'bright': the image's mean is above 0."""
    attribute_names = ["bright"]

    def predict_proba(self, x):
        return (x.mean((1, 2, 3)) > 0).float()[:, None]

    def embed(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)


def test_sample_quality_reports_the_reconstructions_frequencies_beside_the_datas():
    # reconstructions of real[:n] are exact here, so their frequency is the one of real[:n]; data's is all of real
    signs = torch.tensor([1, 1, -1, -1, 1, 1, 1, -1, 1, -1, -1, -1, 1, -1, 1, 1], dtype=torch.float32)
    real = (0.5 * signs[:, None, None, None] + 0.05 * torch.randn(16, 3, 4, 4)).clamp(-1, 1)
    lat = LatentDDIM(LatentConfig(code_levels=1, code_dim=1, width=8, depth=2)).eval()
    stats = LatentStats(torch.zeros(1, 1), 0.5 * torch.ones(1, 1))
    q = evaluation.sample_quality(_ConstantAE(), lat, stats, _BrightOracle(), real, n=8, latent_steps=3, image_steps=1,
                              batch_size=3)
    assert q["frequency_reconstructions"]["bright"] == pytest.approx(5 / 8)  # signs[:8]
    assert q["frequency_data"]["bright"] == pytest.approx(9 / 16)  # all of signs
    assert 0.0 <= q["frequency_samples"]["bright"] <= 1.0 and q["samples"].shape == (8, 3, 4, 4)
    assert q["frechet_oracle"]["random_xT_reconstruction"] >= 0 and "skipped" in q["fid"]
