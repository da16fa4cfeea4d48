"""How long does the editor take to answer a Render click? Median and spread of render times on a shipped model.

    python benchmarks/editor_latency.py                      # shapes32_hdae_u, T = 20, threads 1 and 2
    python benchmarks/editor_latency.py --steps 10 20 --renders 30 --threads 2

For each DDIM step count T and thread count, builds the editor's state (held-out shapes, directions fitted on
the training split), inverts the first image once (timed apart: the first Render of an image pays for it),
then times ``renders`` Renders, each with a new α on one slider and, every other one, a truncation k, as a
user moving sliders would. Prints one line per setting: the first render with its inversion, then median,
90th percentile and max of the others, and the same for an α strip and for compare with DAE.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from hdae_core import pretrained
from hdae_core.editor_state import alpha_strip, follow, state_from_checkpoint


def _times(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _summary(ts: list[float]) -> str:
    q = statistics.quantiles(ts, n=10, method="inclusive")[-1] if len(ts) > 1 else ts[0]
    return f"median {statistics.median(ts):.3f} s, p90 {q:.3f} s, max {max(ts):.3f} s (n={len(ts)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes32_hdae_u")
    ap.add_argument("--dae", default="shapes32_dae", help="the model `compare with DAE` adds ('' for none)")
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--renders", type=int, default=20)
    ap.add_argument("--n-stats", type=int, default=512, help="images the directions are fitted on (not timed)")
    args = ap.parse_args()
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

            ts = _times(render, args.renders)
            strip = _times(lambda i: alpha_strip(state), max(3, args.renders // 5))
            line = (f"threads {threads}, T = {steps}: first render {first:.3f} s (with the inversion and the reconstruction); "
                    f"renders {_summary(ts)}; α strip {_summary(strip)}")
            if dae is not None:
                dae.steps = steps
                dae._x_T.clear()
                follow(dae, state).render()  # its inversion
                line += f"; DAE's edit beside it {_summary(_times(lambda i: follow(dae, state).render(), args.renders))}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
