"""Benchmark numbers in the docs come from the benchmark's record (hdae_core.benchdocs), never typed by hand."""
import json

import pytest

from hdae_core import benchdocs
from hdae_core.pretrained import REPO_DIR

RECORD = {"written": "2026-01-01 00:00 UTC", "model": "shapes32_hdae_u", "machine": "a CPU", "cores": 2,
          "torch": "2.13.0", "renders": 4, "rows": [
              {"threads": 1, "steps": 20, "first": 0.41, "renders": benchdocs.spread([0.1, 0.12, 0.11, 0.3]),
               "strip": benchdocs.spread([0.2, 0.25, 0.22]), "dae": benchdocs.spread([0.13, 0.14, 0.12, 0.15])},
              {"threads": 2, "steps": 20, "first": 0.6, "renders": benchdocs.spread([0.6, 0.7, 0.65, 0.8]),
               "strip": benchdocs.spread([0.3, 0.3, 0.3])}]}


def test_spread():
    s = benchdocs.spread([0.1, 0.12, 0.11, 0.3])
    assert s["median"] == 0.115 and s["max"] == 0.3 and s["n"] == 4 and 0.12 < s["p90"] <= 0.3
    assert benchdocs.spread([0.5]) == {"median": 0.5, "p90": 0.5, "max": 0.5, "n": 1}


def test_table_and_line_are_written_from_the_record():
    table = benchdocs.latency_table(RECORD)
    assert "| 1 | 20 | 0.41 s | 0.115 s /" in table and "| 2 | 20 | 0.60 s | 0.675 s /" in table
    assert table.count("\n|") == 4 and "| — |" in table  # header, rule and two rows; no DAE in the second
    line = benchdocs.render_line(RECORD)
    # the line quotes the row of the editor's default thread count (1), and says whether it is within the target
    assert line.startswith("**Render:** a Render click takes 0.12 s at the median") and "within the 0.5 s" in line
    slow = json.loads(json.dumps(RECORD))
    slow["rows"] = slow["rows"][1:]  # no row at the default: the most threads recorded
    assert "0.68 s at the median" in benchdocs.render_line(slow) and "over the 0.5 s" in benchdocs.render_line(slow)
    assert "not measured yet" in benchdocs.render_line({}) and "Not measured yet" in benchdocs.latency_table({})


def test_sync_rewrites_only_between_the_markers(tmp_path):
    (tmp_path / "docs" / "benchmarks").mkdir(parents=True)
    (tmp_path / benchdocs.LATENCY_FILE).write_text(json.dumps(RECORD))
    perf = tmp_path / "docs" / "performance.md"
    perf.write_text(f"# P\n\nkept\n\n{benchdocs.LATENCY_BEGIN}\nold table\n{benchdocs.LATENCY_END}\n\nafter\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n\n**Render:** old\n\nmore\n")
    assert set(benchdocs.sync_docs(tmp_path)) == {perf, readme}
    text = perf.read_text()
    assert "old table" not in text and benchdocs.latency_table(RECORD) in text
    assert text.startswith("# P\n\nkept\n\n") and text.endswith("\n\nafter\n")
    assert readme.read_text() == f"intro\n\n{benchdocs.render_line(RECORD)}\n\nmore\n"
    assert benchdocs.sync_docs(tmp_path) == []  # nothing left to change


def test_the_checkout_quotes_its_record():
    record = benchdocs.read_latency()
    readme = [line for line in (REPO_DIR / "README.md").read_text().splitlines()
              if line.startswith(benchdocs.RENDER_MARK)]
    assert readme == [benchdocs.render_line(record)], "run python benchmarks/editor_latency.py --record"
    perf = (REPO_DIR / "docs" / "performance.md").read_text()
    section = perf.split(benchdocs.LATENCY_BEGIN, 1)[1].split(benchdocs.LATENCY_END, 1)[0]
    assert section.strip() == benchdocs.latency_table(record).strip()


def test_ratios_against_diffae_come_from_the_recorded_runs(tmp_path):
    run = tmp_path / "run.txt"
    run.write_text("round 1 dae train 19.9 img/s\n\nmedians over 2 rounds (a CPU, 1 threads, torch x, cpu clock):\n"
                   "  dae train / peer                     1.250   (1.2, 1.3)\n"
                   "  dae ddim decode overhead            -0.015   (-0.01, -0.02)\n\nafter the summary\n")
    assert benchdocs.recorded_medians(run) == (2, {"dae train / peer": 1.25, "dae ddim decode overhead": -0.015})
    # the checkout's table: every recorded run, each ratio as its run's median says
    table = benchdocs.vs_diffae_table()
    for label, path in benchdocs.VS_RUNS:
        n, med = benchdocs.recorded_medians(REPO_DIR / path)
        assert f"{label} ({n} rounds)" in table
        assert "| `dae` training img/s ÷ DiffAE's | ≥ 1.3 |" in table and f"{med['dae train / peer']:.2f}" in table
    perf = (REPO_DIR / "docs" / "performance.md").read_text()
    section = perf.split(benchdocs.VS_BEGIN, 1)[1].split(benchdocs.VS_END, 1)[0]
    assert section.strip() == table.strip(), "docs/performance.md: rewrite it with hdae_core.benchdocs.sync_docs()"


def test_the_cpu_ceiling_text_is_computed_from_its_recorded_run(tmp_path):
    c = benchdocs.read_ceiling(REPO_DIR / benchdocs.CEILING_FILE)
    assert c["batch"] > 0 and c["conv_ms"] > 0 and {"peer", "dae", "hdae_u"} <= set(c["nets"])
    r = c["flops"]["hdae_u"] / c["flops"]["dae"]
    assert f"costs {r:.2f}× the FLOPs" in benchdocs.flops_text(c)
    # a made-up run: every number of the paragraph follows from it
    made = {"machine": "X", "batch": 10, "conv_ms": 400.0, "bound": 25.0, "nets": {"peer": (10.0, 50), "dae": (12.5, 60)},
            "flops": {"dae": 2.0, "hdae_u": 2.2}}
    text = benchdocs.ceiling_text(made)
    # step 800 ms, 400 of it besides the convolutions (50 %); 1.3 × 10 = 13 img/s, 52 % of 25; at 13 img/s the step
    # is 769 ms, leaving 369 ms besides the convolutions: 8 % less than 400
    assert "at most 25.0 img/s" in text and "`dae` at 12.5 (1.25×, 60 %)" in text and "13.0 img/s, 52 % of" in text
    assert "50 % of the step now, 400 of 800 ms) by 8 %." in text
    assert "within reach" in benchdocs.flops_text(made) and "1/1.10 = 0.91×" in benchdocs.flops_text(made)
    bad = tmp_path / "c.txt"
    bad.write_text("machine: X, torch\n")
    with pytest.raises(ValueError, match="rerun benchmarks/cpu_ceiling.py"):
        benchdocs.read_ceiling(bad)
    perf = (REPO_DIR / "docs" / "performance.md").read_text()
    for begin, end, body in ((benchdocs.FLOPS_BEGIN, benchdocs.FLOPS_END, benchdocs.flops_text(c)),
                             (benchdocs.CEILING_BEGIN, benchdocs.CEILING_END, benchdocs.ceiling_text(c))):
        assert perf.split(begin, 1)[1].split(end, 1)[0].strip() == body
