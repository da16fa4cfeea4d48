"""Gaussian diffusion as pure functions: schedules, q_sample, the ε loss, DDIM sampling and inversion.

Schedules are float64 tensors (as DiffAE computes them in numpy); coefficients are cast to the
sample's dtype only where they are used. Samplers take ``eps_fn(x_t, t)`` with integer
timesteps of the full schedule, so the network never sees the schedule.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(T: int = 1000) -> torch.Tensor:
    """Linear β from 1e-4 to 0.02, scaled by 1000/T (DDPM; DiffAE's ``get_named_beta_schedule``)."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), float64."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def valid_step_counts(T: int) -> list[int]:
    """Every DDIM step count that an integer stride over T timesteps gives."""
    return sorted({len(range(0, T, i)) for i in range(1, T)})


def spaced_timesteps(T: int, steps: int) -> list[int]:
    """DiffAE's ``ddimN`` spacing: range(0, T, stride) for the stride giving exactly ``steps`` values."""
    for stride in range(1, T):
        if len(range(0, T, stride)) == steps:
            return list(range(0, T, stride))
    counts = valid_step_counts(T)
    lower = max((c for c in counts if c < steps), default=None)
    upper = min((c for c in counts if c > steps), default=None)
    near = " or ".join(str(c) for c in (lower, upper) if c is not None)
    raise ValueError(f"cannot take exactly {steps} DDIM steps over T={T} with an integer stride; nearest valid counts: {near}")


def _roots(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """√ᾱ_t and √(1 − ᾱ_t), gathered at t first (no whole-schedule work per call, e.g. per DDIM step),
    computed in float64 and cast to the sample's dtype, shaped to broadcast."""
    a = alphas_cumprod.to(like.device)[t].double()
    shape = (-1, *([1] * (like.dim() - 1)))
    return a.sqrt().to(like.dtype).reshape(shape), (1 - a).sqrt().to(like.dtype).reshape(shape)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε (DDPM Eq. 4)."""
    sa, s1a = _roots(alphas_cumprod, t, x0)
    return sa * x0 + s1a * noise


def v_target(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t ε − √(1 − ᾱ_t) x0, the velocity target (Salimans & Ho 2022)."""
    sa, s1a = _roots(alphas_cumprod, t, x0)
    return sa * noise - s1a * x0


def v_to_eps(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ε = √ᾱ_t v + √(1 − ᾱ_t) x_t: a v-predicting network as the ε function the samplers take."""
    sa, s1a = _roots(alphas_cumprod, t, x_t)
    return sa * v.to(x_t.dtype) + s1a * x_t


def loss(net_fn: EpsFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
         alphas_cumprod: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """Per-sample ‖target − net(x_t, t)‖² averaged over pixels, the target being ε (DDPM L_simple) or
    v as ``prediction`` says; the caller reduces."""
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    target = noise if prediction == "eps" else v_target(x0, t, noise, alphas_cumprod)
    return (net_fn(x_t, t).float() - target.float()).pow(2).flatten(1).mean(1)


def randn(shape, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, then moved to ``device``: a CPU generator gives the same
    noise on every machine, so a figure drawn with it is reproducible anywhere."""
    dev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=dev, dtype=dtype).to(device)


def _x0_and_eps(eps_fn, x, t, a_t, clip):
    """ε at x_t, x̂0 from it (clipped to [-1, 1] by default), and ε re-derived from the clipped x̂0.
    ``t`` is the batch's timestep tensor; the coefficients are Python floats (no per-step tensors)."""
    eps = eps_fn(x, t).to(x.dtype)
    r = (1.0 / a_t) ** 0.5
    rm1 = (1.0 / a_t - 1.0) ** 0.5
    x0 = x * r - eps * rm1
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x * r - x0) / rm1
    return x0, eps


def _t_batches(ts: list[int], x: torch.Tensor) -> list[torch.Tensor]:
    """One [B] timestep tensor per step, built once before the loop."""
    all_t = torch.tensor(ts, device=x.device, dtype=torch.long)
    return list(all_t.view(-1, 1).repeat(1, x.shape[0]))


def _timesteps_list(timesteps: Sequence[int] | torch.Tensor) -> list[int]:
    ts = [int(t) for t in (timesteps.tolist() if torch.is_tensor(timesteps) else timesteps)]
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly increasing, got {ts[:5]}...")
    return ts


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor,
                timesteps: Sequence[int] | torch.Tensor, eta: float = 0.0,
                noise: torch.Tensor | Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None, clip_x0: bool = True,
                progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. Eq. 12) from x_T down the given timesteps; η = 0 is deterministic.

    With η > 0, fresh noise comes from ``noise`` (one tensor per step) or from ``generator``.
    """
    ts = _timesteps_list(timesteps)
    ac = alphas_cumprod.double().cpu().tolist()
    x = x_T
    steps = list(reversed(range(len(ts))))
    if progress:
        steps = tqdm(steps, desc="DDIM sample", leave=False)
    t_batch = _t_batches(ts, x)
    for n, i in enumerate(steps):
        a_t = ac[ts[i]]
        a_prev = ac[ts[i - 1]] if i > 0 else 1.0
        x0, eps = _x0_and_eps(eps_fn, x, t_batch[i], a_t, clip_x0)
        sigma = eta * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5
        x = x0 * a_prev ** 0.5 + eps * max(1 - a_prev - sigma**2, 0.0) ** 0.5
        if sigma > 0 and i > 0:
            if noise is not None:
                z = noise[n]
            else:
                z = randn(x.shape, generator, x.device, x.dtype)
            x = x + sigma * z
    return x


def _steps(n: int, desc: str, progress: bool):
    return tqdm(range(n), desc=desc, leave=False) if progress else range(n)


@torch.no_grad()
def ddim_invert(eps_fn: EpsFn, x0: torch.Tensor, alphas_cumprod: torch.Tensor,
                timesteps: Sequence[int] | torch.Tensor, clip_x0: bool = True, progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM run backwards from x0 (the stochastic encoder), as DiffAE inverts.

    Each step reuses ε at the current point and the last step goes to ᾱ = 0. It is only approximately undone
    by ``ddim_sample``, and the gap is the round-trip error (``ddim_invert_refined`` closes it).
    """
    ts = _timesteps_list(timesteps)
    ac = alphas_cumprod.double().cpu().tolist()
    x = x0
    t_batch = _t_batches(ts, x)
    for i in _steps(len(ts), "DDIM invert", progress):
        a_t = ac[ts[i]]
        a_next = ac[ts[i + 1]] if i + 1 < len(ts) else 0.0
        x0_hat, eps = _x0_and_eps(eps_fn, x, t_batch[i], a_t, clip_x0)
        x = x0_hat * a_next ** 0.5 + eps * (1 - a_next) ** 0.5
    return x


