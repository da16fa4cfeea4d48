"""Latent DDIM over standardised flattened codes for unconditional sampling (DiffAE §3.3, HDAE §4)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import cache, diffusion
from .checkpoint import load_module_weights, read_module_meta, save_module
from .config import BETA_SCHEDULES as IMAGE_BETA_SCHEDULES
from .config import PREDICTIONS, JsonConfig
from .nn import timestep_embedding
from .optim import EMA
from .stats import LatentStats

FORMAT = "hdae-latent-ddim"
CONFIG_FILE = "latent_config.json"
WEIGHTS_FILE = "latent.safetensors"
# the image model's schedules, and DiffAE's constant β for latents
BETA_SCHEDULES = (*IMAGE_BETA_SCHEDULES, "const0.008")


@dataclass(frozen=True)
class LatentConfig(JsonConfig):
    """The latent ε-network: an MLP with input skips over N = L·D standardised code features (DiffAE's MLPSkipNet)."""

    code_levels: int = 1  # L of the codes tensor
    code_dim: int = 512  # D of the codes tensor
    width: int = 1024  # hidden width (DiffAE uses 2048 for 512-d codes)
    depth: int = 10  # linear layers, the last one projecting back to N (DiffAE: 10 at 128² and 256²)
    time_embed_channels: int = 64  # sinusoidal features before the time MLP (DiffAE: 64)
    dropout: float = 0.0
    T: int = 1000
    beta_schedule: str = "linear"  # "linear" as the image model, or DiffAE's latent "const0.008"
    # v, not ε: latents are not clipped, and an ε network turns an error δ at t ≈ T into δ·√((1 − ᾱ_T)/ᾱ_T)
    # (≈ 150 for linear β) in every sampled coordinate; v keeps x̂0's error the size of the network's
    prediction: str = "v"

    def __post_init__(self):
        if self.code_levels < 1 or self.code_dim < 1:
            raise ValueError(f"LatentConfig: code shape [L, D] must be positive, got [{self.code_levels}, {self.code_dim}]")
        if self.depth < 2:
            raise ValueError(f"LatentConfig: depth must be at least 2 (hidden layers + the output layer), got {self.depth}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"LatentConfig: unknown beta_schedule {self.beta_schedule!r}; expected one of {BETA_SCHEDULES}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"LatentConfig: unknown prediction {self.prediction!r}; expected one of {PREDICTIONS}")

    @property
    def num_features(self) -> int:
        """N = L·D, the length of a flattened code."""
        return self.code_levels * self.code_dim

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatentConfig":
        # models saved before the field existed predict ε
        return super().from_dict({"prediction": "eps", **d} if isinstance(d, dict) else d)


def latent_alphas_cumprod(cfg: LatentConfig) -> torch.Tensor:
    """ᾱ_t of the latent schedule (float64): linear β as the image model, or DiffAE's constant β = 0.008."""
    if cfg.beta_schedule == "linear":
        betas = diffusion.linear_betas(cfg.T)
    else:
        betas = torch.full((cfg.T,), 0.008, dtype=torch.float64)
    return diffusion.alphas_cumprod(betas)


class _SkipLayer(nn.Module):
    """Linear → LayerNorm modulated by the time embedding (·(1 + s) + b) → SiLU → dropout."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_ch, out_ch)
        self.norm = nn.LayerNorm(out_ch, elementwise_affine=False)
        self.emb = nn.Linear(emb_ch, 2 * out_ch)
        # zero modulation at init, so every layer starts as a plain LN-MLP layer
        nn.init.zeros_(self.emb.weight)
        nn.init.zeros_(self.emb.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s, b = self.emb(emb).chunk(2, dim=-1)
        return self.dropout(F.silu(self.norm(self.linear(h)) * (1 + s) + b))


class LatentDDIM(nn.Module):
    """ε_ω(z_t, t) or v_ω(z_t, t) (``config.prediction``) over flattened standardised codes [B, N] (DiffAE's latent
    DDIM, MLP with skips); ``eps_fn`` gives the ε function the samplers take."""

    def __init__(self, config: LatentConfig):
        super().__init__()
        self.config = config
        n, w, e = config.num_features, config.width, config.width
        self.time_embed = nn.Sequential(nn.Linear(config.time_embed_channels, e), nn.SiLU(), nn.Linear(e, e))
        # every hidden layer after the first sees [h, z_t]: the input skip keeps z_t within reach in a deep MLP
        self.layers = nn.ModuleList(
            [_SkipLayer(n, w, e, config.dropout)]
            + [_SkipLayer(w + n, w, e, config.dropout) for _ in range(config.depth - 2)]
        )
        self.out = nn.Linear(w + n, n)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The ε or v prediction [B, N] for z_t [B, N] at integer timesteps t [B] of the full schedule."""
        n = self.config.num_features
        if z_t.dim() != 2 or z_t.shape[1] != n:
            raise ValueError(f"z_t: expected flattened standardised codes [B, {n}], got {list(z_t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.config.time_embed_channels).to(z_t.dtype))
        h = self.layers[0](z_t, emb)
        for layer in self.layers[1:]:
            h = layer(torch.cat([h, z_t], dim=-1), emb)
        return self.out(torch.cat([h, z_t], dim=-1))


def eps_fn(latent_model: LatentDDIM):
    """ε(z_t, t) of a latent model, converting its v prediction with the latent schedule when it predicts v."""
    if latent_model.config.prediction == "eps":
        return latent_model
    ac = latent_alphas_cumprod(latent_model.config)
    return lambda z_t, t: diffusion.v_to_eps(latent_model(z_t, t), z_t, t, ac)


def train_latent(codes: torch.Tensor, stats: LatentStats | None = None, cfg: LatentConfig | None = None,
                 steps: int = 2000, batch_size: int = 256, lr: float = 1e-4, seed: int = 0,
                 progress: bool = True, ema_decay: float | None = None) -> LatentDDIM:
    """Fit ε_ω on standardised flattened codes with the simple ε loss, uniform t (DiffAE §3.3, Eq. 10)."""
    if codes.dim() != 3:
        raise ValueError(f"codes: expected [N, L, D], got {list(codes.shape)}")
    n_codes, L, D = codes.shape
    stats = stats if stats is not None else LatentStats.from_codes(codes)
    if cfg is None:
        cfg = LatentConfig(code_levels=L, code_dim=D)
    if (cfg.code_levels, cfg.code_dim) != (L, D):
        raise ValueError(f"cfg is for codes [L, D] = [{cfg.code_levels}, {cfg.code_dim}], got codes {list(codes.shape)}")
    device = codes.device
    z0_all = stats.to(device).standardize(codes.detach().float()).reshape(n_codes, L * D)
    ac = latent_alphas_cumprod(cfg)

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout and the default init follow the seed too
    model = LatentDDIM(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ema = None
    if ema_decay is not None:
        ema = EMA(model, ema_decay, warmup=True)

    it = range(steps)
    if progress:
        it = tqdm(it, desc="latent DDIM", leave=False)
    for _ in it:
        idx = torch.randint(0, n_codes, (min(batch_size, n_codes),), generator=g)
        z0 = z0_all[idx.to(device)]
        t = torch.randint(0, cfg.T, (z0.shape[0],), generator=g).to(device)
        noise = diffusion.randn(z0.shape, g, device)
        loss = diffusion.loss(model, z0, t, noise, ac, cfg.prediction).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        if progress and hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    out = ema.model if ema is not None else model
    return out.eval().requires_grad_(False)


@torch.no_grad()
def sample_codes(latent_model: LatentDDIM, n: int, stats: LatentStats, steps: int = 50,
                 generator: torch.Generator | None = None, eta: float = 0.0, progress: bool = False) -> torch.Tensor:
    """Codes [n, L, D] by latent DDIM from z_T ~ N(0, I), then de-standardised (DiffAE §3.3)."""
    cfg = latent_model.config
    p = next(latent_model.parameters())
    z_T = diffusion.randn((n, cfg.num_features), generator, p.device, p.dtype)
    ts = diffusion.spaced_timesteps(cfg.T, steps)
    # latents are standardised, not bounded: x̂0 must not be clipped to [-1, 1]
    z0 = diffusion.ddim_sample(eps_fn(latent_model), z_T, latent_alphas_cumprod(cfg), ts, eta=eta,
                               generator=generator, clip_x0=False, progress=progress)
    return stats.to(z0.device).destandardize(z0.reshape(n, cfg.code_levels, cfg.code_dim))


@torch.no_grad()
def sample_images(model, latent_model: LatentDDIM, n: int, stats: LatentStats, latent_steps: int = 50,
                  image_steps: int = 50, generator: torch.Generator | None = None, progress: bool = False,
                  return_codes: bool = False):
    """Unconditional images: codes ~ latent DDIM, then image DDIM from random x_T (DiffAE §3.3)."""
    cfg = latent_model.config
    if (cfg.code_levels, cfg.code_dim) != (model.num_levels, model.code_dim):
        raise ValueError(
            f"latent model samples codes [{cfg.code_levels}, {cfg.code_dim}] but the autoencoder takes "
            f"[{model.num_levels}, {model.code_dim}]"
        )
    codes = sample_codes(latent_model, n, stats, latent_steps, generator=generator, progress=progress)
    c = model.config
    p = next(model.parameters())
    x_T = diffusion.randn((n, c.in_channels, c.image_size, c.image_size), generator, p.device, p.dtype)
    images = model.decode(x_T, codes.to(p), image_steps, progress=progress)
    return (images, codes) if return_codes else images


def save(latent_model: LatentDDIM, path: str | Path, stats: LatentStats | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``path/latent_config.json`` + ``latent.safetensors`` (+ the code statistics when given)."""
    meta = {"format": FORMAT, "config": latent_model.config.to_dict(), "extra": extra or {}}
    path = save_module(latent_model, path, CONFIG_FILE, WEIGHTS_FILE, meta)
    if stats is not None:
        stats.save(path)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> LatentDDIM:
    """Rebuild a latent DDIM written by ``save`` (its statistics: ``LatentStats.load(path)``)."""
    meta = read_module_meta(path, CONFIG_FILE, FORMAT, "hdae_core.latent")
    return load_module_weights(LatentDDIM(LatentConfig.from_dict(meta["config"])), path, WEIGHTS_FILE, map_location)


def nearest_codes(codes: torch.Tensor, pool: torch.Tensor, stats: LatentStats) -> torch.Tensor:
    """Index of each code's nearest neighbour in ``pool`` by standardised distance (are samples copies?)."""
    return torch.cdist(stats.standardize(codes).flatten(1), stats.standardize(pool).flatten(1)).argmin(1)


def median_code_std(sampled: torch.Tensor, stats: LatentStats) -> float:
    """Median over dimensions of the per-dimension std of sampled codes, standardised (1 when they match the data)."""
    return float(stats.standardize(sampled).flatten(1).std(0).median())


# ---------------------------------------------------------------- shipped or cached, else fitted


SHIPPED_DIR = "latent_ddim"  # beside a shipped checkpoint: the latent DDIM fitted on its codes, with identity.json


def load_or_fit(identity: dict[str, Any], fit, shipped: str | Path | None, cache_dir: str | Path,
                refit: bool = False) -> tuple[LatentDDIM, LatentStats, str]:
    """(latent DDIM, its statistics, where): the one shipped in ``shipped`` (read only) when its recorded identity
    is ``identity``, else the cache entry ``cache_dir`` when it matches, else ``fit()`` → (model, stats) cached
    there. ``identity`` names the autoencoder's weights, the data, the config and the training parameters."""
    (lm, stats), where = cache.shipped_or_fetch(shipped, cache_dir, identity, fit,
                                                lambda v, folder: save(v[0], folder, v[1]),
                                                lambda folder: (load(folder), LatentStats.load(folder)),
                                                "latent DDIM", refit=refit)
    return lm, stats, where


def study_identity(model, src, n_encode: int, n_ref: int, cfg: LatentConfig, **train: Any) -> dict[str, Any]:
    """What a study's latent DDIM depends on (a shipped or cached one is used only when all of it matches): the
    autoencoder's weights, the data split and size, the held-out reference size, the config, the training."""
    return {"kind": "latent_ddim", "model": cache.model_identity(model),
            "data": cache.data_identity(src, "train", n_encode), "n_ref": n_ref, "config": cfg.to_dict(),
            **{k: train[k] for k in sorted(train)}}


def for_study(model, src, n_encode: int, n_ref: int, cfg: LatentConfig, shipped: str | Path | None,
              cache_root: str | Path, key: str, refit: bool = False, **train: Any) -> dict[str, Any]:
    """The latent DDIM of a study (09): the first ``n_encode`` training codes (cached per model identity), the
    last ``n_ref`` of them held out as the reference, and a latent DDIM fitted on the rest with ``train``
    (``train_latent``'s steps, batch_size, lr, seed, ema_decay) — shipped, cached or fitted (``load_or_fit``).
    Returns {fit, ref, stats, latent, identity, where}."""
    from .model import encode_split

    cache_root = Path(cache_root)
    codes, where_codes = encode_split(model, src, "train", n_encode, cache_dir=cache_root / f"codes_{key}", refit=refit)
    fit, ref = codes[: n_encode - n_ref], codes[n_encode - n_ref:]
    identity = study_identity(model, src, n_encode, n_ref, cfg, **train)

    def fit_latent():
        stats = LatentStats.from_codes(fit)
        return train_latent(fit, stats, cfg, progress=False, **train), stats

    lm, stats, where = load_or_fit(identity, fit_latent, shipped, cache_root / f"latent_{key}", refit=refit)
    return {"fit": fit, "ref": ref, "stats": stats, "latent": lm, "identity": identity,
            "where": f"{where_codes}; {where}"}
