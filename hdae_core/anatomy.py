"""The decoder taken apart for 00_tour: which code feeds which block, what the network outputs, the sampler's steps.

Everything here reads a built model (hooks, its own modules and schedule); nothing is typed in by hand, so the
tables stay true for any preset or variant.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import torch

from . import diffusion
from .nn import ResBlock


def _path(name: str) -> str:
    return {"input_blocks": "down", "middle_block": "middle", "output_blocks": "up"}[name.split(".")[0]]


def _role(block: ResBlock) -> str:
    return "downsampler" if block.down else "upsampler" if block.up else "ResBlock"


@torch.no_grad()
def decoder_blocks(model) -> pd.DataFrame:
    """One row per decoder ResBlock, in the order a forward pass meets them: its path (down / middle / up), role
    (ResBlock, downsampler, upsampler), resolution in → out (measured by a forward pass), channels and the code
    it reads (z¹ … z^L, or the one shared z of a DAE)."""
    dec, size = model.decoder, model.config.image_size
    names = {m: n for n, m in dec.named_modules() if isinstance(m, ResBlock)}
    seen: list[tuple[ResBlock, int, int, int]] = []
    hooks = [m.register_forward_hook(lambda m, a, out: seen.append((m, a[0].shape[-1], out.shape[-1], out.shape[1])))
             for m in names]
    try:
        x = torch.zeros(1, model.config.in_channels, size, size, dtype=next(dec.parameters()).dtype)
        codes = torch.zeros(1, model.num_levels, model.code_dim, dtype=x.dtype)
        dec(x, torch.zeros(1, dtype=torch.long), codes)
    finally:
        for h in hooks:
            h.remove()
    shared = model.num_levels == 1
    return pd.DataFrame([{
        "block": names[m], "path": _path(names[m]), "role": _role(m), "resolution in": r_in, "resolution out": r_out,
        "channels": ch, "level": m.level, "code": "z (shared)" if shared else f"z{m.level + 1}",
    } for m, r_in, r_out, ch in seen])


def level_table(model) -> pd.DataFrame:
    """Level → decoder blocks → resolution: for each code level, the resolution of the ResBlocks that read it, how
    many of them sit on the down path, in the middle block and on the up path, the resamplers it modulates
    (a resampler belongs to the coarser of its two resolutions) and the blocks' channel widths."""
    blocks = decoder_blocks(model)
    rows = []
    for level, b in blocks.groupby("level", sort=True):
        res = b[b["role"] == "ResBlock"]

        def count(path):
            return int((res["path"] == path).sum())

        def resampler(role):
            r = b[b["role"] == role]
            return ", ".join(f"{i}²→{o}²" for i, o in zip(r["resolution in"], r["resolution out"]))

        rows.append({
            "level": level, "code": b["code"].iloc[0],
            "resolution": " / ".join(f"{r}²" for r in sorted(set(res["resolution in"]), reverse=True)),
            "down ResBlocks": count("down"), "middle ResBlocks": count("middle"), "up ResBlocks": count("up"),
            "downsampler": resampler("downsampler"), "upsampler": resampler("upsampler"),
            "channels": "/".join(str(c) for c in sorted(set(b["channels"]))),
        })
    return pd.DataFrame(rows).set_index("level")


