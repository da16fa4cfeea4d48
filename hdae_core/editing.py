"""Arithmetic on codes [B, L, D]: truncated directions, edits, style mixing, interpolation.

HDAE §3.3: an edit moves an image's standardised code along an attribute direction n (fitted in
``hdae_core.directions``); *truncated features* (Eq. 1–2) keep its k most important entries; the step
is α·√(D·L)·n′/‖n′‖, and the edited codes decode with the image's own x_T. Level indices are 0-based
(index 0 = z¹, the finest level; the paper's z^l is index l−1).
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

import torch

from .model import inference
from .stats import LatentStats

__all__ = [
    "LatentStats", "STEP_RULES", "check_codes", "check_levels", "normalized_weights", "truncate", "manipulate", "edit_images",
    "mix_levels", "style_mix_grid", "style_mix_labels", "slerp", "interpolate", "interpolate_images",
]


# ---------------------------------------------------------------- helpers


def check_codes(codes: torch.Tensor, name: str = "codes") -> None:
    """Codes are one floating-point tensor [B, L, D] of finite values (ValueError / TypeError naming ``name``)."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        got = list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{name}: expected codes [B, L, D], got {got}")
    if not codes.is_floating_point():
        raise TypeError(f"{name}: expected floating-point codes, got {codes.dtype}")
    if not bool(torch.isfinite(codes).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_levels(levels: int | Iterable[int], num_levels: int, name: str = "levels") -> list[int]:
    """Validated, distinct 0-based level indices (an int or an iterable of ints), in the order given."""
    valid = f"0..{num_levels - 1} (0 = z¹, the finest; {num_levels - 1} = z^L, the coarsest)"
    if isinstance(levels, numbers.Integral):
        items = [levels]
    elif isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"{name}: expected a 0-based integer level index or a list of them, each in {valid}, "
                        f"got {type(levels).__name__} {levels!r}")
    else:
        items = list(levels)
    out = []
    for lv in items:
        if isinstance(lv, bool) or not isinstance(lv, numbers.Integral):
            raise ValueError(f"{name}: expected 0-based integer level indices in {valid}, got {lv!r}")
        if not 0 <= int(lv) < num_levels:
            raise ValueError(f"{name}: level {int(lv)} out of range; codes have L={num_levels} levels, "
                             f"valid indices are {valid}")
        out.append(int(lv))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {out}: indices must be distinct, each in {valid}")
    return out


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision codes are edited in float32 so the step's norm is exact to float32 precision
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- truncated features (Eq. 1–2)


def normalized_weights(n: torch.Tensor) -> torch.Tensor:
    """Eq. 1: n̂ = (|n| − min|n|) / (max|n| − min|n|) over all entries, same shape; all ones when |n| is constant."""
    a = torch.as_tensor(n).abs()
    if a.numel() == 0:
        raise ValueError("normalized_weights: empty direction")
    lo, hi = a.min(), a.max()
    if hi == lo:
        # Eq. 1 is 0/0 here; every entry is equally important, so each gets the top weight 1
        return torch.ones_like(a, dtype=a.dtype if a.is_floating_point() else torch.float32)
    return (a - lo) / (hi - lo)


def truncate(n: torch.Tensor, k: int | None) -> torch.Tensor:
    """Eq. 2: keep the n_i whose n̂_i is among the top k (exactly k; ties go to the lower flat index), zero the rest."""
    n = torch.as_tensor(n)
    if k is None:
        return n.clone()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= n.numel():
        raise ValueError(f"k: expected an integer in [1, {n.numel()}] (the direction's size) or None, got {k!r}")
    # n̂ is a monotone map of |n|, so ranking |n| picks the same entries without Eq. 1's rounding ties
    order = torch.sort(n.abs().flatten(), descending=True, stable=True).indices
    keep = torch.zeros(n.numel(), dtype=torch.bool, device=n.device)
    keep[order[: int(k)]] = True
    return torch.where(keep.view_as(n), n, torch.zeros_like(n))


# ---------------------------------------------------------------- manipulation


