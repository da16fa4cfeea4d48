import math

import pytest
import torch

from hdae_core import diffusion as D


def ac():
    return D.alphas_cumprod(D.linear_betas(1000))


def test_linear_betas_known_values():
    b = D.linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert b[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999)
    a = D.alphas_cumprod(b)
    # values of the DDPM linear schedule
    assert a[0].item() == pytest.approx(0.9999)
    assert a[999].item() == pytest.approx(4.035829e-05, rel=1e-5)
    # an independent product over the linspace
    beta = [1e-4 + i * (0.02 - 1e-4) / 999 for i in range(1000)]
    assert a[499].item() == pytest.approx(math.prod(1 - b_ for b_ in beta[:500]), rel=1e-12)
    # DiffAE scales the endpoints by 1000/T
    assert D.linear_betas(100)[-1].item() == pytest.approx(0.2)


def _diffae_space(T, n):
    # DiffAE's space_timesteps(T, "ddimN"), written out
    for i in range(1, T):
        if len(range(0, T, i)) == n:
            return sorted(set(range(0, T, i)))
    raise ValueError


@pytest.mark.parametrize("n", [2, 4, 5, 10, 20, 50, 100, 200, 250, 500, 1000])
def test_spaced_timesteps_match_diffae(n):
    assert D.spaced_timesteps(1000, n) == _diffae_space(1000, n)


def test_spaced_timesteps_known_values():
    assert D.spaced_timesteps(1000, 10) == list(range(0, 1000, 100))
    assert D.spaced_timesteps(1000, 20)[:3] == [0, 50, 100]


def test_spaced_timesteps_invalid_count_names_neighbours():
    with pytest.raises(ValueError, match=r"nearest valid counts: 500 or 1000"):
        D.spaced_timesteps(1000, 700)
    with pytest.raises(ValueError, match="integer stride"):
        D.spaced_timesteps(1000, 1)


def test_q_sample_and_loss_per_sample():
    a = ac()
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 500, 999])
    xt = D.q_sample(x0, t, noise, a)
    i = 2
    want = a[500].sqrt().float() * x0[i] + (1 - a[500]).sqrt().float() * noise[i]
    torch.testing.assert_close(xt[i], want)
    loss = D.loss(lambda x, tt: torch.zeros_like(x), x0, t, noise, a, "eps")
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, noise.pow(2).flatten(1).mean(1))


def _gaussian_eps(a, mu, sigma):
    def eps(x, t):
        at = a[t].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - at).sqrt() * (x - at.sqrt() * mu) / (at * sigma**2 + 1 - at)
    return eps


def test_invert_sample_round_trip_closed_form():
    """Closed-form ε* of Gaussian data: the round-trip error falls with the steps; at 100 its MSE < 1e-3."""
    a = ac()
    mu, sigma = 0.0, 0.5
    eps = _gaussian_eps(a, mu, sigma)
    g = torch.Generator().manual_seed(0)
    x0 = mu + sigma * torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64)
    errs = {}
    for n in (10, 20, 50, 100):
        ts = D.spaced_timesteps(1000, n)
        x_T = D.ddim_invert(eps, x0, a, ts, clip_x0=False)
        back = D.ddim_sample(eps, x_T, a, ts, clip_x0=False)
        errs[n] = (back - x0).pow(2).mean().item()
    print("round-trip MSE by steps:", errs)
    assert errs[10] > errs[20] > errs[50] > errs[100]
    assert errs[100] < 1e-3
    # inverted codes look like standard noise
    x_T = D.ddim_invert(eps, x0, a, D.spaced_timesteps(1000, 100), clip_x0=False)
    assert abs(x_T.std().item() - 1) < 0.15


def test_ddim_eta_noise_reproducible():
    a = ac()
    eps = _gaussian_eps(a, 0.0, 0.5)
    x_T = torch.randn(2, 3, 4, 4)
    ts = D.spaced_timesteps(1000, 10)
    s1 = D.ddim_sample(eps, x_T, a, ts, eta=1.0, generator=torch.Generator().manual_seed(3))
    s2 = D.ddim_sample(eps, x_T, a, ts, eta=1.0, generator=torch.Generator().manual_seed(3))
    s3 = D.ddim_sample(eps, x_T, a, ts, eta=1.0, generator=torch.Generator().manual_seed(4))
    d0 = D.ddim_sample(eps, x_T, a, ts, eta=0.0)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3) and not torch.equal(s1, d0)
    noise = [torch.zeros_like(x_T)] * 10
    torch.testing.assert_close(D.ddim_sample(eps, x_T, a, ts, eta=1.0, noise=noise).shape, x_T.shape)