@torch.no_grad()
def ddim_invert_refined(eps_fn: EpsFn, x0: torch.Tensor, alphas_cumprod: torch.Tensor,
                        timesteps: Sequence[int] | torch.Tensor, corrections: int = 1, clip_x0: bool = True,
                        progress: bool = False) -> torch.Tensor:
    """DDIM inverted step by step as a fixed point: each sampler step solved backwards.

    For each step it looks for the x_t whose DDIM step (the one ``ddim_sample`` takes, clipping included) lands
    on the point below, by ``corrections`` residual corrections ``x_t ← x_t − √(ᾱ_t/ᾱ_prev)·(step(x_t) − target)``
    from the plain DDIM guess, one network call each, and ends at the sampler's first level ᾱ_{t_max}. The round
    trip shrinks towards zero as the corrections grow; one correction costs the network calls of ``ddim_invert``
    plus one.
    """
    if corrections < 1:
        raise ValueError(f"corrections must be >= 1 (ddim_invert is the plain inversion), got {corrections}")
    ts = _timesteps_list(timesteps)
    ac = alphas_cumprod.double().cpu().tolist()
    x = x0
    t_batch = _t_batches(ts, x)
    eps = None
    for i in _steps(len(ts), "DDIM invert", progress):
        a_t = ac[ts[i]]
        a_prev = ac[ts[i - 1]] if i > 0 else 1.0
        target = x
        if eps is None:  # the very first guess needs one extra network call
            _, eps = _x0_and_eps(eps_fn, target, t_batch[i], a_t, clip_x0)
        # plain DDIM guess: x̂0 of the point below with the latest ε, renoised to ᾱ_t
        x0_hat = (target - eps * (1 - a_prev) ** 0.5) / a_prev ** 0.5
        x = x0_hat * a_t ** 0.5 + eps * (1 - a_t) ** 0.5
        gain = (a_t / a_prev) ** 0.5
        for _ in range(corrections):
            x0_k, eps = _x0_and_eps(eps_fn, x, t_batch[i], a_t, clip_x0)
            x = x - gain * (x0_k * a_prev ** 0.5 + eps * (1 - a_prev) ** 0.5 - target)
    return x