def _edit_direction(direction: torch.Tensor, L: int, D: int, k: int | None, levels,
                    with_untruncated: bool = False):
    """n′ as [L, D]: restricted to ``levels`` first, then truncated to its top k entries (Eq. 2); with
    ``with_untruncated`` the pair (n′, n restricted to ``levels`` but not truncated)."""
    d = torch.as_tensor(direction)
    if d.numel() != L * D or d.dim() not in (1, 2) or (d.dim() == 2 and tuple(d.shape) != (L, D)):
        raise ValueError(f"direction: expected shape [L, D] = [{L}, {D}] (or [{L * D}] flat) to match the codes, "
                         f"got {list(d.shape)}")
    d = d.reshape(L, D)
    if levels is not None:
        lv = check_levels(levels, L)
        if not lv:
            raise ValueError("levels: empty; give at least one level index, or None for every level")
        mask = torch.zeros(L, 1, dtype=torch.bool, device=d.device)
        mask[lv] = True
        d = torch.where(mask, d, torch.zeros_like(d))
        # truncating after the restriction keeps exactly k entries inside the chosen levels
        if k is not None:
            limit = len(set(lv)) * D
            if isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > limit:
                raise ValueError(f"k: expected an integer in [1, {limit}] (entries in levels {sorted(set(lv))}), got {k}")
    return (truncate(d, k), d) if with_untruncated else truncate(d, k)


STEP_RULES = ("renormalised", "masked")


def manipulate(codes: torch.Tensor, direction: torch.Tensor, alpha, stats: LatentStats, k: int | None = None,
               levels: int | Sequence[int] | None = None, step_rule: str = "renormalised") -> torch.Tensor:
    """Edited codes [B, L, D]: standardise, add α·√(D·L)·n′/‖n′‖ (HDAE §3.3, n′ from Eq. 2), de-standardise.

    n′ is ``direction`` zeroed outside ``levels`` (0-based; None = all) and then truncated to its top ``k``
    entries (None = all). ``alpha`` is a number or one value per code [B]. ``step_rule``: "renormalised"
    (the step above: a truncated edit is as long as the untruncated one) or "masked" (α·√(D·L)·n′/‖n‖, n
    before truncation: the untruncated step with the dropped entries zeroed, hence shorter). The paper does
    not say which; the two differ only in the step's length, so masked(α) = renormalised(α·‖n′‖/‖n‖).
    """
    check_codes(codes)
    B, L, D = codes.shape
    if tuple(stats.shape) != (L, D):
        raise ValueError(f"stats: the codes are [B, L, D] = [B, {L}, {D}], so statistics for [{L}, {D}] were "
                         f"expected; got statistics for {list(stats.shape)} (from another model?)")
    wdt = _work_dtype(codes.dtype)
    a = torch.as_tensor(alpha, dtype=wdt, device=codes.device)
    if not torch.isfinite(a).all():
        raise ValueError(f"alpha: expected finite values, got {alpha!r}")
    if a.dim() > 1 or (a.dim() == 1 and a.numel() not in (1, B)):
        raise ValueError(f"alpha: expected a number or one value per code [{B}], got shape {list(a.shape)}")
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule: expected one of {STEP_RULES}, got {step_rule!r}")
    n, full = (t.to(device=codes.device, dtype=wdt) for t in _edit_direction(direction, L, D, k, levels, True))
    norm = torch.linalg.vector_norm(n)
    if norm == 0:
        raise ValueError("direction: zero after restricting to levels / truncating; nothing to move along")
    if step_rule == "masked":
        norm = torch.linalg.vector_norm(full)
    step = math.sqrt(D * L) * n / norm
    # destandardize(standardize(z) + s) = z + σ·s: adding σ·s directly leaves untouched entries (α = 0,
    # other levels, truncated coordinates) bit-exact instead of round-tripping them through (z − μ)/σ
    std = stats.std.to(device=codes.device, dtype=wdt)
    return (codes.to(wdt) + a.reshape(-1, 1, 1) * (step * std)).to(codes.dtype)


