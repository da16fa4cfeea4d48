"""Building blocks of the UNets: timestep embedding, AdaGN ResBlock, attention, block builders.

Module names follow DiffAE's ``BeatGANsAutoencModel`` (``in_layers``, ``emb_layers``,
``cond_emb_layers``, ``out_layers``, ``skip_connection``, ``qkv``, ``proj_out``) so that its
checkpoints map one-to-one onto the ``dae`` variant.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .cpu_ops import dropout, gn_silu, norm_affine_silu, qkv_attention, resample_conv


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (as DiffAE does), returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """GroupNorm with gcd(32, C) groups: DiffAE's min(32, C) wherever that divides C."""
    return GroupNorm32(math.gcd(32, channels), channels)


def set_norm_groups(module: nn.Module, groups: int) -> None:
    """Give every GroupNorm32 in ``module`` gcd(groups, C) groups (its weights are per channel, so unchanged)."""
    for m in module.modules():
        if isinstance(m, GroupNorm32):
            m.num_groups = math.gcd(groups, m.num_channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding laid out as cat([cos, sin]) (DDPM/DiffAE)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """ResBlock with AdaGN: h = GN(h)·(1 + t_s) + t_b; h = h·(1 + z_s) (DiffAE Eq. 7).

    ``emb_channels=None`` gives DiffAE's unconditioned encoder block (GN, SiLU, conv and the
    skip only); ``cond_channels=None`` drops the code modulation. ``level`` is the resolution level whose code the block reads.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int | None,
        dropout: float,
        out_channels: int | None = None,
        cond_channels: int | None = None,
        up: bool = False,
        down: bool = False,
        level: int = 0,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.out_channels = out_channels
        self.up, self.down = up, down
        self.level = level
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = (
            nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
            if emb_channels is not None
            else None
        )
        self.cond_emb_layers = (
            nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, out_channels))
            if cond_channels is not None
            else None
        )
        # DiffAE's unconditioned (encoder) blocks stop after in_layers: no second conv
        self.out_layers = (
            nn.Sequential(
                normalization(out_channels),
                nn.SiLU(),
                nn.Dropout(p=dropout),
                zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
            )
            if emb_channels is not None
            else None
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x, emb=None, cond=None, z=None):
        """``z``: the code scale 1 + z_s when computed beforehand (``code_scale``), instead of ``cond``."""
        h = gn_silu(self.in_layers[0], x)
        # resample between the activation and the conv, as DiffAE's updown blocks do
        h, x = resample_conv(h, x, self.in_layers[2], self.up, self.down)
        if self.out_layers is not None:
            h = self._adagn(h, emb, cond, z)
        return self.skip_connection(x) + h

    def code_scale(self, cond: torch.Tensor) -> torch.Tensor | None:
        """1 + z_s = 1 + Linear(SiLU(z)) as [B, C, 1, 1] float32; it does not depend on t, so a sampler
        computes it once per run."""
        if self.cond_emb_layers is None or cond is None:
            return None
        return 1 + self.cond_emb_layers(cond).float()[:, :, None, None]

    def _adagn(self, h, emb, cond, z=None):
        """(GN(h)·(1 + t_s) + t_b)·(1 + z_s), SiLU, dropout, conv — with one fused pass over h.

        GN's affine, the time scale/shift and the code scale are all per (sample, channel), so
        they fold into one coefficient pair applied by a single addcmul.
        """
        norm, drop, conv = self.out_layers[0], self.out_layers[2], self.out_layers[3]
        scale, shift = self.emb_layers(emb).float()[:, :, None, None].chunk(2, dim=1)
        a = norm.weight.float()[None, :, None, None] * (1 + scale)
        b = norm.bias.float()[None, :, None, None] * (1 + scale) + shift
        if z is None:
            z = self.code_scale(cond)
        if z is not None:
            a, b = a * z, b * z
        h = norm_affine_silu(h, norm.num_groups, norm.eps, a, b)
        h = dropout(h, drop.p, drop.training)
        return conv(h)


class AttentionBlock(nn.Module):
    """Unconditioned self-attention over pixels, heads laid out as DiffAE's QKVAttentionLegacy."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # [B, 3C, T]; plain GN (no SiLU follows)
        h = qkv_attention(qkv, self.num_heads)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class Seq(nn.Sequential):
    """A sequence of layers where ResBlocks receive the time embedding and their level's code."""

    def forward(self, x, emb=None, codes=None, code_scales=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                if code_scales is not None:
                    x = layer(x, emb, z=code_scales[layer.scale_index])
                    continue
                cond = None if codes is None else codes[:, layer.level if codes.shape[1] > 1 else 0]
                x = layer(x, emb, cond)
            else:
                x = layer(x)
        return x


def build_input_blocks(
    in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
    image_size, num_heads, dropout, emb_channels, cond_channels,
):
    """DiffAE's down path: stem conv, per level ResBlocks (+attention), a ResBlock downsampler.

    Returns (blocks, skip_channels per level, channels at the bottom). A resampling block
    belongs to the coarser of its two resolutions.
    """
    ch = int(channel_mult[0] * model_channels)
    blocks = nn.ModuleList([Seq(nn.Conv2d(in_channels, ch, 3, padding=1))])
    skip = [[ch]] + [[] for _ in channel_mult[1:]]
    res = image_size
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out = int(mult * model_channels)
            layers = [ResBlock(ch, emb_channels, dropout, out, cond_channels, level=level)]
            ch = out
            if res in attention_resolutions:
                layers.append(AttentionBlock(ch, num_heads))
            blocks.append(Seq(*layers))
            skip[level].append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(Seq(ResBlock(ch, emb_channels, dropout, ch, cond_channels, down=True, level=level + 1)))
            skip[level + 1].append(ch)
            res //= 2
    return blocks, skip, ch


def build_middle_block(ch, num_heads, dropout, emb_channels, cond_channels, level):
    """ResBlock, attention, ResBlock at the coarsest resolution."""
    return Seq(
        ResBlock(ch, emb_channels, dropout, ch, cond_channels, level=level),
        AttentionBlock(ch, num_heads),
        ResBlock(ch, emb_channels, dropout, ch, cond_channels, level=level),
    )


def build_output_blocks(
    ch, skip, model_channels, channel_mult, num_res_blocks, attention_resolutions,
    image_size, num_heads, dropout, emb_channels, cond_channels,
):
    """DiffAE's up path: num_res_blocks + 1 ResBlocks per level, each eating one skip; upsampler last."""
    skip = [list(s) for s in skip]
    res = image_size // 2 ** (len(channel_mult) - 1)
    blocks = nn.ModuleList()
    for level, mult in reversed(list(enumerate(channel_mult))):
        for i in range(num_res_blocks + 1):
            ich = skip[level].pop() if skip[level] else 0
            out = int(model_channels * mult)
            layers = [ResBlock(ch + ich, emb_channels, dropout, out, cond_channels, level=level)]
            ch = out
            if res in attention_resolutions:
                layers.append(AttentionBlock(ch, num_heads))
            if level and i == num_res_blocks:
                layers.append(ResBlock(ch, emb_channels, dropout, ch, cond_channels, up=True, level=level))
                res *= 2
            blocks.append(Seq(*layers))
    return blocks, ch


class PoolHead(nn.Sequential):
    """Pooling head GN → SiLU → global average pool → 1×1 conv → [B, D] (DiffAE's 'adaptivenonzero')."""

    def __init__(self, channels: int, out_dim: int):
        super().__init__(
            normalization(channels), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, out_dim, 1), nn.Flatten(),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = gn_silu(self[0], h)
        for layer in list(self)[2:]:
            h = layer(h)
        return h


def conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Conv 3×3 → GroupNorm → SiLU: the unit of the small auxiliary CNNs (layout encoder, oracle)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU())
