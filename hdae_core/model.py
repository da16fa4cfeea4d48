"""HDAE = semantic encoder + conditional UNet decoder, routed per variant."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import cache, diffusion
from .config import VARIANT_TABLE, DiffusionConfig, ModelConfig
from .decoder import Decoder
from .encoders import HalfUNetEncoder, UNetEncoder
from .nn import set_norm_groups


@contextmanager
def inference(model: torch.nn.Module):
    """eval() + no_grad for the duration, restoring the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def build_encoder(cfg: ModelConfig) -> nn.Module:
    """The variant's encoder: DiffAE's half-UNet for dae/dae_wide/hdae_e, a U-Net for dae_u/hdae_u."""
    variant = VARIANT_TABLE[cfg.variant]
    hierarchical = variant.hierarchical
    common = dict(
        image_size=cfg.image_size, in_channels=cfg.in_channels, model_channels=cfg.model_channels,
        num_res_blocks=cfg.enc_num_res_blocks or cfg.num_res_blocks,
        attention_resolutions=cfg.attention_resolutions, num_heads=cfg.num_heads,
        dropout=cfg.dropout, out_dim=cfg.code_width, hierarchical=hierarchical,
    )
    if variant.encoder == "unet":
        return UNetEncoder(channel_mult=cfg.channel_mult, **common)
    # a hierarchical half-UNet has one level per decoder resolution, so code l is pooled at decoder level l's
    # resolution; a single-code one follows DiffAE's encoder multipliers (one level more than the decoder's)
    return HalfUNetEncoder(channel_mult=cfg.channel_mult if hierarchical else cfg.enc_channel_mult, **common)


