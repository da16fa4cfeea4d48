"""CPU fast paths of the UNet's operations, each equal (up to rounding) to the plain PyTorch op it replaces.

On the CPU several of PyTorch's kernels copy or draw more than needed at this network's sizes; the
functions here take the faster route there and fall back to the plain op on other devices, so
``nn.ResBlock`` and ``nn.AttentionBlock`` read like DiffAE's. Each speed-up is measured in its docstring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def resample_conv(h: torch.Tensor, x: torch.Tensor, conv: nn.Conv2d, up: bool, down: bool):
    """(conv(resample(h)), resample(x)) of a ResBlock's first branch and its skip, resample being 2x nearest
    upsampling (``up``), 2x2 average pooling (``down``) or nothing. On the CPU an upsample followed by a
    3x3 conv runs as one transposed conv (2.25x fewer FLOPs; measured 2-3x faster there)."""
    if up and h.device.type == "cpu" and conv.kernel_size == (3, 3) and conv.padding == (1, 1):
        return upsample_conv(h, conv), upsample2x(x)
    if up:
        return conv(upsample2x(h)), upsample2x(x)
    if down:
        return conv(avgpool2x(h)), avgpool2x(x)
    return conv(h), x


def qkv_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention [B, C, T] from qkv [B, 3C, T] laid out as DiffAE's QKVAttentionLegacy (per head, q, k
    and v are consecutive chunks of channels)."""
    b, c3, n = qkv.shape
    c = c3 // 3
    ch = c // heads
    if qkv.device.type == "cpu":
        # two batched matmuls read q, k, v in place (BLAS takes the transposes as flags) and write [B, C, T]
        # directly: no layout copies, which cost more than the attention itself on the CPU
        q, k, v = qkv.reshape(b * heads, 3 * ch, n).split(ch, dim=1)  # each [BH, C/H, T]
        w = torch.bmm(q.transpose(1, 2), k * ch**-0.5).softmax(dim=-1)  # [BH, T, S]
        return torch.bmm(v, w.transpose(1, 2)).reshape(b, c, n)
    # contiguous [B, H, T, C/H] operands for the fused (flash / memory-efficient) kernels
    q, k, v = qkv.reshape(b, heads, 3, ch, n).permute(2, 0, 1, 4, 3).contiguous().unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, n)
