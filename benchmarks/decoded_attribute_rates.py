"""Does the decoder draw what the codes say? Attribute rates of random-x_T decodes of real codes.

Encodes held-out Shapes, decodes their codes from one random x_T per image, and reads the true
attributes, the attribute oracle's reading of the real images and its reading of the decodes. A rate
that the decodes of real codes already get wrong is the decoder's doing; one they get right but
latent-DDIM samples (notebook 09) get wrong lies in the sampled codes.

    python benchmarks/decoded_attribute_rates.py data/pretrained/shapes32_hdae_u data/pretrained/shapes32_dae

The oracle is the shipped one, else the one `make figures` cached in reports/_tmp/oracle (``--oracle-cache``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hdae_core import checkpoint, pretrained  # noqa: E402
from hdae_core.data import Shapes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the decodes")
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--oracle-cache", default=str(ROOT / "reports" / "_tmp" / "oracle"))
    ap.add_argument("--attributes", default="rotated,large,is_ellipse,is_square,is_triangle,is_star")
    a = ap.parse_args()
    torch.set_num_threads(1)
    orc, where = pretrained.load_oracle(32, a.oracle_cache)
    if orc is None:
        raise SystemExit(f"{where}: run `make figures` first (it trains and caches the oracle), or give --oracle-cache")
    data = Shapes(32, seed=a.data_seed)
    names = list(data.attribute_names)
    wanted = [x for x in a.attributes.split(",") if x]
    batch = data.batch(list(range(a.n)))
    x0, truth = batch["image"], torch.as_tensor(batch["attributes"]).float()
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    on_real = (orc.predict_proba(x0) > 0.5).float()
    print(f"oracle: {where}; {a.n} held-out Shapes(32, seed={a.data_seed}), decodes from random x_T at {a.steps} steps")
    for folder in a.models:
        model = checkpoint.load(folder).eval()
        with torch.no_grad():
            decoded = model.decode(x_T, model.encode(x0), a.steps)
        on_dec = (orc.predict_proba(decoded) > 0.5).float()
        print(f"\n{folder}")
        print(f"  {'attribute':12s} {'truth':>7s} {'oracle, real':>13s} {'oracle, decoded':>16s} {'decoded = truth':>16s}")
        for k in wanted:
            j = names.index(k)
            agree = (on_dec[:, j] == truth[:, j]).float().mean()
            print(f"  {k:12s} {truth[:, j].mean():7.3f} {on_real[:, j].mean():13.3f} {on_dec[:, j].mean():16.3f} "
                  f"{agree:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
