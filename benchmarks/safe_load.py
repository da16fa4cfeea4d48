"""Time the untrusted-checkpoint loader on DiffAE-shaped Lightning checkpoints.

A checkpoint with DiffAE's parameter names (``tests/fixtures/diffae/manifest_*.json``): ``model.*`` and
``ema_model.*`` weights, Adam's two moments per parameter and a Lightning ``AttributeDict`` of
hyper-parameters, written in the zip format. ``--scale`` shrinks every tensor (1.0 = the release's
size) while keeping the tensor count, which is what the unpickler's time depends on.

    python benchmarks/safe_load.py --preset ffhq128 --scale 0.01 [--compare OLD_MODULE.py]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
import types
from collections import OrderedDict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _lightning_checkpoint(preset: str, scale: float) -> dict:
    manifest = json.loads((ROOT / "tests/fixtures/diffae" / f"manifest_{preset}_autoenc.json").read_text())
    g = torch.Generator().manual_seed(0)

    def tensor(shape):
        shape = [max(1, round(d * scale ** (1 / len(shape)))) for d in shape] if shape else []
        return torch.randn(shape, generator=g)

    sd = OrderedDict()
    for prefix in ("model.", "ema_model."):
        for k, shape in manifest["params"].items():
            sd[prefix + k] = tensor(shape)
    state = {i: {"step": torch.tensor(1000.0), "exp_avg": tensor(s), "exp_avg_sq": tensor(s)}
             for i, s in enumerate(manifest["params"].values())}
    mod = types.ModuleType("pytorch_lightning.utilities.parsing")
    AttributeDict = type("AttributeDict", (dict,), {"__module__": mod.__name__})
    mod.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", mod.__name__):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[mod.__name__] = mod
    hp = AttributeDict(img_size=int(preset[4:]), net_ch=128, lr=1e-4, **{f"k{i}": i for i in range(90)})
    return {"epoch": 10, "global_step": 1000, "pytorch-lightning_version": "1.4.5", "state_dict": sd,
            "optimizer_states": [{"state": state, "param_groups": [{"lr": 1e-4, "params": list(state)}]}],
            "hyper_parameters": hp}


def _time(fn, path, reps):
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn(path)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ffhq128", choices=["ffhq64", "ffhq128", "ffhq256"])
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compare", type=Path, default=None, help="another safe_pickle.py to time beside this one")
    args = ap.parse_args(argv)
    from hdae_core.safe_pickle import safe_load

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "last.ckpt"
        ck = _lightning_checkpoint(args.preset, args.scale)
        torch.save(ck, path)
        n = sum(1 for _ in ck["state_dict"]) + 3 * len(ck["optimizer_states"][0]["state"])
        row = {"preset": args.preset, "scale": args.scale, "tensors": n, "mb": round(path.stat().st_size / 2**20, 1),
               "safe_load_s": round(_time(safe_load, path, args.reps), 4),
               "torch_load_unrestricted_s": round(_time(lambda p: torch.load(p, weights_only=False), path, args.reps), 4)}
        if args.compare:
            spec = importlib.util.spec_from_file_location("other_safe_pickle", args.compare)
            other = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(other)
            row["compare_s"] = round(_time(other.safe_load, path, args.reps), 4)
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
