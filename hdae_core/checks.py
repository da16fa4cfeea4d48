"""A study's checks: each headline held against its baseline or bound, and the verdict they give (ok / degraded).

Two kinds. A *sanity* check asks whether the study measured something (a trained model beats a trivial baseline,
an edit moves its attribute): one that fails makes the notebook *degraded*. A *claim* check asks whether one of the
paper's claims shows on these models (truncated features lower leakage at equal success): it is a result either
way, reported as shown or not shown, and leaves the notebook's status alone."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

RELATIONS = ("<", "<=", ">", ">=", "in")
KINDS = ("sanity", "claim")


def _number(v: Any) -> float:
    if torch.is_tensor(v):
        v = v.item()
    return float(v)


def check(name: str, value: Any, bound: Any, relation: str = "<=", kind: str = "sanity") -> dict[str, Any]:
    """One check ``{"name", "value", "bound", "passed", "relation", "kind"}``: ``value relation bound``; ``in`` takes
    a bound ``[low, high]`` (inclusive). A value that is not a finite number fails. ``kind``: see the module."""
    if relation not in RELATIONS:
        raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    value = _number(value)
    if relation == "in":
        lo, hi = (_number(b) for b in bound)
        bound_out: Any = [lo, hi]
        ok = lo <= value <= hi
    else:
        bound_out = _number(bound)
        ok = {"<": value < bound_out, "<=": value <= bound_out, ">": value > bound_out,
              ">=": value >= bound_out}[relation]
    passed = bool(math.isfinite(value) and ok)
    return {"name": name, "value": value, "bound": bound_out, "relation": relation, "passed": passed, "kind": kind}


def is_claim(c: dict[str, Any]) -> bool:
    """Whether a recorded check is a claim check (records without a kind are sanity checks)."""
    return c.get("kind") == "claim"


def mark(c: dict[str, Any]) -> str:
    """pass / FAIL for a sanity check, shown / NOT SHOWN for a claim."""
    if is_claim(c):
        return "shown" if c.get("passed") else "NOT SHOWN"
    return "pass" if c.get("passed") else "FAIL"


def describe(c: dict[str, Any]) -> str:
    """``name: value relation bound`` with a pass / FAIL mark, as the index and the notebooks print it."""
    def f(x):
        return "None" if x is None else f"{x:.4g}"
    b = c.get("bound")
    bound = f"[{f(b[0])}, {f(b[1])}]" if isinstance(b, (list, tuple)) else f(b)
    return f"{c.get('name')}: {f(c.get('value'))} {c.get('relation', 'vs')} {bound} ({mark(c)})"


def verdict(metrics: dict[str, Any] | None) -> tuple[str, list[str]]:
    """("ok" | "degraded", reasons) of a study's metrics: degraded when a sanity check failed or none was written
    (claim checks do not count: ``claims`` reports them)."""
    checks: Sequence[dict[str, Any]] = [c for c in (metrics or {}).get("checks") or [] if not is_claim(c)]
    if not checks:
        return "degraded", ["no sanity checks written to metrics.json"]
    failed = [describe(c) for c in checks if not c.get("passed")]
    return ("degraded" if failed else "ok"), failed


def claims(metrics: dict[str, Any] | None) -> tuple[int, list[str]]:
    """(how many of the paper's claims the study tested, the ones not shown, described) of a study's metrics."""
    tested = [c for c in (metrics or {}).get("checks") or [] if is_claim(c)]
    return len(tested), [describe(c) for c in tested if not c.get("passed")]
