"""Ship what a full report fitted beside the demo models, so that the next report loads it instead of refitting.

    python benchmarks/ship_fitted.py reports            # after a full `make figures` on the shipped pair
    python benchmarks/ship_fitted.py reports --force    # replace what is shipped already

Copies, each with ``identity.json`` (what it was fitted on) and a card (README.md) written from the report's own
metrics and checks:
- ``09_sampling/latent_<model>`` → ``data/pretrained/<model folder>/latent_ddim/`` (the latent DDIM of each shipped
  model; refused when its identity names other weights than the shipped model's);
- ``_tmp/oracle/size32`` → ``data/pretrained/shapes32_oracle/`` (the Shapes attribute oracle);
- ``_tmp/oracle/pixel_size32`` → ``data/pretrained/shapes32_pixel_oracle/`` (the pixel oracle of 08);
- ``08_layout/layout_encoder`` → ``data/pretrained/shapes32_hdae_u/layout_encoder/`` (the layout encoder of 08;
  refused when its identity names other weights than the shipped model's).
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from pathlib import Path

from hdae_core import cache, layout, pretrained
from hdae_core.config import VARIANT_LABELS
from hdae_core.latent import SHIPPED_DIR

ROOT = pretrained.PRETRAINED_DIR


@functools.cache
def _shipped_identity(folder: str) -> str:
    """The identity of a shipped model's weights (hashed once, however many things are shipped beside it)."""
    return cache.model_identity(pretrained.load(folder))


def _fitted_on_shipped(src: Path, folder: str, study: str) -> dict:
    """The identity of what ``study`` fitted in ``src``, which must name the shipped ``folder``'s weights."""
    ident = cache.read_identity(src)
    if ident is None:
        sys.exit(f"{src}: nothing fitted there ({study} loaded a shipped or cached one); run {study} with "
                 f"refit=True to fit one")
    shipped = _shipped_identity(folder)
    if ident.get("model") != shipped:
        sys.exit(f"{src}: its identity does not name the shipped {folder} ({shipped}); rerun {study} on it")
    return ident


def _checks(metrics: dict, prefix: str = "") -> list[str]:
    return [f"| {c['name'].replace('|', chr(92) + '|')} | {c['value']:.4g} | {c.get('relation', '')} {c['bound']} | "
            f"{'yes' if c['passed'] else 'NO'} |" for c in metrics.get("checks", []) if c["name"].startswith(prefix)
            and isinstance(c["value"], (int, float))]


def _card(title: str, what: str, identity: dict, summary: dict, rows: list[str]) -> str:
    lines = [f"# {title}", "", what, "", f"Fitted by `{summary.get('command') or 'hdae figures'}` "
             f"(profile {summary['profile']}, written {summary['written']}); studies load it when the identity "
             "below matches what they would fit on, and refit otherwise (`refit=True` refits anyway).", "",
             "```json", json.dumps(identity, indent=1, sort_keys=True), "```", ""]
    if rows:
        lines += ["What that report measured:", "", "| measure | value | against | passed |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


def _copy(src: Path, dest: Path, force: bool) -> None:
    if dest.exists():
        if not force:
            sys.exit(f"{dest} exists: pass --force to replace it")
        if cache.read_identity(dest) is None:
            sys.exit(f"{dest} holds files that were not shipped by this script; move them away first")
        shutil.rmtree(dest)
    shutil.copytree(src, dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--force", action="store_true")
    kinds = ["latent_ddim", "shapes32_oracle", "shapes32_pixel_oracle", "layout_encoder"]
    ap.add_argument("--only", nargs="+", choices=kinds, default=kinds)
    args = ap.parse_args()
    summary = json.loads((args.report / "summary.json").read_text())
    if summary["profile"] != "full" or summary.get("inputs"):
        sys.exit(f"{args.report}: not a full report on the shipped pair")
    m09 = json.loads((args.report / "09_sampling" / "metrics.json").read_text()) if "latent_ddim" in args.only else {}
    for key, folder in pretrained.DEMO_MODELS.items() if "latent_ddim" in args.only else ():
        src = args.report / "09_sampling" / f"latent_{key}"
        ident = _fitted_on_shipped(src, folder, "09")
        dest = ROOT / folder / SHIPPED_DIR
        _copy(src, dest, args.force)
        label = VARIANT_LABELS[key]
        (dest / "README.md").write_text(_card(f"Latent DDIM of {folder}", "DiffAE's latent DDIM (an MLP over the "
                                              "standardised codes) fitted on this model's codes of training shapes, "
                                              "as 09_sampling fits it.", ident, summary, _checks(m09, label)))
        print(f"shipped {dest}")
    for name, cached, what in (("shapes32_oracle", "size32", "The Shapes attribute oracle (06, 07, 08, 09)."),
                               ("shapes32_pixel_oracle", "pixel_size32", "The pixel oracle of 08_layout.")):
        if name not in args.only:
            continue
        src = args.report / "_tmp" / "oracle" / cached
        ident = cache.read_identity(src)
        if ident is None:
            print(f"{src}: no cache entry with an identity (the study that trains it did not run): skipped")
            continue
        _copy(src, ROOT / name, args.force)
        config = next((ROOT / name).glob("*_config.json"))
        report = json.loads(config.read_text()).get("report") or {}
        rows = [f"| {k} | {v:.4g} | held-out images of its own training run | - |" for k, v in report.items()
                if isinstance(v, (int, float))]
        rows += [f"| mean accuracy over {len(v)} attributes | {sum(v.values()) / len(v):.4g} | held-out images | - |"
                 for k, v in report.items() if k == "accuracy" and isinstance(v, dict)]
        (ROOT / name / "README.md").write_text(_card(name, what, ident, summary, rows))
        print(f"shipped {ROOT / name}")
    if "layout_encoder" in args.only:
        _ship_layout(args.report, summary, args.force)


def _ship_layout(report: Path, summary: dict, force: bool) -> None:
    """08's layout encoder, beside the shipped hdae_u it was trained on."""
    src = report / "08_layout" / "layout_encoder"
    folder = pretrained.DEMO_MODELS["hdae_u"]
    ident = _fitted_on_shipped(src, folder, "08")
    dest = ROOT / folder / layout.SHIPPED_DIR
    _copy(src, dest, force)
    m08 = json.loads((report / "08_layout" / "metrics.json").read_text())
    (dest / "README.md").write_text(_card(f"Layout encoder of {folder}", "The layout encoder of 08_layout: a small "
                                          "CNN from a semantic label map to this model's coarse standardised codes "
                                          "(HDAE Fig. 11), trained on rendered shapes with their label maps.", ident,
                                          summary, _checks(m08, "layout encoder")))
    print(f"shipped {dest}")


if __name__ == "__main__":
    main()
