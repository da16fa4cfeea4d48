"""Benchmark numbers in the docs, written from the benchmark's own record and never typed by hand.

``benchmarks/editor_latency.py --record`` writes ``docs/benchmarks/editor_latency.json``;
``benchmarks/vs_diffae.py`` prints the runs kept in ``benchmarks/profiles/vs_diffae_*.txt``. ``sync_docs()``
(run by the latency benchmark, and by ``hdae publish ... docs``) rewrites the tables in ``docs/performance.md``
between their markers and the README's **Render:** line from those records.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from .pretrained import REPO_DIR

LATENCY_FILE = Path("docs") / "benchmarks" / "editor_latency.json"
LATENCY_BEGIN = "<!-- editor_latency.json: begin (written by benchmarks/editor_latency.py --record) -->"
LATENCY_END = "<!-- editor_latency.json: end -->"
RENDER_MARK = "**Render:**"  # the README line on the editor's latency
TARGET_S = 0.5  # a Render click's median at T = 20 on 2 cores
VS_BEGIN = "<!-- vs_diffae: begin (written from benchmarks/profiles/vs_diffae_*.txt) -->"
VS_END = "<!-- vs_diffae: end -->"
VS_RUNS = (("before", "benchmarks/profiles/vs_diffae_fp32_1thread_cpuclock_before.txt"),
           ("now, fp32", "benchmarks/profiles/vs_diffae_fp32_1thread_cpuclock.txt"),
           ("now, `--amp bf16`", "benchmarks/profiles/vs_diffae_bf16_1thread_cpuclock.txt"))
CEILING_FILE = "benchmarks/profiles/cpu_ceiling_diffae32_1thread.txt"  # benchmarks/cpu_ceiling.py's output
FLOPS_BEGIN = "<!-- cpu_ceiling flops: begin (written from benchmarks/profiles/cpu_ceiling_diffae32_1thread.txt) -->"
FLOPS_END = "<!-- cpu_ceiling flops: end -->"
CEILING_BEGIN = "<!-- cpu_ceiling: begin (written from benchmarks/profiles/cpu_ceiling_diffae32_1thread.txt) -->"
CEILING_END = "<!-- cpu_ceiling: end -->"
HDAE_U_GOAL = 0.85  # hdae_u's training speed over dae's that the CPU goals ask for
PEER_GOAL = 1.3  # dae's training speed over DiffAE's network that the CPU goals ask for
# (the row's name, the ratio's name in the benchmark's summary, the goal, how it is shown)
VS_ROWS = (("`dae` training img/s ÷ DiffAE's", "dae train / peer", f"≥ {PEER_GOAL}", "ratio"),
           ("`dae` decoder forward time ÷ DiffAE's", "dae forward time / peer", "≤ 0.75", "ratio"),
           ("`hdae_u` training img/s ÷ `dae`'s", "hdae_u train / dae", f"≥ {HDAE_U_GOAL}", "ratio"),
           ("DDIM decode (20 steps) over its bare decoder forwards", "dae ddim decode overhead", "≤ 5 %", "percent"),
           ("DDIM inversion (20 steps, 21 calls) over its bare forwards", "dae ddim invert overhead", "≤ 5 %",
            "percent"))


def spread(ts: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile and maximum of some timings (seconds), and how many."""
    ts = [float(t) for t in ts]
    p90 = statistics.quantiles(ts, n=10, method="inclusive")[-1] if len(ts) > 1 else ts[0]
    return {"median": round(statistics.median(ts), 4), "p90": round(p90, 4), "max": round(max(ts), 4), "n": len(ts)}


