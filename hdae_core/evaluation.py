"""Tables of results: reconstruction quality (HDAE Table 1), held-out direction scores, latent-DDIM sample quality.

Reconstruction: SSIM / LPIPS / MSE per model, DDIM steps T and x_T source.

Images are tensors in [-1, 1]; decoder outputs are clamped to [-1, 1] before scoring. The metrics are
``hdae_core.metrics``' per-image values (MSE on the [-1, 1] scale, 4× the [0, 1]-scale MSE of the
DiffAE/HDAE tables), averaged over the images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import latent, metrics
from .metrics import fid, frechet_distance, frechet_oracle_distance
from .stats import LatentStats
from .model import inference, model_device

__all__ = ["mean_colour", "mean_colour_mse", "reconstruction_table", "last_evaluation",
           "METRIC_COLUMNS", "score_table", "auroc_intervals", "mean_auroc", "frechet_references", "sample_quality"]

METRIC_COLUMNS = ("SSIM", "LPIPS", "MSE")


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """Each image replaced by its own per-channel mean colour (the trivial reconstruction)."""
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], got {list(images.shape)}")
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images)


def mean_colour_mse(images: torch.Tensor) -> torch.Tensor:
    """Per-image MSE [B] of the mean-colour reconstruction: the baseline a trained autoencoder must beat."""
    # float64 so a constant image scores exactly 0 rather than the rounding error of its mean
    x = images.double()
    return metrics.mse(x, mean_colour(x)).to(images.dtype if images.is_floating_point() else torch.float32)


def _scores(rec: torch.Tensor, x0: torch.Tensor, lpips_net: str | None) -> dict[str, torch.Tensor]:
    rec = rec.clamp(-1, 1)
    out = {"SSIM": metrics.ssim(rec, x0).float().cpu(), "MSE": metrics.mse(rec, x0).float().cpu()}
    out["LPIPS"] = (metrics.lpips(rec, x0, net=lpips_net).float().cpu() if lpips_net
                    else torch.full((x0.shape[0],), float("nan")))
    return out


def reconstruction_table(models: Mapping[str, torch.nn.Module], images: torch.Tensor,
                         steps: Sequence[int] = (10, 20, 50, 100), batch_size: int = 32,
                         lpips_net: str | None = "alex", seed: int = 0, progress: bool = True,
                         x_T: Sequence[str] = ("encoded", "random"), baseline: bool = False):
    """HDAE Table 1: a DataFrame with one row per (model, T, x_T) and mean SSIM, LPIPS, MSE.

    x_T ∈ {encoded, encoded_diffae, random}: "encoded" decodes from the DDIM-inverted x_T (T steps each way,
    the model's default refined inversion), "encoded_diffae" from DiffAE's own inversion (what the paper's
    table measures), "random" from N(0, I) noise drawn
    once from a generator seeded with ``seed`` and shared by every model and T, so the table is
    reproducible and the comparison paired. ``*_std`` columns hold the per-image standard deviation,
    ``n`` the number of images; ``baseline=True`` adds a "mean colour" row (T = 0, x_T "none").
    ``lpips_net=None`` skips LPIPS (NaN).
    """
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"images: expected [N, C, H, W] with N >= 1, got {list(images.shape)}")
    kinds = ("encoded", "encoded_diffae", "random")
    bad = [k for k in x_T if k not in kinds]
    if bad or not x_T:
        raise ValueError(f"x_T: expected a non-empty subset of {kinds}, got {tuple(x_T)}")
    steps = [int(s) for s in steps]
    if not steps or min(steps) < 1:
        raise ValueError(f"steps: expected positive DDIM step counts, got {steps}")
    N = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen, dtype=torch.float32)  # CPU: identical on any device

    scores: dict[tuple[str, int, str], list[dict[str, torch.Tensor]]] = {}
    batches = [(i, min(i + batch_size, N)) for i in range(0, N, batch_size)]
    bar = None
    if progress:
        bar = tqdm(total=len(models) * len(batches) * len(steps), desc="reconstruction", leave=False)
    for name, model in models.items():
        dev = model_device(model)
        dtype = next(model.parameters()).dtype
        with inference(model):
            for lo, hi in batches:
                x0 = images[lo:hi].to(device=dev, dtype=dtype)
                codes = model.encode(x0)  # the codes do not depend on T: encode once per batch
                for T in steps:
                    for kind in x_T:
                        if kind == "random":
                            xt = noise[lo:hi].to(device=dev, dtype=dtype)
                        else:
                            diffae = {"refine": 0} if kind == "encoded_diffae" else {}  # else the model's default
                            xt = model.encode_stochastic(x0, codes, T, **diffae)
                        rec = model.decode(xt, codes, T)
                        scores.setdefault((name, T, kind), []).append(_scores(rec.float(), x0.float(), lpips_net))
                    if bar is not None:
                        bar.update(1)
    if bar is not None:
        bar.close()
    if baseline:
        x = images.float()
        scores[("mean colour", 0, "none")] = [_scores(mean_colour(x), x, lpips_net)]

    rows = []
    for (name, T, kind), parts in scores.items():
        row = {"model": name, "T": T, "x_T": kind}
        for col in METRIC_COLUMNS:
            v = torch.cat([p[col] for p in parts]).double()
            row[col] = float(v.mean())
            row[f"{col}_std"] = float(v.std()) if v.numel() > 1 else float("nan")
        row["n"] = N
        rows.append(row)
    df = pd.DataFrame(rows, columns=["model", "T", "x_T", *METRIC_COLUMNS,
                                     *(f"{c}_std" for c in METRIC_COLUMNS), "n"])
    df.attrs.update(seed=seed, lpips_net=lpips_net, mse_scale="[-1, 1]")
    return df


# ---------------------------------------------------------------- training curves (Fig. 5)


def last_evaluation(runs: Mapping[str, "pd.DataFrame"], columns: Sequence[str], key: str = "run"):
    """One row per run: its last evaluated step and the ``columns`` there (NaN where a log lacks one)."""
    rows = []
    for name, df in runs.items():
        ev = df.dropna(subset=[columns[0]])
        last = ev.iloc[-1]
        rows.append({key: name, "step": int(last["step"]),
                     **{c: float(last[c]) if c in ev and pd.notna(last[c]) else float("nan") for c in columns}})
    return pd.DataFrame(rows, columns=[key, "step", *columns])


# ---------------------------------------------------------------- held-out scores of directions


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def score_table(directions: Mapping[str, Any]):
    """Held-out scores per attribute (rows) and model (columns): AUROC for binary attributes, R² for continuous."""
    cols = {}
    for label, d in directions.items():
        rep = d.meta.get("report", {})
        cols[label] = pd.Series({n: _nan(rep[n].get("r2") if rep[n].get("kind") == "continuous" else rep[n].get("auroc"))
                                 for n in d.names if n in rep}, dtype=float)
    df = pd.DataFrame(cols)
    kinds = {n: d.meta.get("report", {}).get(n, {}).get("kind", "binary") for d in directions.values() for n in d.names}
    df.insert(0, "score", ["R2" if kinds.get(n) == "continuous" else "AUROC" for n in df.index])
    df.index.name = "attribute"
    return df


def auroc_intervals(directions: Mapping[str, Any]):
    """Held-out AUROC and its 95 % bootstrap interval, one row per (model, attribute) with an AUROC."""
    rows = [{"model": label, "attribute": n, "auroc": r["auroc"], "low": r.get("auroc_low"), "high": r.get("auroc_high")}
            for label, d in directions.items() for n, r in d.meta.get("report", {}).items()
            if n in d.names and r.get("auroc") is not None]
    return pd.DataFrame(rows, columns=["model", "attribute", "auroc", "low", "high"])


def mean_auroc(clf) -> float:
    """Mean held-out AUROC over a classifier set's binary attributes (NaN when it has none)."""
    table = score_table({"m": clf})
    au = table.loc[table["score"] == "AUROC", "m"].dropna()
    return float(au.mean()) if len(au) else float("nan")


# ---------------------------------------------------------------- unconditional samples (latent DDIM)


def frechet_references(sampled: torch.Tensor, fit: torch.Tensor, ref: torch.Tensor, stats: LatentStats,
                       generator: torch.Generator | None = None) -> dict[str, float]:
    """Fréchet distances to held-out real codes ``ref`` (standardised, flattened): of the sampled codes, of the
    codes the latent DDIM was fitted on (the floor) and of independent N(0, 1) codes (the baseline to beat)."""
    def std(c):
        return stats.standardize(c).flatten(1)

    gauss = torch.randn((len(sampled), ref[0].numel()), generator=generator)
    return {"latent_ddim": frechet_distance(std(sampled), std(ref)), "real_codes": frechet_distance(std(fit), std(ref)),
            "independent_gaussian": frechet_distance(gauss, std(ref))}


@torch.no_grad()
def sample_quality(model, latent_model, stats: LatentStats, orc, real: torch.Tensor, n: int = 256,
                   latent_steps: int = 50, image_steps: int = 20, seed: int = 0, batch_size: int = 64,
                   inception_weights=None) -> dict[str, Any]:
    """Decoded latent-DDIM samples against real images ``real`` in [-1, 1], read by the attribute oracle ``orc``:
    attribute frequencies (samples; the data's, read on all 2·n real images; random-x_T reconstructions of
    ``real[:n]``, which tell the decoder's miss from the sampled codes'), the Fréchet oracle distance of samples
    and of random-x_T reconstructions of ``real[:n]`` to ``real[n:]``, and FID when ``inception_weights`` is given."""
    if len(real) < 2 * n:
        raise ValueError(f"real: need 2·n = {2 * n} images (n reconstructed, n as the reference), got {len(real)}")
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    samples, recon = [], []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        samples.append(latent.sample_images(model, latent_model, b, stats, latent_steps, image_steps, generator=g).float().cpu())
        x = real[i:i + b].to(p)
        x_T = torch.randn(x.shape, generator=g).to(p)
        recon.append(model.decode(x_T, model.encode(x), image_steps).float().cpu())
    samples, recon = torch.cat(samples).clamp(-1, 1), torch.cat(recon).clamp(-1, 1)
    pool = real[:2 * n].float().cpu()
    held, ref = pool[:n], pool[n:]
    names = list(orc.attribute_names)

    def rates(x):  # the oracle's frequency of every attribute in images x
        return dict(zip(names, (orc.predict_proba(x) > 0.5).float().mean(0).tolist()))

    return {"samples": samples, "n": n,
            # the data's from every real image given: 256 alone move an attribute's rate by ±0.03 (1 s.d.);
            # the reconstructions' give the decoder's own share of a sample's miss
            "frequency_samples": rates(samples), "frequency_data": rates(pool), "frequency_reconstructions": rates(recon),
            "frechet_oracle": {"latent_ddim": frechet_oracle_distance(orc, samples, ref),
                               "random_xT_reconstruction": frechet_oracle_distance(orc, recon, ref),
                               "real_images": frechet_oracle_distance(orc, held, ref)},
            "fid": fid(ref, samples, inception_weights)}
