"""What a model's codes hold about each Shapes attribute, read by probes of growing strength.

For every model folder given (an exported model, a run's checkpoint folder, or a folder with
``ema.safetensors`` and ``config.json``), encodes held-out Shapes and prints held-out AUROC for:

- the linear probe of notebook 05 (``directions.train_classifiers``: standardised codes, balanced logistic
  regression) at several training-set sizes and L2 strengths, to tell an under-fitted probe from codes that
  lack the attribute;
- the same probe on each level alone (HDAE's z¹…z⁴);
- a one-hidden-layer MLP on all codes (scikit-learn), an upper reference for what is there non-linearly.

    python benchmarks/code_probes.py data/pretrained/shapes32_hdae_u data/pretrained/shapes32_dae
    python benchmarks/code_probes.py runs/x/checkpoint --n 3000 --attributes rotated,is_star --no-mlp

With ``--csv`` every model's notebook-05 probe (all its codes, the last C) is appended as one row with the
model's training step; ``--plot`` draws such a file as AUROC against steps, one panel per attribute:

    python benchmarks/code_probes.py snaps/*/ --n 3000 --C 1 --no-levels --no-mlp --csv steps.csv
    python benchmarks/code_probes.py --plot steps.csv --out auroc_by_step.png
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from hdae_core import checkpoint, directions  # noqa: E402
from hdae_core.model import encode_dataset  # noqa: E402
from hdae_core.stats import LatentStats  # noqa: E402
from hdae_core.data import Shapes  # noqa: E402


def probe_table(codes: torch.Tensor, attrs: torch.Tensor, names: list[str], wanted: list[str], sizes, Cs,
                levels: bool, mlp: bool, seed: int = 0) -> list[tuple[str, dict[str, float]]]:
    rows = []
    idx = [names.index(a) for a in wanted]
    for n in sizes:
        for C in Cs:
            clf = directions.train_classifiers(codes[:n], attrs[:n, idx], names=wanted, C=C, seed=seed)
            rows.append((f"linear, {n} codes, C={C:g}", {a: clf.meta["report"][a]["auroc"] for a in wanted}))
    n = sizes[-1]
    if levels and codes.shape[1] > 1:
        for lv in range(codes.shape[1]):
            clf = directions.train_classifiers(codes[:n, lv:lv + 1], attrs[:n, idx], names=wanted, C=Cs[-1], seed=seed)
            rows.append((f"linear, level {lv} alone", {a: clf.meta["report"][a]["auroc"] for a in wanted}))
    if mlp:
        from sklearn.metrics import roc_auc_score
        from sklearn.neural_network import MLPClassifier

        z = LatentStats.from_codes(codes[:n]).standardize(codes[:n]).flatten(1).numpy()
        y_all = attrs[:n].numpy() > 0.5
        perm = np.random.default_rng(seed).permutation(n)
        test, train = perm[: n // 5], perm[n // 5:]
        res = {}
        for a, j in zip(wanted, idx):
            y = y_all[:, j]
            m = MLPClassifier((256,), alpha=1e-2, max_iter=200, early_stopping=True, random_state=seed)
            m.fit(z[train], y[train])
            res[a] = float(roc_auc_score(y[test], m.predict_proba(z[test])[:, 1]))
        rows.append((f"MLP (256 hidden), {n} codes", res))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model folders (exported, a checkpoint, or EMA + config.json)")
    ap.add_argument("--n", type=int, default=12000, help="held-out Shapes to encode (the largest probe set)")
    ap.add_argument("--sizes", default="3000", help="smaller probe sets to compare, comma-separated")
    ap.add_argument("--C", default="0.1,1", help="inverse L2 strengths, comma-separated")
    ap.add_argument("--attributes", default="rotated,is_ellipse,is_square,is_triangle,is_star,red,large")
    ap.add_argument("--data-seed", type=int, default=1, help="the Shapes seed (notebook 05 uses 1)")
    ap.add_argument("--no-levels", action="store_true")
    ap.add_argument("--no-mlp", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=None, help="append each model's probe on all its codes, with its step")
    ap.add_argument("--label", default=None, help="the run's name in --csv rows (default: the variant)")
    ap.add_argument("--plot", default=None, help="draw this --csv file as AUROC against steps (with --out)")
    ap.add_argument("--out", default="auroc_by_step.png")
    a = ap.parse_args()
    if a.plot:
        return plot_steps(a.plot, a.out, [x for x in a.attributes.split(",") if x])
    if not a.models:
        ap.error("give model folders, or --plot CSV")
    torch.set_num_threads(a.threads)
    data = Shapes(32, seed=a.data_seed)
    names = list(data.attribute_names)
    wanted = [x for x in a.attributes.split(",") if x]
    unknown = [x for x in wanted if x not in names]
    if unknown:
        raise SystemExit(f"--attributes: {unknown} are not Shapes attributes; choose from {names}")
    sizes = sorted({int(s) for s in a.sizes.split(",") if s and int(s) < a.n} | {a.n})
    Cs = [float(c) for c in a.C.split(",") if c]
    for folder in a.models:
        t0 = time.time()
        model = checkpoint.load(folder)
        if model.config.image_size != 32:
            raise SystemExit(f"{folder}: a {model.config.image_size}px model; the Shapes probes are for 32px models")
        enc = encode_dataset(model, data, n=a.n, progress=False)
        rows = probe_table(enc["codes"], enc["attributes"], names, wanted, sizes, Cs,
                           not a.no_levels, not a.no_mlp)
        print(f"\n{folder} ({model.config.variant}, {model.num_levels} level(s) × {model.code_dim}), held-out "
              f"AUROC on Shapes(32, seed={a.data_seed}), {time.time() - t0:.0f} s")
        print(f"  {'probe':30s} " + " ".join(f"{x:>11s}" for x in wanted))
        for label, res in rows:
            print(f"  {label:30s} " + " ".join(f"{res[x]:11.3f}" for x in wanted), flush=True)
        if a.csv:
            meta = checkpoint.read_config(folder).get("extra", {})
            step = meta.get("step", meta.get("steps"))
            full = f"linear, {sizes[-1]} codes, C={Cs[-1]:g}"
            res = dict(rows)[full]
            row = pd.DataFrame([{"run": a.label or model.config.variant, "step": step, "probe": full, **res}])
            new = not Path(a.csv).exists()
            row.to_csv(a.csv, mode="a", header=new, index=False)
    return 0


def plot_steps(csv_path: str, out: str, wanted: list[str]) -> int:
    """AUROC against training steps, one panel per attribute, one line per run (seaborn)."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    df = pd.read_csv(csv_path)
    wanted = [x for x in wanted if x in df.columns]
    long = df.melt(id_vars=["run", "step"], value_vars=wanted, var_name="attribute", value_name="AUROC")
    g = sns.relplot(long, x="step", y="AUROC", hue="run", col="attribute", col_wrap=min(4, len(wanted)),
                    kind="line", marker="o", height=2.2, aspect=1.2)
    for ax in g.axes.flat:
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0.45, 1.02)
        ax.grid(alpha=0.3)
    g.savefig(out, dpi=100)
    print(f"wrote {out} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
