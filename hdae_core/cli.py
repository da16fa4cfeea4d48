"""The ``hdae`` command: thin argument parsing around the library.

Every numeric and path argument is checked while parsing; a user error prints one line
``hdae: error: …`` naming the argument and what it allows, and exits 2. ``--debug`` (anywhere on the
line) or ``HDAE_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import pickle
import sys
import tempfile
from pathlib import Path

import torch

from .bench import main as bench_main
from .config import PRESETS, VARIANTS, ModelConfig, check_field_type
from .diffae_import import main as diffae_main
from .model import HDAE
from .config import TrainConfig
from .train import RunFolderBusy, TrainingDiverged, train


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``hdae: error: …``, exit 2 (subcommand parsers included)."""

    def error(self, message):
        raise UserError(message)


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False, what=None):
    """An argparse type: a finite ``kind`` in the given range, its message saying what is allowed."""
    lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
    hi_s = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
    allowed = what or f"{'an integer' if kind is int else 'a number'} {' and '.join(x for x in (lo_s, hi_s) if x)}".strip()

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if (kind is float and not math.isfinite(v)) or (lo is not None and (v <= lo if lo_open else v < lo)) \
                or (hi is not None and (v >= hi if hi_open else v > hi)):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return v

    parse.__name__ = allowed  # argparse names the type in some messages
    return parse


POSITIVE_INT = _number(int, 1, what="a positive integer")
COUNT = _number(int, 0, what="an integer >= 0")
POSITIVE_FLOAT = _number(float, 0, lo_open=True, what="a finite number > 0")


def _out_folder(text: str) -> str:
    """A folder the run can write to, checked now so a mistake shows before any work starts; it is created when
    the run starts, so a command refused on another argument leaves nothing behind."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder to write the run into")
    nearest = path.absolute()
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {nearest} is a file; expected a folder to write the run into")
    try:  # a file written and removed at once where the folder is (or will be made): nothing stays
        with tempfile.NamedTemporaryFile(dir=nearest, prefix=".hdae-write-test-"):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"can't write to {text} ({e.strerror or e}); expected a writable folder") from None
    return text


def _existing(text: str) -> str:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def _data(text: str) -> str:
    if text.lower() == "shapes" or Path(text).exists():
        return text
    raise argparse.ArgumentTypeError(f"{text} does not exist; expected 'shapes', an image folder or an LMDB folder")


def _device(text: str) -> str:
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine (torch {torch.__version__}); use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def _model_json(text: str) -> dict:
    """ModelConfig field overrides as a JSON object, each field known and of its type."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}); "
                                         'expected an object such as \'{"model_channels": 32}\'') from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of ModelConfig fields, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown field(s) {unknown}; ModelConfig has {', '.join(fields)}")
    for k, v in d.items():
        try:
            check_field_type(ModelConfig, k, str(fields[k].type), v)
        except TypeError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return d


# How `hdae train` spells each TrainConfig field and what it accepts. Defaults come from TrainConfig alone;
# a field missing here gets --field-name typed by its default, so a new field is an option at once.
# `model` is built from --preset, --variant, --model-json and --prediction.
TRAIN_OPTIONS: dict[str, dict] = {
    "out": dict(required=True, type=_out_folder, help="run folder, new or empty (checkpoint, metrics.csv, grids)"),
    "data": dict(type=_data, help="image folder or DiffAE LMDB; default: built-in shapes"),
    "steps": dict(type=POSITIVE_INT),
    "batch_size": dict(flag="--batch", type=POSITIVE_INT, help="global batch size"),
    "lr": dict(type=POSITIVE_FLOAT),
    "ema_decay": dict(type=_number(float, 0, 1, hi_open=True)),
    "ema_warmup": dict(help="no EMA warm-up (the warm-up decays by min(ema-decay, (1 + n) / (10 + n)), so short "
                            "runs give a usable EMA)"),
    "grad_clip": dict(type=POSITIVE_FLOAT, help="clip the gradient norm to this"),
    "seed": dict(type=COUNT),
    "amp": dict(choices=["auto", "bf16", "fp16", "none"], help="autocast dtype (auto: bf16 on CUDA, off on CPU)"),
    "channels_last": dict(choices=["auto", "on", "off"], help="memory format (auto: on for CUDA)"),
    "compile": dict(help="torch.compile the training step's forward"),
    "compile_mode": dict(choices=["default", "reduce-overhead", "max-autotune"],
                         help="torch.compile mode (implies --compile unless default)"),
    "device": dict(type=_device),
    "num_workers": dict(flag="--workers", type=COUNT, help="DataLoader worker processes (and for --cache-data)"),
    "cache_data": dict(choices=["auto", "on", "off"],
                       help="render the built-in data set once into device memory (auto: on CUDA)"),
    "max_minutes": dict(type=_number(float, 0),
                        help="stop after this much wall time with a checkpoint and an evaluation (0: no limit)"),
    "log_every": dict(type=POSITIVE_INT),
    "eval_every": dict(type=COUNT, help="0: no evaluation"),
    "eval_size": dict(type=POSITIVE_INT, help="held-out images per evaluation"),
    "eval_steps": dict(type=POSITIVE_INT, help="DDIM steps of the evaluation's encode and decode"),
    "ckpt_every": dict(type=POSITIVE_INT),
    "grid_every": dict(type=COUNT, help="write the reconstruction grid at evaluations on multiples of this "
                                        "(0: at every evaluation)"),
    "progress": dict(help="no progress bar"),
    "tensorboard": dict(help="no TensorBoard log in OUT/tb (written when tensorboard is installed)"),
    "on_bad_image": dict(choices=["error", "skip"],
                         help="an undecodable or non-RGB image in --data: stop with its name (error) or skip it and "
                              "count it (skip)"),
    "convert_images": dict(help="convert grayscale, RGBA and palette images in --data to RGB instead of refusing them"),
    "diverge_factor": dict(type=_number(float, 0),
                           help="stop when the loss reaches this many times its running level (0: only a "
                                "non-finite loss stops)"),
}
_TYPES = {int: COUNT, float: _number(float, 0)}


