"""The ``hdae`` command: thin argument parsing around the library."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys

from .config import PRESETS, VARIANTS, ModelConfig


def train_config_from_args(args):
    """The TrainConfig that `hdae train` runs for parsed ``args``."""
    from .train import TrainConfig

    overrides = json.loads(args.model_json) if args.model_json else {}
    if args.prediction:
        overrides["prediction"] = args.prediction
    return TrainConfig(
        model=ModelConfig.preset(args.preset, args.variant, **overrides),
        out=args.out, data=args.data, steps=args.steps, batch_size=args.batch, lr=args.lr,
        ema_decay=args.ema_decay, ema_warmup=not args.no_ema_warmup, seed=args.seed, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile or args.compile_mode != "default",
        compile_mode=args.compile_mode, device=args.device,
        num_workers=args.workers, log_every=args.log_every, eval_every=args.eval_every,
        eval_size=args.eval_size, ckpt_every=args.ckpt_every, progress=not args.no_progress,
        cache_data=args.cache_data, max_minutes=args.max_minutes,
    )


def _train(args) -> int:
    from .train import TrainingDiverged, train

    cfg = train_config_from_args(args)
    try:
        path = train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {path}")
    return 0


def _params(args) -> int:
    import torch

    from .model import HDAE

    presets = args.presets or list(PRESETS)
    print("| preset | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for p in presets:
        cells = []
        for v in VARIANTS:
            with torch.device("meta"):
                m = HDAE(ModelConfig.preset(p, v))
            cells.append(f"{sum(x.numel() for x in m.parameters()) / 1e6:.2f}M")
        print(f"| {p} | " + " | ".join(cells) + " |")
    return 0


def _import_diffae(args, rest) -> int:
    from .diffae_import import main as diffae_main

    return diffae_main(rest)


def _figures(args) -> int:
    from .pipeline import main as pipeline_main

    return pipeline_main(args)


def _bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def _export(args) -> int:
    from .modelcard import export_run

    info = export_run(args.run, args.dest, command=args.command, n_eval=args.n_eval, device=args.device,
                      note=args.note)
    print(json.dumps(info["quality"], indent=2))
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("hdae")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hdae", description="Hierarchical Diffusion Autoencoders")
    ap.add_argument("--version", action="version", version=f"hdae {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model (built-in shapes by default)")
    t.add_argument("--preset", default="shapes32", choices=list(PRESETS))
    t.add_argument("--variant", default="hdae_u", choices=list(VARIANTS))
    t.add_argument("--model-json", default=None, help="JSON of ModelConfig field overrides")
    t.add_argument("--prediction", default=None, choices=["eps", "v"],
                   help="decoder output: eps (DiffAE, the default) or v (its decoder follows the codes far sooner)")
    t.add_argument("--out", required=True, help="run folder (checkpoint, metrics.csv, grids)")
    t.add_argument("--data", default=None, help="image folder or DiffAE LMDB; default: built-in shapes")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch", type=int, default=32, help="global batch size")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--ema-decay", type=float, default=0.9999)
    t.add_argument("--no-ema-warmup", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    t.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    t.add_argument("--compile", action="store_true", help="torch.compile the training step's forward")
    t.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile mode (implies --compile unless default)")
    t.add_argument("--device", default=None)
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (and for --cache-data)")
    t.add_argument("--cache-data", default="auto", choices=["auto", "on", "off"],
                   help="render the built-in data set once into device memory (auto: on CUDA)")
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after this much wall time with a checkpoint and an evaluation (0: no limit)")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--eval-every", type=int, default=1000)
    t.add_argument("--eval-size", type=int, default=64)
    t.add_argument("--ckpt-every", type=int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint when present")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    p = sub.add_parser("params", help="print the parameter count table (presets × variants)")
    p.add_argument("presets", nargs="*")
    p.set_defaults(func=_params)

    f = sub.add_parser("figures", help="run the notebooks into reports/")
    f.add_argument("--profile", default="full", choices=["smoke", "full"])
    f.add_argument("--only", action="append", default=None, help="notebook number, name or topic (repeatable)")
    f.add_argument("--reports", default="reports")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--pretrained-dir", default=None, help="folder of the demo models (default data/pretrained)")
    f.add_argument("--kernel", default="hdae", help="Jupyter kernel the notebooks run with (make venv registers 'hdae')")
    f.set_defaults(func=_figures)

    b = sub.add_parser("bench", help="speed benchmark")
    b.add_argument("--preset", default=None)
    b.add_argument("--variant", default=None)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--json", action="store_true")
    b.add_argument("--device", default=None)
    b.set_defaults(func=_bench)

    e = sub.add_parser("export", help="ship a run as a demo model (EMA weights, metrics, quality check, card)")
    e.add_argument("run", help="run folder written by `hdae train`")
    e.add_argument("dest", help="destination, e.g. data/pretrained/shapes32_hdae_u")
    e.add_argument("--command", required=True, action="append",
                   help="the training command, recorded in the model card; repeat it, in order, for a run "
                        "resumed with other settings")
    e.add_argument("--n-eval", type=int, default=256)
    e.add_argument("--device", default=None, help="where the quality check runs (default: cuda when available)")
    e.add_argument("--note", default=None, help="a line for the model card, e.g. how the hardware was shared")
    e.set_defaults(func=_export)

    i = sub.add_parser("import-diffae", help="convert an official DiffAE checkpoint", add_help=False)
    i.set_defaults(func=None)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "import-diffae":
        return _import_diffae(None, argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
