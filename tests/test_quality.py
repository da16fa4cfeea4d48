"""Sample-quality tools: the Fréchet oracle distance, FID wiring without downloads, bootstrap intervals, the pixel oracle."""
import math

import pytest
import torch
from torch import nn

from hdae_core import metrics, oracle


class _Features(nn.Module):
    """A fixed stand-in feature network: 4 pooled channel statistics of images in [0, 1]."""

    num_features = 4

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3)).mean(1, keepdim=True)], 1).double()


def test_fid_skips_without_weights_and_wires_torchmetrics():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=g) * 2 - 1
    fake = (torch.rand(64, 3, 8, 8, generator=g) * 2 - 1) * 0.5 + 0.2
    out = metrics.fid(real, fake)
    assert "fid" not in out and "--inception-weights" in out["skipped"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        metrics.fid(real, fake, weights_path="/nonexistent/pt_inception.pth")
    # the stand-in network through torchmetrics gives the Fréchet distance of its own features
    f = _Features()
    got = metrics.fid(real, fake, feature=f)["fid"]
    want = metrics.frechet_distance(f((real + 1) / 2), f((fake + 1) / 2))
    assert got > 0.01 and math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-6)
    assert metrics.fid(real, real, feature=f)["fid"] < 1e-6


def test_fid_with_weights_needs_torch_fidelity(tmp_path):
    pytest.importorskip("torchmetrics")
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity installed: the real weights path is exercised by the user")
    except ModuleNotFoundError:
        pass
    w = tmp_path / "pt_inception.pth"
    w.write_bytes(b"not weights")
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ModuleNotFoundError, match="pip install torch-fidelity"):
        metrics.fid(x, x, weights_path=w)


def test_frechet_oracle_distance():
    torch.manual_seed(0)
    orc = oracle.AttributeOracle(oracle.OracleConfig(image_size=16)).eval()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(200, 3, 16, 16, generator=g) * 2 - 1
    b = torch.rand(200, 3, 16, 16, generator=g) * 2 - 1
    shifted = (a * 0.2 + 0.7).clamp(-1, 1)  # brighter, less contrast: another distribution
    feats = orc.embed(a)
    assert feats.shape == (200, orc.head[0].out_features) and (feats >= -0.3).all()  # after SiLU
    same, other = metrics.frechet_oracle_distance(orc, a, b), metrics.frechet_oracle_distance(orc, a, shifted)
    assert other > 2 * same and same >= 0
    assert math.isclose(same, metrics.frechet_distance(orc.embed(a).double(), orc.embed(b).double()), rel_tol=1e-9)
    assert math.isclose(metrics.frechet_oracle_distance(orc, a, a), 0.0, abs_tol=1e-6)
    # images at another size are resized to the oracle's, as predict_proba does
    assert orc.embed(torch.zeros(2, 3, 32, 32)).shape == (2, orc.head[0].out_features)


def test_bootstrap_ci_covers_the_mean():
    g = torch.Generator().manual_seed(0)
    x = 2.0 + torch.randn(400, generator=g)
    m, lo, hi = metrics.bootstrap_ci(x, n_boot=1000)
    assert lo < m < hi and lo < 2.0 < hi
    assert math.isclose(hi - lo, 2 * 1.96 / 20, rel_tol=0.2)  # ≈ 2·1.96·σ/√n
    # per-column intervals and any statistic
    m2, lo2, hi2 = metrics.bootstrap_ci(torch.stack([x, -x], 1), statistic=lambda v: (v[:, 0] - v[:, 1]).mean())
    assert math.isclose(m2, 2 * float(x.double().mean()), rel_tol=1e-6) and lo2 < m2 < hi2
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(torch.ones(1))


def test_mask_iou_and_pixel_oracle_read():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2] = True
    b[0, 1:3] = True  # overlap one row of three
    a[1] = True
    b[1] = True
    assert torch.allclose(oracle.mask_iou(a, b), torch.tensor([1 / 3, 1.0, 1.0]))
    net = oracle.PixelOracle(oracle.PixelOracleConfig(image_size=16, channels=8)).eval()
    r = net.read(torch.zeros(2, 3, 16, 16))
    assert r["label_map"].shape == (2, 16, 16) and r["mask"].dtype == torch.bool
    assert ((r["shape"] >= -1) & (r["shape"] < 4)).all() and ((r["color"] >= -1) & (r["color"] < 6)).all()
    assert ((r["shape"] == -1) == ~r["mask"].flatten(1).any(1)).all()  # no object pixels: no class


def test_pixel_oracle_save_load(tmp_path):
    net = oracle.PixelOracle(oracle.PixelOracleConfig(image_size=16, channels=8)).eval()
    oracle.save_pixel_oracle(net, tmp_path / "po", {"pixel_accuracy": 0.5})
    net2 = oracle.load_pixel_oracle(tmp_path / "po")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(net.read(x)["label_map"], net2.read(x)["label_map"])
