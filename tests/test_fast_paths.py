"""The CPU fast paths against the plain PyTorch operations they replace: each difference bounded."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hdae_core import HDAE, ModelConfig
from hdae_core import diffusion
from hdae_core.cpu_ops import avgpool2x, dropout, gn_silu, norm_affine_silu, upsample2x
from hdae_core.nn import AttentionBlock


def test_upsample_is_exactly_nearest_interpolation_with_the_same_gradient():
    x = torch.randn(2, 5, 4, 6, requires_grad=True)
    g = torch.randn(2, 5, 8, 12)
    ref = F.interpolate(x, scale_factor=2, mode="nearest")
    (gr,) = torch.autograd.grad(ref, x, g)
    out = upsample2x(x)
    (go,) = torch.autograd.grad(out, x, g)
    assert torch.equal(out, ref) and torch.allclose(go, gr, atol=1e-6)


def test_avgpool_matches_avg_pool2d_to_rounding():
    x = torch.randn(2, 5, 8, 6, requires_grad=True)
    g = torch.randn(2, 5, 4, 3)
    ref = F.avg_pool2d(x, 2, 2)
    (gr,) = torch.autograd.grad(ref, x, g)
    out = avgpool2x(x)
    (go,) = torch.autograd.grad(out, x, g)
    assert (out - ref).abs().max() < 1e-6 and torch.allclose(go, gr)


def test_dropout_rate_and_expectation():
    torch.manual_seed(0)
    h = torch.randn(64, 32, 16, 16)
    out = dropout(h, 0.1, True)
    kept = out != 0
    rate = 1 - kept.float().mean().item()
    n = h.numel()
    assert abs(rate - 0.1) < 5 * (0.1 * 0.9 / n) ** 0.5  # five standard errors
    scale = out[kept] / h[kept]
    assert torch.allclose(scale, torch.full_like(scale, 32768 / (32768 - 3277)))
    # unbiased: E[out] = h (here over a constant input)
    ones = torch.ones(1 << 20)
    assert abs(dropout(ones, 0.1, True).mean().item() - 1) < 5 * (0.1 / 0.9 / (1 << 20)) ** 0.5
    assert dropout(h, 0.1, False) is h and dropout(h, 0.0, True) is h
    # fresh masks on every call
    assert not torch.equal(dropout(h, 0.1, True) != 0, kept)


def test_dropout_gradient_follows_the_mask():
    h = torch.randn(4, 8, 4, 4, requires_grad=True)
    out = dropout(h, 0.25, True)
    (g,) = torch.autograd.grad(out.sum(), h)
    assert torch.allclose(g, (out.detach() / h.detach()).where(out.detach() != 0, torch.zeros(())), atol=1e-6)


def _attention_reference(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """DiffAE's legacy attention written out: per head q, k, v as consecutive channel chunks, softmax(qᵀk/√d)."""
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = block.qkv(F.group_norm(x, block.norm.num_groups, block.norm.weight, block.norm.bias, block.norm.eps))
    heads, ch = block.num_heads, c // block.num_heads
    q, k, v = qkv.reshape(b * heads, 3 * ch, -1).double().split(ch, dim=1)
    w = torch.einsum("bct,bcs->bts", q, k / ch**0.5).softmax(dim=-1)
    h = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1).float()
    return (x + block.proj_out(h)).reshape(b, c, *spatial)


def test_cpu_attention_matches_the_legacy_formula():
    torch.manual_seed(0)
    for heads in (1, 4):
        block = AttentionBlock(64, heads)
        torch.nn.init.normal_(block.proj_out.weight, std=0.1)
        x = torch.randn(3, 64, 8, 8)
        assert (block(x) - _attention_reference(block, x)).abs().max() < 1e-5


def test_norm_helpers_match_groupnorm_then_silu():
    torch.manual_seed(0)
    h = torch.randn(2, 64, 8, 8)
    norm = torch.nn.GroupNorm(32, 64)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    assert (gn_silu(norm, h) - F.silu(norm(h))).abs().max() < 1e-6
    a, b = torch.randn(2, 64, 1, 1), torch.randn(2, 64, 1, 1)
    ref = F.silu(F.group_norm(h, 32) * a + b)
    assert (norm_affine_silu(h, 32, 1e-5, a, b) - ref).abs().max() < 1e-5


def test_code_scales_computed_once_give_the_same_prediction():
    torch.manual_seed(0)
    for variant in ("dae", "hdae_u"):
        m = HDAE(ModelConfig.preset("tiny", variant)).eval()
        for p in m.decoder.parameters():  # zero-initialised convs would hide the code path
            torch.nn.init.normal_(p, std=0.05)
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        t = torch.tensor([10, 700])
        with torch.no_grad():
            codes = m.encode(x)
            plain = m.decoder(x, t, codes)
            cached = m.decoder(x, t, codes, m.decoder.code_scales(codes))
            assert torch.equal(plain, cached)
            # the sampler (which takes the cached scales) equals DDIM over plain decoder calls
            ts = m.timesteps(5)
            ref = diffusion.ddim_sample(lambda x_t, tt: m.decoder(x_t, tt, codes), x, m.alphas_cumprod, ts)
            assert torch.equal(m.decode(x, codes, 5), ref)


def test_upsample_conv_equals_conv_of_the_upsampled_map():
    from hdae_core.cpu_ops import upsample_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    h = torch.randn(2, 16, 5, 7, requires_grad=True)
    g = torch.randn(2, 8, 10, 14)
    ref = conv(F.interpolate(h, scale_factor=2, mode="nearest"))
    grads_ref = torch.autograd.grad(ref, (h, conv.weight, conv.bias), g)
    out = upsample_conv(h, conv)
    grads = torch.autograd.grad(out, (h, conv.weight, conv.bias), g)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-5
    for a, b in zip(grads, grads_ref):
        assert (a - b).abs().max() < 1e-4 * b.abs().max()


def test_bf16_autocast_stays_close_to_fp32():
    """bf16 autocast (hdae train/bench --amp bf16; off by default on the CPU) against fp32: ε and one training loss."""
    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()
    for p in m.decoder.parameters():  # zero-initialised convs would hide the difference
        torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([10, 700])
    with torch.no_grad():
        codes = m.encode(x)
        ref = m.decoder(x, t, codes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            codes16 = m.encode(x)
            out = m.decoder(x, t, codes16).float()
        assert (codes16.float() - codes).abs().max() < 0.05 * codes.abs().max()
        assert (out - ref).abs().max() < 0.05 * ref.abs().max()
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss16 = m(x, t, torch.randn_like(x)).mean()
        torch.manual_seed(0)
        loss32 = m(x, t, torch.randn_like(x)).mean()
    assert abs(loss16.item() - loss32.item()) < 0.02 * loss32.item()
