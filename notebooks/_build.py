"""Write the analysis notebooks (00–06, 08, 09) from this file, without outputs.

    python notebooks/_build.py          # (re)write them
    python notebooks/_build.py --check  # exit 1 when a stored notebook differs from what this file builds

Each notebook: a markdown title, a code cell tagged ``parameters`` (what papermill and
``hdae_core.pipeline.PROFILES`` set), a set-up cell, then thin cells calling ``hdae_core``.
Every notebook writes PNGs, CSVs and ``metrics.json`` into its ``out_dir``.
07_editor.ipynb is written by hand elsewhere and is not touched here.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def md(src: str):
    return ("markdown", textwrap.dedent(src).strip("\n"))


def code(src: str):
    return ("code", textwrap.dedent(src).strip("\n"))


def params(src: str):
    return ("parameters", textwrap.dedent(src).strip("\n"))


def setup(*extra_imports: str):
    """The shared set-up cell: imports, one torch thread, the output folder and the metrics dict."""
    lines = [
        "%matplotlib inline",
        "import json",
        "import time",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "import pandas as pd",
        "import torch",
        "from IPython.display import Image, Markdown, display",
        "",
        "from hdae_core import plots, pretrained",
        "from hdae_core.data import Shapes",
        "from hdae_core.pipeline import save_metrics",
        *extra_imports,
        "",
        "torch.set_num_threads(threads)  # the suite runs beside other jobs; small convolutions gain little from more",
        "torch.manual_seed(seed)",
        "report = pretrained.repo_path(out_dir)",
        "report.mkdir(parents=True, exist_ok=True)",
        "metrics = {'profile': profile}",
        "t_start = time.perf_counter()",
    ]
    return ("code", "\n".join(lines))


FINISH = code("""
    metrics['seconds'] = round(time.perf_counter() - t_start, 1)
    save_metrics(report, metrics)
    print(json.dumps(metrics, indent=1, default=str)[:3000])