@torch.no_grad()
def predictions(model, x0: torch.Tensor, codes: torch.Tensor, ts: Sequence[int], noise: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """For one noise ``noise`` at each timestep of ``ts``: x_t, the network's raw output (ε or v, as the model's
    ``prediction``), and the ε̂ and x̂0 it implies, each [len(ts), B, C, H, W]."""
    ab = model.alphas_cumprod
    out: dict[str, list[torch.Tensor]] = {"x_t": [], "output": [], "eps": [], "x0": []}
    for t in ts:
        tt = torch.full((len(x0),), int(t), dtype=torch.long)
        x_t = diffusion.q_sample(x0, tt, noise, ab)
        raw = model.decoder(x_t, tt, codes)
        eps = diffusion.v_to_eps(raw, x_t, tt, ab) if model.config.prediction == "v" else raw
        a = float(ab[int(t)])
        for k, v in (("x_t", x_t), ("output", raw), ("eps", eps), ("x0", (x_t - (1 - a) ** 0.5 * eps) / a ** 0.5)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


@torch.no_grad()
def decode_states(model, x_T: torch.Tensor, codes: torch.Tensor, steps: int) -> tuple[list[tuple[int, torch.Tensor]],
                                                                                     torch.Tensor]:
    """The (t, x_t) pairs ``model.decode`` steps from, recorded at each network call of the same sampler call, and
    its result x0: states[1] is what the first DDIM step made of x_T."""
    eps_fn, states = model.eps_fn(codes), []

    def recording(x_t, t):
        states.append((int(t[0]), x_t.clone()))
        return eps_fn(x_t, t)

    x0 = diffusion.ddim_sample(recording, x_T, model.alphas_cumprod, model.timesteps(steps))
    return states, x0


@torch.no_grad()
def inversion_round_trips(model, x0: torch.Tensor, codes: torch.Tensor, steps: int,
                          refines: Sequence[int] = (0, 1)) -> tuple[pd.DataFrame, dict[int, tuple[torch.Tensor,
                                                                                                torch.Tensor]]]:
    """For each ``refine`` (0: DiffAE's ``ddim_invert``; k: ``ddim_invert_refined`` with k corrections): the network
    calls of the inversion, x_T's mean and std and the decode's MSE to x0; and (x_T, its decode) by ``refine``."""
    rows, decoded = [], {}
    for k in refines:
        calls = [0]
        eps_fn = model.eps_fn(codes)

        def counting(x_t, t, eps_fn=eps_fn):
            calls[0] += 1
            return eps_fn(x_t, t)

        args = (counting, x0, model.alphas_cumprod, model.timesteps(steps))
        x_T = diffusion.ddim_invert(*args) if k == 0 else diffusion.ddim_invert_refined(*args, corrections=k)
        decoded[k] = x_T, model.decode(x_T, codes, steps)
        rows.append({"inversion": "ddim_invert (DiffAE)" if k == 0 else f"ddim_invert_refined, refine={k}",
                     "refine": k, "network calls": calls[0], "x_T mean": float(x_T.mean()),
                     "x_T std": float(x_T.std()),
                     "round-trip MSE": float((decoded[k][1].clamp(-1, 1) - x0).pow(2).mean())})
    return pd.DataFrame(rows).set_index("refine"), decoded


def code_spread(codes: torch.Tensor) -> pd.DataFrame:
    """Per level, how unlike one another the raw code's dimensions are over a set of codes [N, L, D]: the range of
    their stds, and how far their means sit from 0 in units of their own std (what ``LatentStats`` removes)."""
    rows = []
    for level in range(codes.shape[1]):
        c = codes[:, level].double()
        mean, std = c.mean(0), c.std(0).clamp_min(1e-12)
        rows.append({"level": f"z{level + 1}", "std: min": float(std.min()), "std: median": float(std.median()),
                     "std: max": float(std.max()), "std max / min": float(std.max() / std.min()),
                     "|mean| / std: max": float((mean.abs() / std).max())})
    return pd.DataFrame(rows).set_index("level")


@torch.no_grad()
def xT_grid(model, x0: torch.Tensor, codes: torch.Tensor, x_T: torch.Tensor, steps: int,
            generator: torch.Generator | None = None) -> dict[str, Any]:
    """A's codes (image i) decoded from A's own x_T, from B's x_T (image i + 1, cyclically) and from a random x_T.

    Returns the decodes by column ({"own x_T", "B's x_T", "random x_T"}: [B, C, H, W] each, clamped), the index of
    each row's B, and the mean MSE of each column to A and to B."""
    b = torch.roll(torch.arange(len(x0)), -1)
    x_rand = diffusion.randn(x_T.shape, generator, x_T.device, x_T.dtype)
    n = len(x0)
    dec = model.decode(torch.cat([x_T, x_T[b], x_rand]), codes.repeat(3, 1, 1), steps).clamp(-1, 1)
    cols = dict(zip(("own x_T", "B's x_T", "random x_T"), dec.split(n)))
    mse = {name: {"to A": float((d - x0).pow(2).mean()), "to B": float((d - x0[b]).pow(2).mean())}
           for name, d in cols.items()}
    return {"decoded": cols, "b": b.tolist(), "mse": mse}