def test_clipping_default_on():
    a = ac()
    x_T = torch.randn(2, 3, 4, 4) * 3
    big = lambda x, t: torch.full_like(x, -50.0)  # x̂0 far outside [-1, 1]
    out = D.ddim_sample(big, x_T, a, [0])
    assert out.abs().max() <= 1 + 1e-6
    assert D.ddim_sample(big, x_T, a, [0], clip_x0=False).abs().max() > 1.5


def test_v_parameterisation_known_answers():
    a = ac()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    x_t = D.q_sample(x0, t, noise, a)
    v = D.v_target(x0, t, noise, a)
    # v = √ᾱ ε − √(1−ᾱ) x0, checked entry by entry at t = 700
    s, c = a[700].sqrt().item(), (1 - a[700]).sqrt().item()
    assert torch.allclose(v[2], s * noise[2] - c * x0[2], atol=1e-6)
    # the exact v gives back the exact ε, and a perfect v-predictor has zero loss
    assert torch.allclose(D.v_to_eps(v, x_t, t, a), noise, atol=1e-5)
    assert D.loss(lambda xt, tt: D.v_target(x0, tt, noise, a), x0, t, noise, a, "v").abs().max() < 1e-10
    # at the last step v is almost −x0: x̂0 is the network's own output there
    assert torch.allclose(v[3], -x0[3], atol=0.0064 * noise[3].abs().max().item() + 1e-3)


def test_v_model_samples_through_its_eps_function():
    from hdae_core import ModelConfig
    from hdae_core.model import HDAE

    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", "hdae_u", prediction="v")).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([10, 900])
    with torch.no_grad():
        codes = m.encode(x)
        eps = m.eps_fn(codes)(x, t)
        v = m.decoder(x, t, codes)
    assert torch.allclose(eps, D.v_to_eps(v, x, t, m.alphas_cumprod), atol=1e-6)
    noise = torch.randn_like(x)
    assert torch.allclose(m(x, t, noise), D.loss(lambda xt, tt: m.decoder(xt, tt, codes), x, t, noise, m.alphas_cumprod,
                                                  "v"))
    with pytest.raises(ValueError, match="prediction"):
        ModelConfig.preset("tiny", prediction="x0")


# ---------------------------------------------------------------- refined (fixed-point) inversion


def _invert(eps, x0, a, ts, refine, **kw):
    if refine == 0:
        return D.ddim_invert(eps, x0, a, ts, **kw)
    return D.ddim_invert_refined(eps, x0, a, ts, corrections=refine, **kw)


def _round_trip(eps, x0, a, n, refine, clip=False):
    ts = D.spaced_timesteps(1000, n)
    x_T = _invert(eps, x0, a, ts, refine, clip_x0=clip)
    return (D.ddim_sample(eps, x_T, a, ts, clip_x0=clip) - x0).pow(2).mean().item()


def test_refined_inversion_is_exact_when_eps_ignores_x():
    """With ε independent of x_t every sampler step is affine in x_t, so one correction inverts it exactly."""
    a = ac()
    g = torch.Generator().manual_seed(0)
    field = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = lambda x, t: field * (1 + t.view(-1, 1, 1, 1) / 1000)  # noqa: E731
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    assert _round_trip(eps, x0, a, 10, refine=1) < 1e-24
    assert _round_trip(eps, x0, a, 10, refine=0) > 1e-4  # DiffAE's inversion is not exact even here


def test_refined_inversion_error_falls_with_corrections():
    a = ac()
    eps = _gaussian_eps(a, 0.0, 0.5)
    x0 = 0.5 * torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = {k: _round_trip(eps, x0, a, 20, refine=k) for k in (0, 1, 2, 4)}
    print("round-trip MSE at T=20 by corrections:", errs)
    assert errs[0] > errs[1] > errs[2] > errs[4]
    assert errs[1] < errs[0] / 10
    # with clipping on (the default), the corrections still converge
    x_big = 1.5 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).clamp(-1, 1)
    clipped = {k: _round_trip(eps, x_big, a, 20, refine=k, clip=True) for k in (0, 1, 4)}
    assert clipped[0] > clipped[1] > clipped[4]


def test_refined_inversion_network_calls():
    a = ac()
    calls = []
    base = _gaussian_eps(a, 0.0, 0.5)

    def eps(x, t):
        calls.append(int(t[0]))
        return base(x, t)

    x0 = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    ts = D.spaced_timesteps(1000, 10)
    for k, want in ((0, 10), (1, 11), (3, 31)):
        calls.clear()
        _invert(eps, x0, a, ts, k)
        assert len(calls) == want, (k, calls)
        assert calls == sorted(calls)  # each step's calls at its own t, in order
    with pytest.raises(ValueError, match="corrections"):
        D.ddim_invert_refined(eps, x0, a, ts, corrections=0)