""")

COMMON_PARAMS = '''
out_dir = "reports/{name}"  # figures, tables and metrics.json go here (relative paths: from the repository root)
seed = 0
profile = "full"  # recorded in metrics.json
threads = 1  # torch threads
'''


def nb_params(name: str, body: str):
    return params(textwrap.dedent(body).strip("\n") + "\n" + COMMON_PARAMS.strip("\n").format(name=name))


NOTEBOOKS: dict[str, list] = {}

# ====================================================================== 00 tour
NOTEBOOKS["00_tour"] = [
    md("""
    # 00 · A tour of the (hierarchical) diffusion autoencoder

    This notebook follows a few images through the shipped HDAE(U) demo model, one step at a time:

    1. the **semantic encoder** turns an image into codes, one per resolution level;
    2. the **forward process** adds noise: what a noise level *t* looks like;
    3. **DDIM inversion** runs the decoder backwards to the noise x_T that regenerates the image;
    4. **decoding** turns (x_T, codes) back into the image — and shows what the codes fix on their own;
    5. **what each level holds**: swap one level of the code with another image's and look.

    The model was trained on `Shapes`, a procedural data set of one coloured shape on a lit,
    textured background: colour, stripes, background and lighting are *low-level* factors;
    shape, size, position and rotation are *high-level* ones.
    """),
    nb_params("00_tour", """
    checkpoint_hdae = "shapes32_hdae_u"  # a name under data/pretrained, or a checkpoint folder
    n_images = 4  # images followed through the tour
    steps = 20  # DDIM steps for inversion and decoding
    """),
    setup("from hdae_core import diffusion", "from hdae_core.editing import mix_levels"),
    code("""
    model = pretrained.load(checkpoint_hdae)
    cfg = model.config
    L, D = model.num_levels, model.code_dim
    scale = max(1, 96 // cfg.image_size)  # enlarge small images in the figures
    print(f"variant {cfg.variant}: {cfg.image_size} px images, codes of L = {L} levels x D = {D}")
    data = Shapes(size=cfg.image_size, seed=10_000)  # a seed the model never trained on
    batch = data.batch(list(range(n_images)))
    x0 = batch["image"]
    for i in range(n_images):
        on = [n for n, a in zip(data.attribute_names, batch["attributes"][i]) if a > 0.5]
        print(f"image {i}: {', '.join(on)}")
    display(plots.labeled_grid([x0], col_labels=[f"image {i}" for i in range(n_images)], scale=scale))
    metrics.update(variant=cfg.variant, image_size=cfg.image_size, num_levels=L, code_dim=D)
    """),
    md("""
    ## 1 · Encode: the semantic code

    `model.encode(x0)` returns a tensor `[B, L, D]`. For HDAE, row 0 (z¹) is pooled from the finest,
    full-resolution features and row L−1 (z^L) from the coarsest ones. A plain DAE has L = 1: one
    vector for everything. Below: how far apart two images' codes are, level by level, relative to
    the codes' own size.
    """),
    code("""
    with torch.no_grad():
        codes = model.encode(x0)
    print("codes:", tuple(codes.shape))
    if n_images > 1:
        dist = (codes[0] - codes[1]).norm(dim=-1) / codes[:2].norm(dim=-1).mean(0)
        display(pd.DataFrame({"level": [f"z{l + 1}" for l in range(L)],
                              "|z_a - z_b| / |z|, images 0 and 1": dist.numpy().round(3)}))
    """),
    md("""
    ## 2 · Noise levels: the forward process

    Training noises an image to `x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε` at a random t and asks the
    decoder to predict ε, given x_t, t and the codes. ᾱ_t falls from 1 to almost 0 over T = 1000
    steps (linear β from 1e-4 to 0.02): by t ≈ 500 little of the image is left, and what the decoder
    must fill in comes from the codes. (Column labels: t and ᾱ_t, written `abar`.)
    """),
    code("""
    ts = [0, 50, 150, 300, 500, 750, 999]
    ab = model.alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g)
    noisy = [diffusion.q_sample(x0, torch.full((n_images,), t), eps, ab) for t in ts]
    rows = [torch.stack([x[i] for x in noisy]) for i in range(n_images)]
    plots.save_labeled_grid(report / "noising.png", [r.clamp(-1, 1) for r in rows],
                            row_labels=[f"image {i}" for i in range(n_images)],
                            col_labels=[f"t={t} abar={float(ab[t]):.2f}" for t in ts], scale=scale)
    display(Image(filename=str(report / "noising.png")))
    metrics["signal_fraction_sqrt_alpha_bar"] = {str(t): float(ab[t].sqrt()) for t in ts}
    """),
    md("""
    ## 3 · DDIM inversion: x0 → x_T

    DDIM with η = 0 is deterministic, so it can be run backwards: starting at x0 and stepping *up*
    the noise levels with the decoder's ε predictions gives the x_T from which DDIM regenerates x0.
    DiffAE calls this the *stochastic encoder*. x_T looks like noise (mean ≈ 0, std ≈ 1) but still
    carries the image's layout and fine detail.
    """),
    code("""
    with torch.no_grad():
        x_T = model.encode_stochastic(x0, codes, steps)
        rec = model.decode(x_T, codes, steps)
    plots.save_labeled_grid(report / "inversion.png", [x0, plots.noise_to_image(x_T), rec],
                            row_labels=["x0", "x_T (inverted)", "decoded"], scale=scale)
    display(Image(filename=str(report / "inversion.png")))
    metrics["xT_mean"] = float(x_T.mean())
    metrics["xT_std"] = float(x_T.std())
    metrics["recon_mse_encoded"] = float((rec.clamp(-1, 1) - x0).pow(2).mean())
    print(f"x_T mean {metrics['xT_mean']:.3f}, std {metrics['xT_std']:.3f}; "
          f"reconstruction MSE {metrics['recon_mse_encoded']:.4f} with {steps} DDIM steps")
    """),
    md("""
    ## 4 · Decoding from random noise: what the codes fix by themselves

    Decode each image's codes from fresh N(0, I) noise instead of its own x_T. Whatever stays the
    same across the columns is held by the codes; whatever changes was in x_T.
    """),
    code("""
    n_noise = 4
    g = torch.Generator().manual_seed(seed + 1)
    x_rand = torch.randn((n_images * n_noise, *x0.shape[1:]), generator=g)
    with torch.no_grad():
        dec = model.decode(x_rand, codes.repeat_interleave(n_noise, 0), steps)
    dec = dec.reshape(n_images, n_noise, *x0.shape[1:])
    rows = [torch.cat([x0[i:i + 1], rec[i:i + 1], dec[i]]) for i in range(n_images)]
    plots.save_labeled_grid(report / "random_noise.png", rows, row_labels=[f"image {i}" for i in range(n_images)],
                            col_labels=["x0", "own x_T"] + [f"noise {j + 1}" for j in range(n_noise)], scale=scale)
    display(Image(filename=str(report / "random_noise.png")))
    metrics["recon_mse_random"] = float((dec.clamp(-1, 1) - x0[:, None]).pow(2).mean())
    print(f"MSE to x0 from random x_T: {metrics['recon_mse_random']:.4f} (own x_T: {metrics['recon_mse_encoded']:.4f})")
    """),
    md("""
    ## 5 · What each level holds

    Take image A's codes, replace **one** level with image B's, and decode with A's own x_T. For an
    HDAE, swapping z¹ (the finest level) should bring B's colours, texture and background; swapping
    z^L (the coarsest) B's shape and geometry. The table measures how much each swap changes A's
    reconstruction (pixel MSE).
    """),
    code("""
    pairs = [(i, (i + 1) % n_images) for i in range(n_images)] if n_images > 1 else [(0, 0)]
    a_idx, b_idx = [a for a, _ in pairs], [b for _, b in pairs]
    swapped = [mix_levels(codes[a_idx], codes[b_idx], [l]) for l in range(L)]
    with torch.no_grad():
        dec = model.decode(x_T[a_idx].repeat(L + 1, 1, 1, 1),
                           torch.cat(swapped + [codes[b_idx]]), steps).reshape(L + 1, len(pairs), *x0.shape[1:])
    rows = [torch.cat([x0[a:a + 1], rec[a:a + 1], dec[:, p], x0[b:b + 1]]) for p, (a, b) in enumerate(pairs)]
    plots.save_labeled_grid(report / "level_swap.png", rows, row_labels=[f"A={a}, B={b}" for a, b in pairs],
                            col_labels=["A", "A decoded"] + [f"z{l + 1} from B" for l in range(L)]
                            + ["all from B", "B"], scale=scale)
    display(Image(filename=str(report / "level_swap.png")))
    change = [(dec[l] - rec[a_idx]).pow(2).mean().item() for l in range(L + 1)]
    metrics["level_swap_change_mse"] = {f"z{l + 1}": change[l] for l in range(L)}
    metrics["level_swap_change_mse"]["all"] = change[L]
    display(pd.DataFrame({"swapped": list(metrics["level_swap_change_mse"]), "MSE to A decoded": change}))
    """),
    FINISH,
]

# ====================================================================== 01 train
NOTEBOOKS["01_train"] = [
    md("""
    # 01 · Train a variant

    One call to `hdae_core.train.train(TrainConfig(...))` — the same loop as `hdae train` — then
    the curves from the run's `metrics.csv`: the ε loss, and the evaluation MSE / LPIPS of the EMA
    model reconstructing a held-out batch from its **encoded** x_T (DDIM inversion) and from a
    **random** x_T (codes only). Raise `steps` (and pick `preset = "shapes32"`) for a real model;
    the shipped demo models are the same call run for much longer.
    """),
    nb_params("01_train", """
    preset = "shapes32"  # tiny | shapes32 | diffae32 | ffhq64 | ffhq128 | ffhq256
    variant = "hdae_u"  # dae | dae_wide | dae_u | hdae_e | hdae_u
    steps = 2000  # training steps
    batch_size = 32
    lr = 3e-4
    data = None  # None: the built-in shapes; or an image folder / DiffAE LMDB
    out = "runs/01_train"  # the run folder: checkpoint/, metrics.csv, grids/
    resume = False  # continue from out/checkpoint when it exists
    eval_every = 500
    eval_size = 32
    eval_steps = 20  # DDIM steps of the evaluation
    log_every = 50
    reference = ""  # a model name / run folder whose metrics.csv is drawn beside (e.g. shapes32_hdae_u)
    """),
    setup("from hdae_core import ModelConfig", "from hdae_core.train import TrainConfig, train"),
    code("""
    run_dir = pretrained.repo_path(out)
    cfg = TrainConfig(model=ModelConfig.preset(preset, variant), out=str(run_dir), data=data, steps=steps,
                      batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every, eval_size=eval_size,
                      eval_steps=eval_steps, log_every=log_every, ckpt_every=max(steps // 4, 1),
                      progress=False, tensorboard=False)
    print(f"training {variant} ({preset}) for {steps} steps into {run_dir}")
    t0 = time.perf_counter()
    ck = train(cfg, resume=resume)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"checkpoint: {ck} ({metrics['train_seconds']} s)")
    """),
    code("""
    df = pd.read_csv(run_dir / "metrics.csv")
    runs = {f"{variant} ({preset})": df}
    if reference:
        try:
            ref = pretrained.resolve(reference)
            found = [p / "metrics.csv" for p in (ref, ref.parent) if (p / "metrics.csv").is_file()]
        except FileNotFoundError as e:
            found = []
            print(e)
        if found:
            runs[f"reference: {Path(reference).name}"] = pd.read_csv(found[0])
        else:
            print(f"reference {reference!r}: no metrics.csv beside the checkpoint; drawing this run only")
    cols = ["loss", "eval_mse_enc", "eval_mse_rand", "eval_lpips_enc", "eval_lpips_rand"]
    fig = plots.plot_curves(runs, "step", cols, path=report / "curves.png", ncols=3, logy=True, logx=len(runs) > 1,
                            titles=["ε loss", "MSE, encoded x_T", "MSE, random x_T", "LPIPS, encoded x_T",
                                    "LPIPS, random x_T"])
    display(fig)
    df.to_csv(report / "metrics_log.csv", index=False)
    """),
    code("""
    grids = sorted((run_dir / "grids").glob("recon_*.png"))
    if grids:
        import shutil
        shutil.copy(grids[-1], report / "last_reconstructions.png")
        print("rows: held-out images, decoded from encoded x_T, decoded from random x_T")
        display(Image(filename=str(report / "last_reconstructions.png")))
    last = df.dropna(subset=["eval_mse_enc"]).tail(1)
    metrics.update(preset=preset, variant=variant, steps=int(df["step"].max()),
                   first_loss=float(df["loss"].iloc[0]), final_loss=float(df["loss"].iloc[-1]),
                   img_per_s=float(df["img_s"].mean()))
    for c in cols[1:]:
        if len(last) and c in last and pd.notna(last[c].iloc[0]):
            metrics[f"final_{c}"] = float(last[c].iloc[0])
    """),
    FINISH,
]

# ====================================================================== 02 ablation
NOTEBOOKS["02_ablation"] = [
    md("""
    # 02 · Ablation of the encoder and the routing (HDAE Fig. 5)

    Reconstruction MSE and LPIPS against training steps for the five variants:
    `dae` (DiffAE), `dae_wide` (one L·D-wide code), `dae_u` (U-Net encoder, one code), `hdae_e`
    (half-UNet encoder, one code per level) and `hdae_u` (U-Net encoder, one code per level).
    The curves are the logged `metrics.csv` of five training runs: the shipped ones in
    `data/ablation/<variant>/` (each with a `card.md` holding its command), or — with
    `retrain = True` — runs trained here with the same calls as `hdae train`.
    """),
    nb_params("02_ablation", """
    ablation_dir = "data/ablation"  # <variant>/metrics.csv (+ card.md) of the shipped runs
    variants = ["dae", "dae_wide", "dae_u", "hdae_e", "hdae_u"]
    retrain = False  # True: train the variants here, into work_dir, instead of reading ablation_dir
    preset = "tiny"  # for retrain
    steps = 200  # training steps, for retrain
    batch_size = 16
    eval_every = 50
    eval_size = 16
    eval_steps = 10
    work_dir = "reports/_tmp/02_ablation"
    """),
    setup("from hdae_core import ModelConfig", "from hdae_core.train import TrainConfig, train"),
    code("""
    if retrain:
        src = pretrained.repo_path(work_dir)
        for v in variants:
            cfg = TrainConfig(model=ModelConfig.preset(preset, v), out=str(src / v), steps=steps,
                              batch_size=batch_size, seed=seed, eval_every=eval_every, eval_size=eval_size,
                              eval_steps=eval_steps, log_every=max(1, min(eval_every, 50)), ckpt_every=steps,
                              progress=False, tensorboard=False)
            t0 = time.perf_counter()
            train(cfg)
            command = (f"hdae train --preset {preset} --variant {v} --steps {steps} --batch {batch_size} "
                       f"--seed {seed} --eval-every {eval_every} --eval-size {eval_size} --out {src / v}")
            (src / v / "card.md").write_text(f"# {v}\\n\\nTrained by 02_ablation.ipynb (retrain=True) in "
                                             f"{time.perf_counter() - t0:.0f} s; the equivalent command:\\n\\n"
                                             f"```\\n{command}\\n```\\n")
            print(f"{v}: {time.perf_counter() - t0:.0f} s")
    else:
        src = pretrained.repo_path(ablation_dir)
    metrics["source"] = "retrained here" if retrain else str(src)
    """),
    code("""
    runs, missing = {}, []
    for v in variants:
        f = src / v / "metrics.csv"
        if not f.is_file():
            missing.append(v)
            continue
        df = pd.read_csv(f)
        if "eval_mse_enc" not in df or df["eval_mse_enc"].notna().sum() == 0:
            missing.append(v)
            print(f"{f}: no evaluation rows")
            continue
        runs[v] = df
    metrics["found"], metrics["missing"] = list(runs), missing
    if missing:
        display(Markdown(
            f"**Missing runs: {', '.join(missing)}** — expected `{src}/<variant>/metrics.csv`. "
            "Train them with `hdae train --preset shapes32 --variant <variant> --out runs/ablation/<variant>` "
            "and copy `metrics.csv` (and a `card.md` with the command) into `data/ablation/<variant>/`, "
            "or run this notebook with `retrain=True`."))
    else:
        display(Markdown(f"All {len(runs)} runs found in `{src}`."))
    for v in runs:
        cards = [src / v / c for c in ("card.md", "README.md") if (src / v / c).is_file()]
        if cards:
            display(Markdown(f"**{v}** — " + cards[0].read_text()[:800]))
        else:
            print(f"{v}: no card.md beside its metrics.csv (the command that made it is unknown)")
    """),
    code("""
    cols = ["eval_mse_enc", "eval_lpips_enc", "eval_mse_rand", "eval_lpips_rand"]
    fig = plots.plot_curves(runs, "step", cols, path=report / "ablation_curves.png", ncols=2, logy=True,
                            titles=["MSE, encoded x_T", "LPIPS, encoded x_T", "MSE, random x_T", "LPIPS, random x_T"],
                            suptitle="Reconstruction against training steps (HDAE Fig. 5)")
    display(fig)
    rows = []
    for v, df in runs.items():
        ev = df.dropna(subset=["eval_mse_enc"])
        last = ev.iloc[-1]
        rows.append({"variant": v, "step": int(last["step"]),
                     **{c: float(last[c]) if c in ev and pd.notna(last[c]) else float("nan") for c in cols}})
    final = pd.DataFrame(rows, columns=["variant", "step", *cols])
    final.to_csv(report / "ablation_final.csv", index=False)
    display(final)
    metrics["final"] = {r["variant"]: {c: r[c] for c in ["step", *cols]} for r in rows}
    if "dae" in runs and "hdae_u" in runs:
        f = final.set_index("variant")
        metrics["hdae_u_over_dae_mse_enc"] = float(f.loc["hdae_u", "eval_mse_enc"] / f.loc["dae", "eval_mse_enc"])
        metrics["hdae_u_over_dae_mse_rand"] = float(f.loc["hdae_u", "eval_mse_rand"] / f.loc["dae", "eval_mse_rand"])
    """),
    FINISH,
]

# ====================================================================== 03 reconstruction
NOTEBOOKS["03_reconstruction"] = [
    md("""
    # 03 · Reconstruction (HDAE Table 1, Fig. 6)

    SSIM, LPIPS and MSE of DAE and HDAE(U) reconstructions of held-out images, for several DDIM
    step counts T, decoding from the **encoded** x_T (DDIM inversion) and from a **random** x_T
    (codes only; the same noise for both models). *encoded* uses the package's default refined inversion
    (one correction per step, the same network calls); *encoded_diffae* uses DiffAE's own inversion, the
    one the paper's table measures. A model whose codes hold more of the image
    reconstructs better from random noise. The *mean colour* row is the trivial baseline: each
    image replaced by its average colour. MSE is on the [-1, 1] scale (4× the [0, 1]-scale MSE of
    the paper's table).
    """),
    nb_params("03_reconstruction", """
    checkpoint_hdae = "shapes32_hdae_u"
    checkpoint_dae = "shapes32_dae"
    n_images = 32  # held-out images scored
    steps = [10, 20, 50]  # DDIM step counts T (the paper: 10, 20, 50, 100)
    n_show = 8  # images in the reconstruction figure
    batch_size = 32
    lpips_net = "alex"
    """),
    setup("from hdae_core.evaluation import mean_colour, mean_colour_mse, reconstruction_table"),
    code("""
    models = {"DAE": pretrained.load(checkpoint_dae), "HDAE(U)": pretrained.load(checkpoint_hdae)}
    sizes = {k: m.config.image_size for k, m in models.items()}
    assert len(set(sizes.values())) == 1, f"the models must share one image size, got {sizes}"
    size = sizes["DAE"]
    images = Shapes(size=size, seed=10_000).batch(list(range(n_images)))["image"]
    df = reconstruction_table(models, images, steps=steps, batch_size=batch_size, lpips_net=lpips_net,
                              seed=seed, progress=False, baseline=True, x_T=("encoded", "encoded_diffae", "random"))
    df.to_csv(report / "table1.csv", index=False)
    wide = df.pivot_table(index=["model", "x_T"], columns="T", values=["SSIM", "LPIPS", "MSE"], sort=False)
    wide.columns = [f"{m} T={t}" for m, t in wide.columns]
    wide.to_csv(report / "table1_wide.csv")
    display(wide.round(4))
    """),
    code("""
    T = max(steps)
    at_T = df[df["T"] == T].set_index(["model", "x_T"])
    for name in models:
        for kind in ("encoded", "encoded_diffae", "random"):
            r = at_T.loc[(name, kind)]
            metrics[f"{name}.{kind}"] = {"SSIM": r["SSIM"], "LPIPS": r["LPIPS"], "MSE": r["MSE"]}
    metrics["T"] = T
    metrics["n_images"] = n_images
    metrics["mean_colour_mse"] = float(mean_colour_mse(images).mean())
    metrics["hdae_mse_encoded_over_mean_colour"] = metrics["HDAE(U).encoded"]["MSE"] / metrics["mean_colour_mse"]
    metrics["dae_mse_random_over_hdae"] = metrics["DAE.random"]["MSE"] / max(metrics["HDAE(U).random"]["MSE"], 1e-12)
    bars = at_T[["MSE", "LPIPS"]].reset_index()
    bars.index = bars["model"] + ", " + bars["x_T"]
    fig = plots.plot_bars(bars[["MSE", "LPIPS"]], path=report / "table1_bars.png", title=f"T = {T} DDIM steps",
                          hline=metrics["mean_colour_mse"], size=(6, 3.5))
    display(fig)
    print(f"mean-colour baseline MSE {metrics['mean_colour_mse']:.4f} (dashed line)")
    """),
    md("""
    ## Reconstructions (Fig. 6)

    Rows: the held-out images; each model decoding from the encoded x_T and from the shared random
    x_T (the first images of the table's noise); the mean-colour baseline.
    """),
    code("""
    x = images[:n_show]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))[:n_show]
    rows, labels = [x], ["original"]
    with torch.no_grad():
        for name, m in models.items():
            codes = m.encode(x)
            rows.append(m.decode(m.encode_stochastic(x, codes, T), codes, T).clamp(-1, 1))
            rows.append(m.decode(noise, codes, T).clamp(-1, 1))
            labels += [f"{name} encoded x_T", f"{name} random x_T"]
    rows.append(mean_colour(x))
    labels.append("mean colour")
    scale = max(1, 64 // size)
    plots.save_labeled_grid(report / f"reconstructions_T{T}.png", rows, row_labels=labels, scale=scale)
    display(Image(filename=str(report / f"reconstructions_T{T}.png")))
    """),
    FINISH,
]

# ====================================================================== 04 hierarchy
NOTEBOOKS["04_hierarchy"] = [
    md("""
    # 04 · What the hierarchy holds (HDAE Fig. 7, 8)

    **Style mixing** (Fig. 7): entry j decodes image A's codes with levels z¹…z^j taken from image B,
    from A's own x_T. Low→high, B's low-level appearance (colour, texture, background, light)
    arrives first and its geometry last; high→low the other way round.

    **Controllable interpolation** (Fig. 8): interpolate from A to B one level at a time (low→high
    or high→low), all levels at once, or a single level alone; codes move linearly and x_T by slerp.
    """),
    nb_params("04_hierarchy", """
    checkpoint_hdae = "shapes32_hdae_u"
    n_pairs = 3  # (A, B) image pairs in the style-mixing grids
    n_frames = 7  # frames per interpolation path
    steps = 20  # DDIM steps
    """),
    setup("from hdae_core import editing"),
    code("""
    model = pretrained.load(checkpoint_hdae)
    L, size = model.num_levels, model.config.image_size
    scale = max(1, 64 // size)
    data = Shapes(size=size, seed=10_000)
    x = data.batch(list(range(2 * n_pairs)))["image"]
    xa, xb = x[:n_pairs], x[n_pairs:]
    print(f"{model.config.variant}: L = {L} levels")
    """),
    code("""
    for order in ("low_to_high", "high_to_low"):
        grid = editing.style_mix_grid(model, xa, xb, steps=steps, order=order)  # [L+1, B, C, H, W]
        rows = [torch.cat([xa[p:p + 1], grid[:, p].clamp(-1, 1), xb[p:p + 1]]) for p in range(n_pairs)]
        if order == "low_to_high":
            cols = ["A", "A codes"] + [f"z1..z{j} from B" if j > 1 else "z1 from B" for j in range(1, L)] + ["all from B", "B"]
        else:
            cols = ["A", "A codes"] + [f"z{L - j + 1}..z{L} from B" if j > 1 else f"z{L} from B"
                                       for j in range(1, L)] + ["all from B", "B"]
        plots.save_labeled_grid(report / f"style_mix_{order}.png", rows, row_labels=[f"pair {p}" for p in range(n_pairs)],
                                col_labels=cols, scale=scale)
        display(Markdown(f"**Style mixing, {order.replace('_', ' ')}**"))
        display(Image(filename=str(report / f"style_mix_{order}.png")))
        # how far entry j is from A's and from B's decoding: a hierarchy moves from one to the other in steps
        to_a = [(grid[j] - grid[0]).pow(2).mean().item() for j in range(L + 1)]
        to_b = [(grid[j] - grid[L]).pow(2).mean().item() for j in range(L + 1)]
        metrics[f"style_mix_{order}"] = {"mse_to_A": to_a, "mse_to_B": to_b}
    display(pd.DataFrame({k: v for o in ("low_to_high", "high_to_low")
                          for k, v in ((f"{o} to A", metrics[f"style_mix_{o}"]["mse_to_A"]),
                                       (f"{o} to B", metrics[f"style_mix_{o}"]["mse_to_B"]))}).round(4))
    """),
    code("""
    paths = ["all", "low_to_high", "high_to_low"] + [("level", l) for l in range(L)] if L > 1 else ["all"]
    with torch.no_grad():
        pair = torch.cat([xa[:1], xb[:1]])
        codes = model.encode(pair)
        x_T = model.encode_stochastic(pair, codes, steps)
        cs, xs = zip(*[editing.interpolate(codes[:1], codes[1:], x_T[:1], x_T[1:], n_frames, p) for p in paths])
        frames = model.decode(torch.cat(xs), torch.cat(cs), steps).clamp(-1, 1).reshape(len(paths), n_frames, *pair.shape[1:])
    names = [p if isinstance(p, str) else f"z{p[1] + 1} only" for p in paths]
    plots.save_labeled_grid(report / "interpolation.png", list(frames), row_labels=[n.replace("_", " ") for n in names],
                            col_labels=["A"] + [""] * (n_frames - 2) + ["B"], scale=scale)
    display(Image(filename=str(report / "interpolation.png")))
    steps_mse = (frames[:, 1:] - frames[:, :-1]).pow(2).flatten(2).mean(2)  # [paths, frames-1]
    metrics["interpolation_max_step_mse"] = {n: float(s.max()) for n, s in zip(names, steps_mse)}
    metrics["interpolation_total_mse"] = {n: float(s.sum()) for n, s in zip(names, steps_mse)}
    display(pd.DataFrame({"path": names, "largest frame-to-frame MSE": steps_mse.max(1).values.numpy(),
                          "sum": steps_mse.sum(1).numpy()}).round(4))
    """),
    FINISH,
]

# ====================================================================== 05 directions
NOTEBOOKS["05_directions"] = [
    md("""
    # 05 · Attribute directions and where they live (HDAE Fig. 3, 4)

    Encode a few thousand shapes, standardise the codes, and fit one linear classifier per
    attribute on the flattened codes (D·L inputs): its weight n is the edit direction.

    * **AUROC** per attribute on a held-out split: how linearly readable each attribute is.
    * **ECDF of n̂** (Eq. 1, n̂ = (|n| − min|n|)/(max|n| − min|n|)): most entries of a direction are
      small; the few large ones carry the attribute — the case for truncated features.
    * **Level × dimension heatmap of n̂** with each level's share of Σ|n| (HDAE): low-level
      attributes should load on the fine levels (z¹…), high-level ones on the coarse levels (…z^L).

    The data set ties `red` to `large` (they agree 80% of the time), as hair colour and sex are
    tied in CelebA; the classifiers pick up some of that correlation, which 06_editing measures.
    """),
    nb_params("05_directions", """
    checkpoint_hdae = "shapes32_hdae_u"
    checkpoint_dae = "shapes32_dae"
    n_encode = 3000  # shapes encoded to fit the classifiers
    data_seed = 1  # the Shapes seed of those images
    C = 1.0  # inverse L2 strength of the logistic regressions
    heatmap_attributes = ["red", "striped", "bright_background", "large", "left_side", "is_circle"]
    batch_size = 128
    """),
    setup("from hdae_core import editing", "from hdae_core.data.shapes import LOW_LEVEL_ATTRIBUTES"),
    code("""
    keys = {"dae": ("DAE", checkpoint_dae), "hdae_u": ("HDAE(U)", checkpoint_hdae)}
    clfs = {}
    for key, (label, ck) in keys.items():
        model = pretrained.load(ck)
        data = Shapes(size=model.config.image_size, seed=data_seed)
        t0 = time.perf_counter()
        enc = editing.encode_dataset(model, data, n=n_encode, batch_size=batch_size, progress=False)
        clf = editing.train_classifiers(enc["codes"], enc["attributes"], names=data.attribute_names, C=C, seed=seed)
        clf.save(report / f"classifiers_{key}")  # 06_editing reuses these
        clfs[label] = clf
        print(f"{label}: codes {tuple(enc['codes'].shape)}, classifiers in {time.perf_counter() - t0:.0f} s")
    names = data.attribute_names
    auroc = pd.DataFrame({label: pd.Series(c.auroc) for label, c in clfs.items()}).loc[names]
    auroc.index.name = "attribute"
    auroc.to_csv(report / "auroc.csv")
    display(auroc.round(3))
    display(plots.plot_bars(auroc, path=report / "auroc.png", ylabel="held-out AUROC", ylim=(0.4, 1.0), hline=0.5,
                            title="Linear classifiers on standardised codes"))
    metrics["auroc_mean"] = {label: float(auroc[label].mean()) for label in clfs}
    metrics["auroc"] = {label: auroc[label].to_dict() for label in clfs}
    """),
    code("""
    styles = {n: {"ls": "-" if n in LOW_LEVEL_ATTRIBUTES else "--", "lw": 1} for n in names}
    panels = {label: {n: editing.normalized_weights(c.direction(n)) for n in names} for label, c in clfs.items()}
    display(plots.plot_ecdf(panels, path=report / "ecdf.png", styles=styles,
                            suptitle="ECDF of n̂ per attribute (solid: low-level, dashed: high-level)"))
    for label, series in panels.items():
        allv = torch.cat([v.flatten() for v in series.values()])
        metrics[f"nhat_median.{label}"] = float(allv.median())
        metrics[f"nhat_above_0.5.{label}"] = float((allv > 0.5).float().mean())
    """),
    code("""
    shows = [a for a in heatmap_attributes if a in names]
    for label, c in clfs.items():
        key = "hdae_u" if label.startswith("HDAE") else "dae"
        fig = plots.plot_level_heatmap({a: c.direction(a) for a in shows}, path=report / f"level_heatmap_{key}.png",
                                       suptitle=f"{label}: n̂ per level and dimension (right: share of Σ|n|)")
        display(fig)
    hd = clfs["HDAE(U)"]
    L = hd.direction(names[0]).shape[0]
    shares = pd.DataFrame({n: plots.level_shares(hd.direction(n)) for n in names},
                          index=[f"z{l + 1}" for l in range(L)]).T
    shares.index.name = "attribute"
    shares.to_csv(report / "level_shares.csv")
    display(shares.round(3))
    display(plots.plot_bars(shares, path=report / "level_shares.png", ylabel="share of Σ|n|", ylim=(0, 1),
                            title="HDAE(U): each level's share of the direction's weight"))
    fine = shares.iloc[:, : max(1, L // 2)].sum(axis=1)  # the finer half of the levels
    low = [n for n in names if n in LOW_LEVEL_ATTRIBUTES]
    high = [n for n in names if n not in LOW_LEVEL_ATTRIBUTES]
    metrics["hdae_fine_half_share.low_level_attributes"] = float(fine[low].mean())
    metrics["hdae_fine_half_share.high_level_attributes"] = float(fine[high].mean())
    metrics["num_levels"] = L
    print(f"share of |n| on the finer half of the levels: low-level attributes {fine[low].mean():.2f}, "
          f"high-level attributes {fine[high].mean():.2f}")
    """),
    FINISH,
]

# ====================================================================== 06 editing
NOTEBOOKS["06_editing"] = [
    md("""
    # 06 · Attribute editing and truncated features (HDAE Fig. 9, 10)

    An edit moves an image's standardised code along an attribute's classifier direction n and
    decodes with the image's own x_T. *Truncated features* (Eq. 2) keep only the k entries of n
    with the largest n̂ and zero the rest. With the hierarchy, a low-level attribute's top entries
    sit in the fine levels, so truncation keeps the edit off the geometry.

    An **attribute oracle** (a small CNN trained on rendered shapes with every attribute known)
    scores each edit: *success* = mean rise of p(target), *leakage* = mean |Δp| of every other
    attribute, *partner leakage* = |Δp| of the attribute the data correlates with the target
    (`red` ↔ `large`).
    """),
    nb_params("06_editing", """
    checkpoint_hdae = "shapes32_hdae_u"
    checkpoint_dae = "shapes32_dae"
    directions_dir = "reports/05_directions"  # classifiers_<model>/ from 05_directions, reused when present
    n_encode = 3000  # images encoded to fit classifiers when directions_dir has none
    n_images = 10  # images per sweep (chosen without the target attribute)
    n_show = 4  # images per edit figure
    steps = 10  # DDIM steps
    alpha = 0.3  # edit strength: the step is alpha * sqrt(D*L) in standardised units
    attributes = ["red", "large", "striped", "left_side"]  # edit figures
    sweep_attributes = ["red", "large"]  # k-ablation with the oracle
    k_fractions = [1.0, 0.3, 0.1, 0.03]  # k as a fraction of the direction's L*D entries (1.0: no truncation)
    k_small_fraction = 0.1  # the truncated edit shown in the figures
    oracle_dir = "reports/_tmp/oracle"  # oracles trained here are cached in <oracle_dir>/size<px>
    oracle_steps = 400  # training steps when no oracle is shipped or cached
    """),
    setup("from hdae_core import editing, oracle"),
    code("""
    models = {"DAE": pretrained.load(checkpoint_dae), "HDAE(U)": pretrained.load(checkpoint_hdae)}
    keys = {"DAE": "dae", "HDAE(U)": "hdae_u"}
    size = models["HDAE(U)"].config.image_size
    clfs = {}
    for label, m in models.items():
        folder = pretrained.repo_path(directions_dir) / f"classifiers_{keys[label]}"
        clf = editing.load_classifiers(folder) if (folder / "directions.json").is_file() else None
        if clf is not None and tuple(clf.stats.shape) != (m.num_levels, m.code_dim):
            print(f"{folder}: classifiers for codes {clf.stats.shape}, not this model's; refitting")
            clf = None
        if clf is None:
            d = Shapes(size=m.config.image_size, seed=1)
            enc = editing.encode_dataset(m, d, n=n_encode, progress=False)
            clf = editing.train_classifiers(enc["codes"], enc["attributes"], names=d.attribute_names, seed=seed)
            print(f"{label}: classifiers fitted here on {n_encode} codes")
        else:
            print(f"{label}: classifiers from {folder}")
        clfs[label] = clf
    """),
    code("""
    cache = pretrained.repo_path(oracle_dir) / f"size{size}"
    shipped = pretrained.find_oracle(size)
    if shipped is not None:
        orc, where = oracle.load(shipped), f"shipped {shipped}"
    elif (cache / oracle.CONFIG_FILE).is_file():
        orc, where = oracle.load(cache), f"cached {cache}"
    else:
        t0 = time.perf_counter()
        orc, rep = oracle.train_oracle(size=size, steps=oracle_steps, seed=seed, progress=False)
        oracle.save(orc, cache, rep)
        where = f"trained here ({oracle_steps} steps, {time.perf_counter() - t0:.0f} s), cached in {cache}"
    data = Shapes(size=size, seed=10_000)
    pool = data.batch(list(range(400)))
    acc = oracle.evaluate_oracle(orc, pool["image"], pool["attributes"])
    metrics["oracle_mean_accuracy"] = acc["mean_accuracy"]
    metrics["oracle_majority_baseline"] = acc["mean_majority_baseline"]
    print(f"oracle: {where}; held-out accuracy {acc['mean_accuracy']:.3f} (majority {acc['mean_majority_baseline']:.3f})")
    names = list(data.attribute_names)

    def without(attr, n):
        idx = (pool["attributes"][:, names.index(attr)] < 0.5).nonzero().flatten()[:n]
        return pool["image"][idx]

    def k_of(frac, m):
        return None if frac >= 1 else max(1, round(frac * m.num_levels * m.code_dim))
    """),
    md("""
    ## Edits with and without truncated features (Fig. 9)

    For each attribute: images without it, pushed towards it with every entry of n (k = all) and
    with the top fraction `k_small_fraction` of the entries only.
    """),
    code("""
    scale = max(1, 64 // size)
    for attr in attributes:
        x = without(attr, n_show)
        rows, labels = [x], ["original"]
        with torch.no_grad():
            for label, m in models.items():
                codes = m.encode(x)
                x_T = m.encode_stochastic(x, codes, steps)
                n = clfs[label].direction(attr)
                k = k_of(k_small_fraction, m)
                edited = [editing.manipulate(codes, n, alpha, clfs[label].stats, k=kk) for kk in (None, k)]
                dec = m.decode(x_T.repeat(3, 1, 1, 1), torch.cat([codes] + edited), steps).clamp(-1, 1).chunk(3)
                rows += list(dec)
                labels += [f"{label} decoded", f"{label} +{attr} k=all", f"{label} +{attr} k={k}"]
        plots.save_labeled_grid(report / f"edit_{attr}.png", rows, row_labels=labels, scale=scale)
        display(Markdown(f"**{attr}** (α = {alpha})"))
        display(Image(filename=str(report / f"edit_{attr}.png")))
    """),
    md("""
    ## Truncation sweep measured by the oracle (Fig. 10)

    Success and leakage as k shrinks, for DAE and HDAE(U).
    """),
    code("""
    frames = []
    for attr in sweep_attributes:
        x = without(attr, n_images)
        for label, m in models.items():
            ks = [k_of(f, m) for f in k_fractions]
            df = oracle.edit_sweep(m, orc, x, clfs[label].direction(attr), clfs[label].stats, attr, ks=ks,
                                   alphas=[alpha], steps=steps, names=names, correlated=data.correlated_pairs,
                                   progress=False)
            df.insert(0, "model", label)
            df.insert(2, "k_fraction", list(k_fractions))
            frames.append(df)
    sweep = pd.concat(frames, ignore_index=True)
    sweep.to_csv(report / "k_ablation.csv", index=False)
    display(sweep.round(3))
    for attr in sweep_attributes:
        s = sweep[sweep["target"] == attr]
        fig = plots.plot_curves({label: g for label, g in s.groupby("model", sort=False)}, "k_fraction",
                                ["success", "leakage", "partner_leakage"], path=report / f"k_ablation_{attr}.png",
                                logx=True, xlabel="k / (L·D)", suptitle=f"editing {attr}: oracle scores against k")
        display(fig)
    for (attr, label), g in sweep.groupby(["target", "model"], sort=False):
        full = g[g["k_fraction"] >= 1].iloc[0]
        small = g.iloc[(g["k_fraction"] - k_small_fraction).abs().argsort().iloc[0]]
        metrics[f"{attr}.{label}"] = {
            "success_k_all": full["success"], "leakage_k_all": full["leakage"],
            "partner_leakage_k_all": full["partner_leakage"],
            "k_small_fraction": small["k_fraction"], "success_k_small": small["success"],
            "leakage_k_small": small["leakage"], "partner_leakage_k_small": small["partner_leakage"]}
    """),
    FINISH,
]

# ====================================================================== 08 layout
NOTEBOOKS["08_layout"] = [
    md("""
    # 08 · Layout-guided multi-modal synthesis (HDAE Fig. 11)

    A small CNN, the **layout encoder**, learns to predict an image's *high-level* codes from its
    semantic label map (regression onto the frozen HDAE encoder's codes). Decoding a layout's
    predicted high-level codes together with a real image's *low-level* codes gives images with
    the layout's geometry and the image's appearance: one layout, many styles.
    """),
    nb_params("08_layout", """
    checkpoint_hdae = "shapes32_hdae_u"
    n_train = 3000  # images (and label maps) the layout encoder learns from (20% held out)
    layout_steps = 600  # training steps of the layout encoder
    layout_batch = 32
    levels = None  # code levels predicted from the layout; None: the coarser half
    n_layouts = 4  # rows of the synthesis grid
    n_images = 4  # columns: real images giving the low-level codes
    steps = 20  # DDIM steps
    oracle_dir = "reports/_tmp/oracle"  # an oracle (from 06_editing) scores the layout's control, when present
    """),
    setup("from hdae_core import layout, oracle"),
    code("""
    model = pretrained.load(checkpoint_hdae)
    size, L = model.config.image_size, model.num_levels
    train_data = Shapes(size=size, seed=seed)
    t0 = time.perf_counter()
    enc, fit = layout.train_layout_encoder(model, train_data, levels=levels, n_images=n_train,
                                        steps=layout_steps, batch_size=layout_batch, seed=seed, progress=False)
    layout.save(enc, report / "layout_encoder", extra=fit)
    print(f"layout encoder for levels {[f'z{l + 1}' for l in enc.levels]} of {L}, "
          f"trained in {time.perf_counter() - t0:.0f} s")
    display(pd.Series(fit).to_frame("value"))
    metrics.update({k: fit[k] for k in ("heldout_r2", "heldout_mse", "initial_heldout_mse", "train_r2")})
    metrics["levels"] = [int(l) for l in enc.levels]
    """),
    code("""
    test = Shapes(size=size, seed=10_000)
    lay = test.batch(list(range(n_layouts)))
    img = test.batch(list(range(n_layouts, n_layouts + n_images)))
    x_T = torch.randn((n_images, 3, size, size), generator=torch.Generator().manual_seed(seed))
    synth = torch.stack([layout.synthesize(model, enc, lay["label_map"][i:i + 1], img["image"], steps=steps, x_T=x_T)
                         for i in range(n_layouts)]).clamp(-1, 1)  # [layouts, images, C, H, W]
    blank = torch.ones((1, 3, size, size))
    rows = [torch.cat([blank, blank, img["image"]])]
    rows += [torch.cat([plots.label_map_to_image(lay["label_map"][i:i + 1]), lay["image"][i:i + 1], synth[i]])
             for i in range(n_layouts)]
    plots.save_labeled_grid(report / "layout_synthesis.png", rows,
                            row_labels=["low-level codes from"] + [f"layout {i}" for i in range(n_layouts)],
                            col_labels=["layout", "its image"] + [f"image {j}" for j in range(n_images)],
                            scale=max(1, 64 // size))
    display(Image(filename=str(report / "layout_synthesis.png")))
    """),
    md("""
    If an attribute oracle is available (06_editing trains and caches one), it measures the control:
    how often a synthesised image has the **layout's** shape, side and size rather than the
    **image's** (the image supplying the low-level codes).
    """),
    code("""
    cache = pretrained.repo_path(oracle_dir) / f"size{size}"
    path = pretrained.find_oracle(size) or (cache if (cache / oracle.CONFIG_FILE).is_file() else None)
    if path is None:
        print("no attribute oracle shipped or cached: run 06_editing first to score the layout control")
    else:
        orc = oracle.load(path)
        names = orc.attribute_names
        p = orc.predict_proba(synth.flatten(0, 1)).reshape(n_layouts, n_images, -1)
        shape_idx = [names.index(f"is_{s}") for s in ("circle", "square", "triangle", "star")]
        pred_shape = p[..., shape_idx].argmax(-1)
        lay_shape = lay["attributes"][:, shape_idx].argmax(-1)[:, None].expand(-1, n_images)
        img_shape = img["attributes"][:, shape_idx].argmax(-1)[None, :].expand(n_layouts, -1)
        metrics["shape_matches_layout"] = float((pred_shape == lay_shape).float().mean())
        metrics["shape_matches_image"] = float((pred_shape == img_shape).float().mean())
        for attr in ("left_side", "top_side", "large"):
            j = names.index(attr)
            pred = p[..., j] > 0.5
            metrics[f"{attr}_matches_layout"] = float((pred == (lay["attributes"][:, j:j + 1] > 0.5)).float().mean())
            metrics[f"{attr}_matches_image"] = float((pred == (img["attributes"][None, :, j] > 0.5)).float().mean())
        display(pd.Series({k: v for k, v in metrics.items() if "matches" in k}).to_frame("agreement"))
    """),
    FINISH,
]

# ====================================================================== 09 sampling
NOTEBOOKS["09_sampling"] = [
    md("""
    # 09 · Unconditional sampling with a latent DDIM

    A diffusion autoencoder is not a generator by itself: its codes come from real images. DiffAE
    fits a second, small diffusion model — an MLP — on the standardised codes; sampling a code from
    it and decoding from random x_T gives a new image. Here one latent DDIM per model (DAE and
    HDAE(U)) is trained on codes of the training shapes.

    To judge the sampled codes without images, the **Fréchet distance** between sampled and real
    (standardised, flattened) codes is compared with two references: a second set of real codes
    (the floor) and independent N(0, 1) codes (what ignoring every correlation between dimensions
    gives).
    """),
    nb_params("09_sampling", """
    checkpoint_hdae = "shapes32_hdae_u"
    checkpoint_dae = "shapes32_dae"
    n_encode = 2000  # training images encoded: half fit the latent DDIM, half are the reference set
    latent_steps = 2000  # training steps of the latent DDIM
    latent_width = 256
    latent_depth = 4
    latent_lr = 3e-4
    latent_batch = 64
    n_samples = 16  # images sampled per model
    n_code_samples = 1000  # codes sampled for the Fréchet distance
    latent_sample_steps = 50  # latent DDIM steps
    steps = 20  # image DDIM steps
    """),
    setup("from scipy import linalg", "from hdae_core import editing, latent", "from hdae_core.stats import LatentStats"),
    code("""
    def frechet(a, b):
        # Fréchet distance between Gaussians fitted to two sets of flattened codes [N, F]
        a, b = a.double().numpy(), b.double().numpy()
        mu_a, mu_b = a.mean(0), b.mean(0)
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = linalg.sqrtm(ca @ cb).real
        return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))
    """),
    code("""
    keys = {"dae": ("DAE", checkpoint_dae), "hdae_u": ("HDAE(U)", checkpoint_hdae)}
    for key, (label, ck) in keys.items():
        model = pretrained.load(ck)
        L, D, size = model.num_levels, model.code_dim, model.config.image_size
        data = Shapes(size=size, seed=0)
        codes = editing.encode_dataset(model, data, n=n_encode, progress=False, with_attributes=False)["codes"]
        fit, ref = codes[: n_encode // 2], codes[n_encode // 2:]
        stats = LatentStats.from_codes(fit)
        t0 = time.perf_counter()
        cfg = latent.LatentConfig(code_levels=L, code_dim=D, width=latent_width, depth=latent_depth)
        lm = latent.train_latent(fit, stats, cfg, steps=latent_steps, batch_size=latent_batch, lr=latent_lr,
                                 seed=seed, progress=False)
        train_s = time.perf_counter() - t0
        latent.save(lm, report / f"latent_{key}", stats)
        g = torch.Generator().manual_seed(seed)
        sampled = latent.sample_codes(lm, n_code_samples, stats, steps=latent_sample_steps, generator=g)
        std = lambda c: stats.standardize(c).flatten(1)
        gauss = torch.randn((n_code_samples, L * D), generator=g)
        fd = {"latent_ddim": frechet(std(sampled), std(ref)), "real_codes": frechet(std(fit), std(ref)),
              "independent_gaussian": frechet(gauss, std(ref))}
        metrics[f"frechet.{label}"] = fd
        metrics[f"latent_train_seconds.{label}"] = round(train_s, 1)
        print(f"{label}: latent DDIM on {len(fit)} codes [{L}, {D}] in {train_s:.0f} s; Fréchet distance "
              + ", ".join(f"{k} {v:.2f}" for k, v in fd.items()))

        images, sample_codes = latent.sample_images(model, lm, n_samples, stats, latent_steps=latent_sample_steps,
                                                    image_steps=steps, generator=g, return_codes=True)
        # each sample's nearest training image by standardised code distance: new images, not copies
        nearest = torch.cdist(std(sample_codes), std(fit)).argmin(1)
        neighbours = data.batch(nearest.tolist())["image"]
        with torch.no_grad():
            gauss_images = model.decode(torch.randn(images.shape, generator=g),
                                        stats.destandardize(gauss[:n_samples].reshape(n_samples, L, D)), steps)
        rows, labels = [], []
        for i in range(0, n_samples, 8):  # eight to a row, each sample above its nearest training image
            rows += [images[i:i + 8].clamp(-1, 1), neighbours[i:i + 8]]
            labels += ["latent DDIM samples", "nearest training image"]
        rows.append(gauss_images[:8].clamp(-1, 1))
        labels.append("N(0, 1) codes")
        plots.save_labeled_grid(report / f"samples_{key}.png", rows, row_labels=labels, scale=max(1, 64 // size))
        display(Markdown(f"**{label}**"))
        display(Image(filename=str(report / f"samples_{key}.png")))
    fd_table = pd.DataFrame({k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith("frechet.")})
    fd_table.to_csv(report / "frechet.csv")
    display(fd_table.round(3))
    """),
    FINISH,
]


# ---------------------------------------------------------------------- writing


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell.id = f"{name.split('_')[0]}-{i:02d}"  # stable ids: rebuilding changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a stored notebook differs from this file")
    ap.add_argument("--out", default=str(HERE), help="folder to write into")
    args = ap.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = Path(args.out) / f"{name}.ipynb"
        text = render(build(name, cells))
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale notebooks (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(NOTEBOOKS)} notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