def edit_images(model, x0: torch.Tensor, direction: torch.Tensor, alpha, stats: LatentStats, k: int | None = None,
                levels: int | Sequence[int] | None = None, steps: int = 100, x_T: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> torch.Tensor:
    """Edited images (HDAE §3.3): ``manipulate`` the codes, decode with the image's own x_T (inverted once if not given)."""
    with inference(model):
        codes = model.encode(x0) if codes is None else codes
        if x_T is None:
            x_T = model.encode_stochastic(x0, codes, steps)
        return model.decode(x_T, manipulate(codes, direction, alpha, stats, k=k, levels=levels), steps)


# ---------------------------------------------------------------- style mixing


def mix_levels(codes_a: torch.Tensor, codes_b: torch.Tensor, levels: int | Iterable[int]) -> torch.Tensor:
    """Codes of A with the given levels (0-based, 0 = z¹) taken from B; a batch of 1 broadcasts against the other."""
    check_codes(codes_a, "codes_a")
    check_codes(codes_b, "codes_b")
    (Ba, L, D), Bb = codes_a.shape, codes_b.shape[0]
    if tuple(codes_b.shape[1:]) != (L, D) or (Ba != Bb and 1 not in (Ba, Bb)):
        raise ValueError(f"codes_b: expected [B, {L}, {D}] like codes_a {list(codes_a.shape)} (or a batch of 1), "
                         f"got {list(codes_b.shape)}")
    lv = check_levels(levels, L)
    B = max(Ba, Bb)
    out = codes_a.expand(B, L, D).clone()
    if lv:
        out[:, lv] = codes_b.expand(B, L, D)[:, lv].to(out.dtype)
    return out


def style_mix_grid(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 100, order: str = "low_to_high",
                   x_T: str | torch.Tensor = "a") -> torch.Tensor:
    """Style mixing (HDAE Fig. 7): images [L+1, B, C, H, W]; entry j has the paper's z¹..z^j from B, the rest from A.

    Entry j uses 0-based levels 0..j−1 from B (``order="high_to_low"``: the top j levels), so entry 0
    decodes A's codes and entry L decodes B's codes, all from the same x_T: A's inverted noise by
    default (``x_T="a"``), B's (``"b"``) or a given tensor.
    """
    if order not in ("low_to_high", "high_to_low"):
        raise ValueError(f"order: expected 'low_to_high' or 'high_to_low', got {order!r}")
    with inference(model):
        codes_a, codes_b = model.encode(x_a), model.encode(x_b)
        if isinstance(x_T, str):
            if x_T not in ("a", "b"):
                raise ValueError(f"x_T: expected 'a', 'b' or a tensor, got {x_T!r}")
            src_x, src_c = (x_a, codes_a) if x_T == "a" else (x_b, codes_b)
            x_T = model.encode_stochastic(src_x, src_c, steps)
        L, B = model.num_levels, max(codes_a.shape[0], codes_b.shape[0])
        rows = []
        for j in range(L + 1):
            lv = list(range(j)) if order == "low_to_high" else list(range(L - j, L))
            rows.append(mix_levels(codes_a, codes_b, lv))
        # one decode for the whole grid: DDIM is per-sample, so batching changes nothing but speed
        codes = torch.cat(rows)
        x_T_all = x_T.expand(B, *x_T.shape[1:]).repeat(L + 1, 1, 1, 1)
        out = model.decode(x_T_all, codes, steps)
    return out.reshape(L + 1, B, *out.shape[1:])


def style_mix_labels(num_levels: int, order: str = "low_to_high") -> list[str]:
    """Column labels of a style-mixing row: A, A's codes decoded (every level from A), the L − 1 partial mixes,
    every level from B, B."""
    L = num_levels
    if L == 1:
        mixes = []  # one level: A's code, then B's
    elif order == "low_to_high":
        mixes = ["z1 from B"] + [f"z1..z{j} from B" for j in range(2, L)]
    else:
        mixes = [f"z{L} from B"] + [f"z{L - j + 1}..z{L} from B" for j in range(2, L)]
    return ["A", "all from A", *mixes, "all from B", "B"]


# ---------------------------------------------------------------- interpolation


def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation per sample over flattened dims (DiffAE's x_T interpolation); t a number or [N].

    a, b are [N, ...] (a batch of 1 broadcasts); the angle comes from the normalised vectors, and
    (anti)parallel pairs, where sin θ ≈ 0, fall back to linear interpolation. t = 0 gives a, t = 1 gives b.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"slerp: a {list(a.shape)} and b {list(b.shape)} differ beyond the batch dimension")
    a2, b2 = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    tt = torch.as_tensor(t, dtype=torch.float64, device=a.device).reshape(-1, 1)
    cos = (a2 * b2).sum(1, keepdim=True) / (
        torch.linalg.vector_norm(a2, dim=1, keepdim=True) * torch.linalg.vector_norm(b2, dim=1, keepdim=True))
    theta = torch.arccos(cos.clamp(-1, 1))
    s = torch.sin(theta)
    ok = s.abs() > 1e-6
    safe = torch.where(ok, s, torch.ones_like(s))
    ca = torch.where(ok, torch.sin((1 - tt) * theta) / safe, 1 - tt)
    cb = torch.where(ok, torch.sin(tt * theta) / safe, tt)
    out = ca * a2 + cb * b2
    return out.to(a.dtype).reshape(out.shape[0], *a.shape[1:])


def _one(x: torch.Tensor, dims: int, name: str) -> torch.Tensor:
    if x.dim() == dims:
        return x.unsqueeze(0)
    if x.dim() == dims + 1 and x.shape[0] == 1:
        return x
    raise ValueError(f"{name}: expected one sample ({dims}-d, or {dims + 1}-d with a batch of 1), got {list(x.shape)}")


def interpolate(codes_a: torch.Tensor, codes_b: torch.Tensor, x_T_a: torch.Tensor, x_T_b: torch.Tensor,
                n_frames: int, path: str | tuple = "low_to_high", x_T_path: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Controllable interpolation (HDAE §4): codes [F, L, D] moved level by level (linearly), x_T [F, C, H, W] by slerp.

    ``path``: "low_to_high" moves level 0 (z¹) from A to B over the first 1/L of the frames, then level 1, …;
    "high_to_low" the reverse; "all" every level at once (plain interpolation, also what L = 1 gives);
    ("level", l) moves level l alone, so the last frame is A with level l from B. ``x_T_path``: "global"
    (slerp over all frames; the default, except for ("level", l)), "finest" (x_T moves together with
    level 0) or "fixed" (A's x_T throughout; the default for ("level", l)). Frame 0 is exactly A.
    """
    ca, cb = _one(codes_a, 2, "codes_a"), _one(codes_b, 2, "codes_b")
    xa, xb = _one(x_T_a, 3, "x_T_a"), _one(x_T_b, 3, "x_T_b")
    if ca.shape != cb.shape:
        raise ValueError(f"codes_b: expected {list(ca.shape[1:])} like codes_a, got {list(cb.shape[1:])}")
    if xa.shape != xb.shape:
        raise ValueError(f"x_T_b: expected {list(xa.shape[1:])} like x_T_a, got {list(xb.shape[1:])}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, numbers.Integral) or n_frames < 2:
        raise ValueError(f"n_frames: expected an integer >= 2 (the two endpoints included), got {n_frames!r}")
    L = ca.shape[1]
    single = isinstance(path, (tuple, list)) and len(path) == 2 and path[0] == "level"
    if single:
        stages = [check_levels([path[1]], L, "path level")]
    elif path == "low_to_high":
        stages = [[lv] for lv in range(L)]
    elif path == "high_to_low":
        stages = [[lv] for lv in reversed(range(L))]
    elif path == "all":
        stages = [list(range(L))]
    else:
        raise ValueError(f"path: expected 'low_to_high', 'high_to_low', 'all' or ('level', l), got {path!r}")
    x_T_path = x_T_path or ("fixed" if single else "global")
    if x_T_path not in ("global", "finest", "fixed"):
        raise ValueError(f"x_T_path: expected 'global', 'finest' or 'fixed', got {x_T_path!r}")

    s = torch.linspace(0, 1, n_frames, dtype=torch.float64)
    # stage p runs over s ∈ [p/S, (p+1)/S]; its local weight is clamped to [0, 1] outside that span
    S = len(stages)
    t_level = torch.zeros(n_frames, L, dtype=torch.float64)
    for p, lv in enumerate(stages):
        t_level[:, lv] = (s * S - p).clamp(0, 1)[:, None]
    wdt = _work_dtype(ca.dtype)
    w = t_level.to(device=ca.device, dtype=wdt)[:, :, None]
    # torch.lerp is exact at both ends (it computes from the nearer endpoint)
    codes = torch.lerp(ca.to(wdt).expand(n_frames, -1, -1), cb.to(wdt).expand(n_frames, -1, -1), w).to(ca.dtype)
    if x_T_path == "global":
        t_x = s
    elif x_T_path == "finest":
        t_x = t_level[:, 0]
    else:
        t_x = torch.zeros(n_frames, dtype=torch.float64)
    x_T = slerp(xa, xb, t_x)
    # endpoints are the inputs themselves, not a float recomputation of them
    codes[0], x_T[0] = ca[0], xa[0]
    if not single:
        codes[-1] = cb[0]
    if x_T_path != "fixed":
        x_T[-1] = xb[0]
    return codes, x_T


def interpolate_images(model, x_a: torch.Tensor, x_b: torch.Tensor, n_frames: int, path: str | tuple = "low_to_high",
                       steps: int = 100, x_T_path: str | None = None) -> torch.Tensor:
    """Frames [F, C, H, W] of ``interpolate`` between two images (each [C, H, W] or [1, C, H, W]), decoded with DDIM."""
    x_a, x_b = _one(x_a, 3, "x_a"), _one(x_b, 3, "x_b")
    with inference(model):
        codes = model.encode(torch.cat([x_a, x_b]))
        x_T = model.encode_stochastic(torch.cat([x_a, x_b]), codes, steps)
        c, xt = interpolate(codes[:1], codes[1:], x_T[:1], x_T[1:], n_frames, path, x_T_path)
        return model.decode(xt, c, steps)