def add_train_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (``model`` aside), its default TrainConfig's: ``--field-name``
    (or the flag named in TRAIN_OPTIONS); a boolean is ``--name`` when off by default, ``--no-name`` when on."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            continue
        kw = dict(TRAIN_OPTIONS.get(f.name, {}))
        default = f.default
        if default is dataclasses.MISSING:
            raise TypeError(f"TrainConfig.{f.name} has no plain default: give `hdae train` its option by hand")
        name = f.name.replace("_", "-")
        if isinstance(default, bool):
            flag = kw.pop("flag", f"--no-{name}" if default else f"--{name}")
            parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", **kw)
            continue
        flag = kw.pop("flag", f"--{name}")
        if "type" not in kw and "choices" not in kw and type(default) in _TYPES:
            kw["type"] = _TYPES[type(default)]
        if not kw.get("required"):
            kw["default"] = default
            if default is not None:
                kw["help"] = (kw.get("help", "") + " (default: %(default)s)").lstrip()
        if "choices" not in kw:
            kw["metavar"] = flag[2:].upper().replace("-", "_")
        parser.add_argument(flag, dest=f.name, **kw)


def train_config_from_args(args):
    """The TrainConfig that `hdae train` runs for parsed ``args``."""
    overrides = dict(args.model_json or {})
    if args.prediction:
        overrides["prediction"] = args.prediction
    try:
        model = ModelConfig.preset(args.preset, args.variant, **overrides)
    except (TypeError, ValueError) as e:
        raise UserError(f"argument --model-json: {e}") from None
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    kw["compile"] = args.compile or args.compile_mode != "default"
    return TrainConfig(model=model, **kw)


def _train(args) -> int:
    cfg = train_config_from_args(args)
    try:
        path = train(cfg, resume=args.resume)
    except (TrainingDiverged, RunFolderBusy) as e:
        raise UserError(str(e)) from None
    print(f"checkpoint: {path}")
    return 0


def _params(args) -> int:
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
    return diffae_main(rest)


def _figures(args) -> int:
    from .pipeline import main as pipeline_main  # lazy: papermill and nbconvert add 3-5 s to every `hdae` start

    return pipeline_main(args)


def _publish(args) -> int:
    from .publish import main as publish_main  # lazy, as _figures: it reads the pipeline's table

    return publish_main(args)


def _bench(args) -> int:
    return bench_main(args)