class HDAE(nn.Module):
    """A (hierarchical) diffusion autoencoder: ``encode`` → codes [B, L, D], ``decoder(x_t, t, codes)`` → ε."""

    def __init__(self, config: ModelConfig, diffusion_config: DiffusionConfig | None = None):
        super().__init__()
        self.config = config
        self.diffusion_config = diffusion_config or DiffusionConfig()
        self.encoder = build_encoder(config)
        self.decoder = Decoder(
            image_size=config.image_size, in_channels=config.in_channels,
            model_channels=config.model_channels, channel_mult=config.channel_mult,
            num_res_blocks=config.num_res_blocks, attention_resolutions=config.attention_resolutions,
            num_heads=config.num_heads, dropout=config.dropout, embed_channels=config.embed_channels,
            cond_channels=config.code_width,
        )
        set_norm_groups(self, config.norm_groups)
        self.register_buffer(
            "alphas_cumprod", diffusion.alphas_cumprod(diffusion.linear_betas(self.diffusion_config.T)),
            persistent=False,
        )

    @property
    def num_levels(self) -> int:
        """L of the codes tensor (decoder levels for hdae_*, 1 for dae*)."""
        return self.config.code_levels

    @property
    def code_dim(self) -> int:
        """D of the codes tensor (L·code_dim for dae_wide)."""
        return self.config.code_width

    def _dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def check_images(self, x: torch.Tensor, name: str = "x0", pixel_range: bool = True) -> None:
        """Raise a clear error unless x is a finite float [B, C, H, W] at the model's resolution and dtype
        (and, with ``pixel_range``, plausibly in [-1, 1]: [0, 255] images are refused, not rescaled)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{name}: expected images of shape [B, {', '.join(map(str, want))}], got {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor in [-1, 1], got {x.dtype}"
                            + ("; for uint8 images pass x.float() / 127.5 - 1" if x.dtype == torch.uint8 else ""))
        if x.dtype != self._dtype():
            raise TypeError(f"{name}: dtype {x.dtype}, but the model computes in {self._dtype()}; "
                            f"pass {name}.to({self._dtype()})")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        if pixel_range and x.numel():
            lo, hi = (v.item() for v in torch.aminmax(x))
            if lo < -1.5 or hi > 1.5:
                raise ValueError(f"{name}: values span [{lo:.4g}, {hi:.4g}], but images must be in [-1, 1] "
                                 "(for [0, 255] images pass x / 127.5 - 1, for [0, 1] images 2 * x - 1)")

    def check_codes(self, codes: torch.Tensor, batch: int | None = None, against: str = "x_T") -> None:
        """Raise a clear error unless codes are finite [B, L, D] for this model, in its dtype, with one code per
        image of a batch of ``batch`` (or a single code for all of them)."""
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"codes: expected a tensor [B, L, D], got {type(codes).__name__}")
        want = (self.num_levels, self.code_dim)
        if codes.dim() != 3 or tuple(codes.shape[1:]) != want:
            raise ValueError(f"codes: expected shape [B, {want[0]}, {want[1]}] for variant {self.config.variant!r}, got {list(codes.shape)}")
        if codes.dtype != self._dtype():
            raise TypeError(f"codes: dtype {codes.dtype}, but the model computes in {self._dtype()}; "
                            f"pass codes.to({self._dtype()})")
        if batch is not None and codes.shape[0] not in (batch, 1):
            raise ValueError(f"codes: a batch of {codes.shape[0]} codes for {against}'s batch of {batch} images; "
                             "give one code per image (or a single code for all)")
        if not bool(torch.isfinite(codes).all()):
            raise ValueError("codes: contains NaN or infinite values")

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Semantic codes [B, L, D] of images in [-1, 1]."""
        self.check_images(x0)
        return self.encoder(x0)

    def eps_fn(self, codes: torch.Tensor):
        """ε_θ(·, ·, codes) as the samplers take it; the codes are computed once, outside the loop."""
        self.check_codes(codes)
        # the codes' projections (1 + z_s per ResBlock) do not depend on t: once per sampling run
        scales = self.decoder.code_scales(codes)
        if self.config.prediction == "v":
            return lambda x_t, t: diffusion.v_to_eps(self.decoder(x_t, t, codes, scales), x_t, t, self.alphas_cumprod)
        return lambda x_t, t: self.decoder(x_t, t, codes, scales)

    def timesteps(self, steps: int) -> list[int]:
        return diffusion.spaced_timesteps(self.diffusion_config.T, steps)

    @torch.no_grad()
    def encode_stochastic(self, x0: torch.Tensor, codes: torch.Tensor, steps: int = 100, progress: bool = False,
                          refine: int = 1) -> torch.Tensor:
        """x_T by deterministic DDIM inversion of x0 given its codes (the stochastic encoder).

        ``refine = 1`` (default) solves each sampler step backwards with one correction, at one network call more
        than DiffAE's inversion, so that ``decode(x_T, codes, steps)`` returns x0 far more exactly;
        ``refine = 0`` is DiffAE's own inversion (what its checkpoints' golden outputs use); ``refine = k`` takes k
        corrections per step. See ``diffusion.ddim_invert`` and ``diffusion.ddim_invert_refined``.
        """
        self.check_images(x0)
        self.check_codes(codes, batch=x0.shape[0], against="x0")
        if refine < 0:
            raise ValueError(f"refine must be >= 0 (0: DiffAE's inversion; k: k corrections per step), got {refine}")
        args = (self.eps_fn(codes), x0, self.alphas_cumprod, self.timesteps(steps))
        if refine == 0:
            return diffusion.ddim_invert(*args, progress=progress)
        return diffusion.ddim_invert_refined(*args, corrections=refine, progress=progress)

    @torch.no_grad()
    def decode(self, x_T: torch.Tensor, codes: torch.Tensor, steps: int = 100, eta: float = 0.0,
               generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """x0 by DDIM from x_T given the codes."""
        self.check_images(x_T, "x_T", pixel_range=False)
        self.check_codes(codes, batch=x_T.shape[0])
        return diffusion.ddim_sample(self.eps_fn(codes), x_T, self.alphas_cumprod, self.timesteps(steps),
                                     eta=eta, generator=generator, progress=progress)

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor, steps: int = 100, stochastic: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode then decode: with the inverted x_T (stochastic=True) or a random x_T."""
        codes = self.encode(x0)
        if stochastic:
            x_T = self.encode_stochastic(x0, codes, steps)
        else:
            x_T = diffusion.randn(x0.shape, generator, x0.device, x0.dtype)
        return self.decode(x_T, codes, steps)

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample ε (or v) loss with codes from x0, encoder and decoder trained jointly (what DDP wraps)."""
        codes = self.encoder(x0)
        return diffusion.loss(lambda x_t, tt: self.decoder(x_t, tt, codes), x0, t, noise, self.alphas_cumprod,
                              self.config.prediction)

    loss = forward


# ---------------------------------------------------------------- helpers over a model


def untrained_like(model, seed: int = 0) -> HDAE:
    """The same architecture at its random initialisation: the baseline a trained encoder's codes must beat
    (random convolutional features already make colour and position linearly readable)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        fresh = HDAE(model.config).to(model_device(model)).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    return fresh


def _batches(data, n: int, batch_size: int):
    """Yield dicts with 'image' (and 'attributes' when the data set has them) for items 0..n-1."""
    if isinstance(data, torch.Tensor):
        for i in range(0, n, batch_size):
            yield {"image": data[i:i + batch_size]}
        return
    if hasattr(data, "batch"):  # Shapes renders a whole batch in one vectorised call
        for i in range(0, n, batch_size):
            yield data.batch(range(i, min(i + batch_size, n)))
        return
    for b in DataLoader(Subset(data, range(n)), batch_size=batch_size, shuffle=False, num_workers=0):
        yield b if isinstance(b, dict) else {"image": b[0] if isinstance(b, (list, tuple)) else b}


def encode_dataset(model, data, n: int | None = None, batch_size: int = 64, with_attributes: bool = True,
                   progress: bool = True) -> dict[str, Any]:
    """Codes [N, L, D] (float32, CPU) of the first n items, with their attributes [N, K] when the data has them.

    ``data`` is an image tensor [N, C, H, W] in [-1, 1], a ``Shapes`` set or any data set whose items are
    dicts with ``image`` (and ``attributes``). ``attributes`` is None for plain images or with_attributes=False.
    """
    total = len(data)
    n = total if n is None else int(n)
    if not 1 <= n <= total:
        raise ValueError(f"n: expected 1..{total} (the data set's length), got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    device = model_device(model)
    codes, attrs = [], []
    bar = None
    if progress:
        bar = tqdm(total=n, desc="encode", unit="img", leave=False)
    with inference(model):
        for b in _batches(data, n, batch_size):
            x0 = b["image"].to(device=device, dtype=next(model.parameters()).dtype)
            codes.append(model.encode(x0).float().cpu())
            if with_attributes and b.get("attributes") is not None:
                attrs.append(torch.as_tensor(b["attributes"]).float().cpu())
            if bar is not None:
                bar.update(x0.shape[0])
    if bar is not None:
        bar.close()
    codes_t = torch.cat(codes)
    attributes = torch.cat(attrs) if with_attributes and attrs and len(attrs) == len(codes) else None
    return {"codes": codes_t, "attributes": attributes,
            "attribute_names": list(getattr(data, "attribute_names", []) or []) or None}


def encode_split(model, src, split: str, n: int, batch_size: int = 64, cache_dir: str | Path | None = None,
                 refit: bool = False) -> tuple[torch.Tensor, str]:
    """(codes [n, L, D], where) of the first ``n`` images of a study data split, cached in ``cache_dir`` under the
    identity of the model's weights and the data (``hdae_core.cache``), so that a second study, or a second run,
    encoding the same images with the same model reads them instead."""
    def fit():
        return encode_dataset(model, src.split(split), n=n, batch_size=batch_size, with_attributes=False,
                              progress=False)["codes"]

    if cache_dir is None:
        return fit(), f"encoded {n} images"
    identity = {"kind": "codes", "model": cache.model_identity(model), "data": cache.data_identity(src, split, n)}
    return cache.fetch(cache_dir, identity, fit,
                       lambda c, folder: save_file({"codes": c.contiguous()}, str(folder / "codes.safetensors")),
                       lambda folder: load_file(str(folder / "codes.safetensors"))["codes"], "codes", refit=refit)