def read_latency(root: Path | None = None) -> dict[str, Any]:
    """The recorded editor latency ({} when none is recorded or the file is unreadable)."""
    try:
        return json.loads(((root or REPO_DIR) / LATENCY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def latency_table(record: dict[str, Any]) -> str:
    """The Markdown table of a latency record: one row per (threads, T)."""
    if not record.get("rows"):
        return "Not measured yet: run `python benchmarks/editor_latency.py --record`."
    lines = [f"Recorded {record['written']} on {record['machine']} (torch {record['torch']}, "
             f"{record['cores']} cores), `{record['model']}`, {record['renders']} Renders per row:", "",
             "| threads | T | first Render of an image | later Renders, median / p90 / max | α strip, median | "
             "DAE's edit beside it, median |", "|---:|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        dae = f"{r['dae']['median']:.3f} s" if r.get("dae") else "—"
        lines.append(f"| {r['threads']} | {r['steps']} | {r['first']:.2f} s | {r['renders']['median']:.3f} s / "
                     f"{r['renders']['p90']:.3f} s / {r['renders']['max']:.3f} s | {r['strip']['median']:.3f} s | "
                     f"{dae} |")
    return "\n".join(lines)


def render_line(record: dict[str, Any]) -> str:
    """The README's **Render:** line: the median Render at T = 20 with the editor's default thread count (else the
    most threads recorded), beside the target."""
    from .editor_state import EDITOR_PARAMETERS

    rows = [r for r in record.get("rows") or [] if r["steps"] == 20]
    if not rows:
        return f"{RENDER_MARK} not measured yet (`python benchmarks/editor_latency.py --record`)."
    default = EDITOR_PARAMETERS["threads"][2]
    r = next((r for r in rows if r["threads"] == default), None) or max(rows, key=lambda r: r["threads"])
    held = "within" if r["renders"]["median"] <= TARGET_S else "over"
    return (f"{RENDER_MARK} a Render click takes {r['renders']['median']:.2f} s at the median "
            f"({r['renders']['p90']:.2f} s p90) on the shipped `{record['model']}` at T = 20 with {r['threads']} "
            f"thread(s) (the editor's default is {default}) on a {record['cores']}-core CPU, {held} the {TARGET_S} s target; the first Render of an image "
            f"also inverts it ({r['first']:.2f} s). Recorded {record['written']} by `benchmarks/editor_latency.py` "
            f"([docs/performance.md](docs/performance.md#the-editors-render-click)).")


def recorded_medians(path: Path) -> tuple[int, dict[str, float]]:
    """(rounds, ratio name -> median) from the summary a ``benchmarks/vs_diffae.py`` run prints last."""
    lines = path.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("medians over "))
    rounds = int(lines[start].split()[2])
    medians = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        name, rest = line[2:36].strip(), line[36:].split()
        medians[name] = float(rest[0])
    return rounds, medians


def vs_diffae_table(root: Path | None = None) -> str:
    """The table of ratios against DiffAE's network: one column per recorded run, one row per goal."""
    root = root or REPO_DIR
    runs = [(label, *recorded_medians(root / path)) for label, path in VS_RUNS]
    lines = ["| ratio | goal | " + " | ".join(f"{label} ({n} rounds)" for label, n, _ in runs) + " |",
             "|---|---:|" + "---:|" * len(runs)]
    for name, key, goal, how in VS_ROWS:
        cells = []
        for _, _, med in runs:
            v = med.get(key)
            cells.append("" if v is None else f"{v:.2f}" if how == "ratio" else f"{v * 100:+.1f} %".replace("-", "−"))
        lines.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_ceiling(path: Path) -> dict[str, Any]:
    """What ``benchmarks/cpu_ceiling.py`` printed: machine, batch, the convolutions' bound (ms a step, img/s), each
    network's median training img/s and share of the matmul peak, and the FLOPs per training image."""
    import re

    text = path.read_text()

    def find(pattern: str) -> tuple[str, ...]:
        m = re.search(pattern, text, re.M)
        if m is None:
            raise ValueError(f"{path}: no line matching {pattern!r}; rerun benchmarks/cpu_ceiling.py into it")
        return m.groups()

    nets = {who: (float(img), int(pct)) for who, img, pct in re.findall(
        r"^\s+(peer|dae|hdae_u)\s+([\d.]+) img/s =\s+[\d.]+ GFLOP/s =\s+(\d+)% of the matmul peak", text, re.M)}
    conv_ms, bound = find(r"convolutions alone, NCHW: ([\d.]+) ms a step = at most ([\d.]+) img/s")
    flops_dae, flops_u = find(r"FLOPs per training image: dae ([\d.]+) G.*hdae_u ([\d.]+) G")
    return {"machine": find(r"^machine: ([^,]+),")[0], "batch": int(find(r"training step at batch (\d+)")[0]),
            "conv_ms": float(conv_ms), "bound": float(bound), "nets": nets,
            "flops": {"dae": float(flops_dae), "hdae_u": float(flops_u)}}


def flops_text(c: dict[str, Any]) -> str:
    """The sentence on hdae_u's FLOPs over dae's, and what it allows on a compute-bound CPU."""
    r = c["flops"]["hdae_u"] / c["flops"]["dae"]
    reach = ("out of reach without changing the model" if 1 / r < HDAE_U_GOAL else "within reach of the kernels")
    return (f"`hdae_u` costs {r:.2f}× the FLOPs of `dae` per training image ({c['flops']['hdae_u']:.2f} G against "
            f"{c['flops']['dae']:.2f} G: its U-Net encoder), so on a compute-bound CPU it trains at about 1/{r:.2f} = "
            f"{1 / r:.2f}× `dae` whatever the kernels do; {HDAE_U_GOAL}× is {reach}.")


def ceiling_text(c: dict[str, Any]) -> str:
    """The paragraph on how far fp32 training can go on this CPU, computed from ``read_ceiling``."""
    (peer, peer_pct), (dae, dae_pct) = c["nets"]["peer"], c["nets"]["dae"]
    step = c["batch"] / dae * 1000
    other = step - c["conv_ms"]
    target = PEER_GOAL * peer
    allowed = c["batch"] / target * 1000 - c["conv_ms"]
    return (f"On this {c['machine']} core the convolutions alone allow at most {c['bound']:.1f} img/s; DiffAE's network "
            f"trains at {peer:.1f} img/s ({peer_pct} % of the fp32 1024² matmul peak), `dae` at {dae:.1f} "
            f"({dae / peer:.2f}×, {dae_pct} %), and {PEER_GOAL}× the peer would be {target:.1f} img/s, "
            f"{_pct(target / c['bound'])} of that bound. Getting there means shrinking everything besides the "
            f"convolutions' own arithmetic (the layout reorders oneDNN does around each NCHW convolution, attention, "
            f"norms, activations, Adam: {_pct(other / step)} of the step now, {other:.0f} of {step:.0f} ms) by "
            f"{_pct(1 - allowed / other)}.")


def _pct(x: float) -> str:
    return f"{round(100 * x)} %"


def _between(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"


def sync_docs(root: Path | None = None) -> list[Path]:
    """Rewrite docs/performance.md's tables (editor latency, ratios against DiffAE) and the README's **Render:**
    line from the records."""
    root = root or REPO_DIR
    record, changed = read_latency(root), []
    perf = root / "docs" / "performance.md"
    text = perf.read_text()
    new = _between(text, LATENCY_BEGIN, LATENCY_END, latency_table(record))
    if VS_BEGIN in new:
        new = _between(new, VS_BEGIN, VS_END, vs_diffae_table(root))
    if CEILING_BEGIN in new or FLOPS_BEGIN in new:
        ceiling = read_ceiling(root / CEILING_FILE)
        new = _between(_between(new, FLOPS_BEGIN, FLOPS_END, flops_text(ceiling)), CEILING_BEGIN, CEILING_END,
                       ceiling_text(ceiling))
    if new != text:
        perf.write_text(new)
        changed.append(perf)
    readme = root / "README.md"
    text = readme.read_text()
    new = "\n".join(render_line(record) if line.startswith(RENDER_MARK) else line for line in text.split("\n"))
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    return changed
