"""Building blocks of the UNets: timestep embedding, AdaGN ResBlock, attention, block builders.

Module names follow DiffAE's ``BeatGANsAutoencModel`` (``in_layers``, ``emb_layers``,
``cond_emb_layers``, ``out_layers``, ``skip_connection``, ``qkv``, ``proj_out``) so that its
checkpoints map one-to-one onto the ``dae`` variant.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (as DiffAE does), returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).type(x.dtype)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling. On a contiguous NCHW tensor as one broadcast copy, which the
    CPU runs about 5x faster than ``F.interpolate`` (that one copies twice); otherwise ``F.interpolate``."""
    if x.dim() == 4 and x.is_contiguous() and x.device.type == "cpu":
        b, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
    return F.interpolate(x, scale_factor=2, mode="nearest")


# A 3x3 convolution (padding 1) of a 2x nearest-upsampled map is a stride-2 transposed convolution of the
# map itself with a 4x4 kernel: along each axis an output row 2m reads rows m-1 (tap 0) and m (taps 1 + 2),
# and a row 2m+1 reads rows m (taps 0 + 1) and m+1 (tap 2). Kernel row k of the transposed convolution
# is _UP_TAPS[k] · (the 3 rows of the 3x3 kernel).
_UP_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv(h: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(upsample2x(h)) for a 3x3, padding-1 ``conv``, as one transposed convolution at h's resolution:
    4 instead of 9 multiply-adds per output and input channel, and no upsampled copy; equal up to the
    rounding of the summed kernel taps."""
    m = torch.tensor(_UP_TAPS, dtype=conv.weight.dtype, device=conv.weight.device)
    w = torch.einsum("kr,lc,oirc->iokl", m, m, conv.weight)
    return F.conv_transpose2d(h, w, conv.bias, stride=2, padding=1)


def avgpool2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2. On the CPU as two strided adds (several times faster than
    ``F.avg_pool2d`` there, equal up to rounding); elsewhere ``F.avg_pool2d``."""
    if x.dim() == 4 and x.device.type == "cpu" and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
        rows = x[:, :, 0::2] + x[:, :, 1::2]
        return (rows[..., 0::2] + rows[..., 1::2]) * 0.25
    return F.avg_pool2d(x, kernel_size=2, stride=2)


_DROP_BITS = 15


def dropout(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On the CPU the keep mask comes from 15-bit slices of 64-bit random words (four
    per word): ``F.dropout``'s ``bernoulli_`` draws one double per element there, and this forward is
    measured 2.6-2.9x faster; p is rounded to a multiple of 2^-15 (0.1 drops
    with probability 0.100006) and the kept values are scaled by 1 / (1 - that p), so E[out] = h exactly."""
    if not training or p == 0:
        return h
    if h.device.type != "cpu" or p >= 1 or h.numel() % 4:
        return F.dropout(h, p, training)
    k = round(p * (1 << _DROP_BITS))
    words = torch.empty(h.numel() // 4, dtype=torch.int64, device=h.device).random_()
    keep = (words.view(torch.int16) & ((1 << _DROP_BITS) - 1)) >= k
    scale = (1 << _DROP_BITS) / ((1 << _DROP_BITS) - k)
    return h * keep.view(h.shape).to(h.dtype).mul_(scale)


def norm_affine_silu(h: torch.Tensor, groups: int, eps: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SiLU(GN(h)·a + b) in float32, returned in h's dtype; ``a``, ``b`` are per sample and channel,
    [B, C, 1, 1]: GroupNorm's kernel (no affine), one fused multiply-add, then SiLU (in place unless
    autograd records it: an in-place SiLU there makes autograd copy its input)."""
    y = torch.addcmul(b, F.group_norm(h.float(), groups, eps=eps), a)
    return F.silu(y, inplace=not y.requires_grad).type(h.dtype)


def gn_silu(norm: nn.GroupNorm, h: torch.Tensor) -> torch.Tensor:
    """SiLU(GroupNorm(h)): the norm (its affine inside GroupNorm's kernel) in float32, then, as DiffAE's
    GroupNorm32 followed by SiLU, the activation in h's dtype."""
    y = F.group_norm(h.float(), norm.num_groups, norm.weight, norm.bias, norm.eps).type(h.dtype)
    return F.silu(y, inplace=not y.requires_grad)


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

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return upsample2x(x)
        if self.down:
            return avgpool2x(x)
        return x

    def forward(self, x, emb=None, cond=None, z=None):
        """``z``: the code scale 1 + z_s when computed beforehand (``code_scale``), instead of ``cond``."""
        h = gn_silu(self.in_layers[0], x)
        conv = self.in_layers[2]
        if self.up and h.device.type == "cpu" and conv.kernel_size == (3, 3) and conv.padding == (1, 1):
            # upsample then conv, as one transposed conv (2.25x fewer FLOPs; measured 2-3x faster on the CPU)
            h = upsample_conv(h, conv)
            x = self._resample(x)
        else:
            if self.up or self.down:
                # resample between the activation and the conv, as DiffAE's updown blocks do
                h = self._resample(h)
                x = self._resample(x)
            h = conv(h)
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
        n, heads, ch = x.shape[-1], self.num_heads, c // self.num_heads
        if x.device.type == "cpu":
            # legacy layout: per head, q, k and v are consecutive chunks of channels. Two batched
            # matmuls read them in place (BLAS takes the transposes as flags) and write [B, C, T]
            # directly: no layout copies, which cost more than the attention itself on the CPU
            q, k, v = qkv.reshape(b * heads, 3 * ch, n).split(ch, dim=1)  # each [BH, C/H, T]
            w = torch.bmm(q.transpose(1, 2), k * ch**-0.5).softmax(dim=-1)  # [BH, T, S]
            h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, n)
        else:
            # contiguous [B, H, T, C/H] operands for the fused (flash / memory-efficient) kernels
            q, k, v = qkv.reshape(b, heads, 3, ch, n).permute(2, 0, 1, 4, 3).contiguous().unbind(0)
            h = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, n)
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
