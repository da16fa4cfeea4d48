"""A study's checks: each headline held against its baseline or bound, and the verdict they give (ok / degraded)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

RELATIONS = ("<", "<=", ">", ">=", "in")


def _number(v: Any) -> float:
    if torch.is_tensor(v):
        v = v.item()
    return float(v)


def check(name: str, value: Any, bound: Any, relation: str = "<=") -> dict[str, Any]:
    """One check ``{"name", "value", "bound", "passed", "relation"}``: ``value relation bound``; ``in`` takes a
    bound ``[low, high]`` (inclusive). A value that is not a finite number fails."""
    if relation not in RELATIONS:
        raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")
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
    return {"name": name, "value": value, "bound": bound_out, "relation": relation, "passed": passed}


def describe(c: dict[str, Any]) -> str:
    """``name: value relation bound`` with a pass / FAIL mark, as the index and the notebooks print it."""
    def f(x):
        return "None" if x is None else f"{x:.4g}"
    b = c.get("bound")
    bound = f"[{f(b[0])}, {f(b[1])}]" if isinstance(b, (list, tuple)) else f(b)
    mark = "pass" if c.get("passed") else "FAIL"
    return f"{c.get('name')}: {f(c.get('value'))} {c.get('relation', 'vs')} {bound} ({mark})"


def verdict(metrics: dict[str, Any] | None) -> tuple[str, list[str]]:
    """("ok" | "degraded", reasons) of a study's metrics: degraded when a check failed or none was written."""
    checks: Sequence[dict[str, Any]] = (metrics or {}).get("checks") or []
    if not checks:
        return "degraded", ["no checks written to metrics.json"]
    failed = [describe(c) for c in checks if not c.get("passed")]
    return ("degraded" if failed else "ok"), failed