def _export(args) -> int:
    from .modelcard import export_run  # lazy: its evaluation imports pandas, ~0.7 s on every `hdae` start

    info = export_run(args.run, args.dest, command=args.command, n_eval=args.n_eval, device=args.device,
                      note=args.note, force=args.force)
    print(json.dumps(info["quality"], indent=2))
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("hdae")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="hdae", description="Hierarchical Diffusion Autoencoders")
    ap.add_argument("--version", action="version", version=f"hdae {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model (built-in shapes by default)")
    t.add_argument("--preset", default="shapes32", choices=list(PRESETS))
    t.add_argument("--variant", default="hdae_u", choices=list(VARIANTS))
    t.add_argument("--model-json", default=None, type=_model_json, help="JSON of ModelConfig field overrides")
    t.add_argument("--prediction", default=None, choices=["eps", "v"],
                   help="decoder output: eps (DiffAE, the default) or v (its decoder follows the codes far sooner)")
    add_train_config_options(t)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its checkpoint (an existing run folder is refused without it)")
    t.set_defaults(func=_train)

    p = sub.add_parser("params", help="print the parameter count table (presets × variants)")
    p.add_argument("presets", nargs="*")
    p.set_defaults(func=_params)

    f = sub.add_parser("figures", help="run the notebooks into reports/")
    f.add_argument("--profile", default="full", choices=["smoke", "full"])
    f.add_argument("--only", action="append", default=None, help="notebook number, name or topic (repeatable)")
    f.add_argument("--reports", "--out", dest="reports", default="reports",
                   help="the report folder (its own index.md); default reports/")
    f.add_argument("--checkpoint", default=None, type=_existing,
                   help="your model instead of the demo pair: a checkpoint folder, a run folder or an import-diffae folder")
    f.add_argument("--checkpoint-dae", default=None, type=_existing,
                   help="a second model the DAE-vs-HDAE comparisons set against --checkpoint (none: one model)")
    f.add_argument("--data", default=None, type=_existing,
                   help="your images instead of the built-in Shapes: an image folder or a DiffAE LMDB")
    f.add_argument("--attributes", default=None, type=_existing,
                   help="labels of --data: list_attr_celeba.txt, CelebAMask-HQ-attribute-anno.txt or a CSV "
                        "(filename column, 0/1 or ±1 columns, other numbers read as continuous)")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--pretrained-dir", default=None, help="folder of the demo models (default data/pretrained)")
    f.add_argument("--kernel", default="hdae", help="Jupyter kernel the notebooks run with (make venv registers 'hdae')")
    f.add_argument("--overwrite", action="store_true",
                   help="write into an --out that holds an earlier hdae report (its notebooks' results are replaced)")
    f.add_argument("--strict", action="store_true",
                   help="exit non-zero when a notebook is degraded (it ran, but one of its sanity checks failed; a claim "
                        "of the paper not shown on these models never fails the run)")
    f.add_argument("--format", dest="formats", default=None, metavar="FORMATS",
                   help="figure formats, comma-separated from png, pdf, svg (e.g. png,pdf,svg): every figure gets a "
                        "copy beside its PNG, vector where the figure is (image grids keep their images raster)")
    f.add_argument("--jobs", type=POSITIVE_INT, default=None,
                   help="notebooks run at once, one kernel each (default: one per core, at most 2)")
    f.add_argument("--quick", action="store_true",
                   help="a classroom run: quick=True to every notebook that takes it (fewer images and steps, the "
                        "same figures)")
    f.add_argument("--inception-weights", default=None, metavar="PATH", type=_existing,
                   help="an Inception-v3 weights file (torch-fidelity's pt_inception-2015-12-05): adds FID on real "
                        "images through torchmetrics; without it FID is skipped with a message")
    f.set_defaults(func=_figures)

    pb = sub.add_parser("publish", help="copy a full report's figures into DEST/figures and write DEST/results.md")
    pb.add_argument("report", nargs="?", default="reports", help="the report folder (default reports/)")
    pb.add_argument("dest", nargs="?", default="docs", help="the docs folder (default docs/)")
    pb.set_defaults(func=_publish)

    b = sub.add_parser("bench", help="speed benchmark")
    b.add_argument("--preset", default=None)
    b.add_argument("--variant", default=None)
    b.add_argument("--batch", type=POSITIVE_INT, default=16)
    b.add_argument("--json", action="store_true")
    b.add_argument("--device", default=None, type=_device)
    b.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"],
                   help="autocast dtype (auto: bf16 on CUDA, fp32 on CPU, as train())")
    b.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="memory format (auto: on for CUDA, as train())")
    b.add_argument("--compile", action="store_true", help="torch.compile the training step")
    b.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads")
    b.add_argument("--repeats", type=POSITIVE_INT, default=3, help="timed calls per measurement")
    b.add_argument("--warmup", type=int, default=1, help="untimed calls before them")
    b.add_argument("--timing", default="best", choices=["best", "mean"],
                   help="best of the repeats, or their mean (as the DiffAE peer's benchmark)")
    b.add_argument("--ddim-steps", default="20,100", help="DDIM step counts to time, comma-separated; 'none' skips DDIM")
    b.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the matmul peak")
    b.set_defaults(func=_bench)

    e = sub.add_parser("export", help="ship a run as a demo model (EMA weights, metrics, quality check, card)")
    e.add_argument("run", type=_existing, help="run folder written by `hdae train`")
    e.add_argument("dest", help="destination, new or empty, e.g. data/pretrained/shapes32_hdae_u")
    e.add_argument("--force", action="store_true", help="replace the checkpoint already in DEST")
    e.add_argument("--command", required=True, action="append",
                   help="the training command, recorded in the model card; repeat it, in order, for a run "
                        "resumed with other settings")
    e.add_argument("--n-eval", type=POSITIVE_INT, default=256)
    e.add_argument("--device", default=None, type=_device, help="where the quality check runs (default: cuda when available)")
    e.add_argument("--note", default=None, help="a line for the model card, e.g. how the hardware was shared")
    e.set_defaults(func=_export)

    i = sub.add_parser("import-diffae", help="convert an official DiffAE checkpoint", add_help=False)
    i.set_defaults(func=None)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HDAE_DEBUG", "").lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv and argv[0] == "import-diffae":
            return _import_diffae(None, argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("hdae: interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        if debug:
            raise
        print(f"hdae: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, pickle.UnpicklingError) as e:
        # bad inputs found after parsing: a checkpoint, a data set, a config file
        if debug:
            raise
        print(f"hdae: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, the traceback on request
        if debug:
            raise
        print(f"hdae: error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if not isinstance(e, OSError) or e.filename is None or str(e.filename) in text else f"{e.filename}: {text}"


if __name__ == "__main__":
    sys.exit(main())
