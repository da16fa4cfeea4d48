"""How long does the editor take to answer a Render click? Median and spread of render times on a shipped model.

    python benchmarks/editor_latency.py                      # shapes32_hdae_u, T = 20, threads 1 and 2
    python benchmarks/editor_latency.py --steps 10 20 --renders 30 --threads 2
    python benchmarks/editor_latency.py --record             # and write docs/benchmarks/editor_latency.json, the
                                                             # table in docs/performance.md and the README's line

For each DDIM step count T and thread count, builds the editor's state (held-out shapes, directions fitted on
the training split), inverts the first image once (timed apart: the first Render of an image pays for it),
then times ``renders`` Renders, each with a new α on one slider and, every other one, a truncation k, as a
user moving sliders would. Prints one line per setting: the first render with its inversion, then median,
90th percentile and max of the others, and the same for an α strip and for compare with DAE.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone

import torch

from hdae_core import benchdocs, hardware, pretrained
from hdae_core.editor_state import alpha_strip, follow, state_from_checkpoint


def _times(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _summary(s: dict) -> str:
    return f"median {s['median']:.3f} s, p90 {s['p90']:.3f} s, max {s['max']:.3f} s (n={s['n']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes32_hdae_u")
    ap.add_argument("--dae", default="shapes32_dae", help="the model `compare with DAE` adds ('' for none)")
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--renders", type=int, default=20)
    ap.add_argument("--n-stats", type=int, default=512, help="images the directions are fitted on (not timed)")
    ap.add_argument("--record", action="store_true",
                    help=f"write {benchdocs.LATENCY_FILE} and the docs' text quoting it (the shipped model only)")
    args = ap.parse_args()
    rows = []
    kw = dict(n_images=8, n_stats=args.n_stats)
    state = state_from_checkpoint(pretrained.resolve(args.model), **kw)
    dae = state_from_checkpoint(pretrained.resolve(args.dae), **kw) if args.dae else None
    name = state.attribute_names[0]
    print(f"{args.model}: codes [{state.L}, {state.D}] at {state.size} px; slider {name!r}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads by default")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for steps in args.steps:
            state.steps = steps
            state.select(0)
            state.set_attribute(name, 0.0)
            state._x_T.clear()
            state._recon.clear()
            t0 = time.perf_counter()
            state.render()  # a first Render pays for this image's inversion and its reconstruction panel
            state.reconstruction()
            first = time.perf_counter() - t0

            def render(i):  # what a Render click computes: the edit (the reconstruction panel is cached)
                state.set_attribute(name, 0.05 * (i % 20 - 10))
                state.k = None if i % 2 else 100
                state.render()
                state.reconstruction()

            row = {"threads": threads, "steps": steps, "first": round(first, 4),
                   "renders": benchdocs.spread(_times(render, args.renders)),
                   "strip": benchdocs.spread(_times(lambda i: alpha_strip(state), max(3, args.renders // 5)))}
            line = (f"threads {threads}, T = {steps}: first render {first:.3f} s (with the inversion and the "
                    f"reconstruction); renders {_summary(row['renders'])}; α strip {_summary(row['strip'])}")
            if dae is not None:
                dae.steps = steps
                dae._x_T.clear()
                follow(dae, state).render()  # its inversion
                row["dae"] = benchdocs.spread(_times(lambda i: follow(dae, state).render(), args.renders))
                line += f"; DAE's edit beside it {_summary(row['dae'])}"
            rows.append(row)
            print(line, flush=True)
    if args.record:
        record = {"written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "model": args.model,
                  "machine": hardware.cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                  "renders": args.renders, "rows": rows}
        path = pretrained.REPO_DIR / benchdocs.LATENCY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"recorded {path}; rewrote {[str(p) for p in benchdocs.sync_docs()] or 'nothing (unchanged)'}")


if __name__ == "__main__":
    main()
