"""PURE: benchmark results, target evaluation (SPEC §21) and the printed table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "Result",
    "Target",
    "describe_miss",
    "evaluate",
    "format_table",
    "format_value",
    "missed",
    "ratio",
    "result_dict",
]

Op = Literal["<=", ">=", "=="]
On = Literal["value", "ratio"]


@dataclass(frozen=True)
class Target:
    """A bound on a result's ``value`` or ``ratio``; ``label`` is what the table prints."""

    op: Op
    bound: float
    on: On = "ratio"
    label: str = ""

    def text(self) -> str:
        if self.label:
            return self.label
        return f"{self.on} {self.op} {_num(self.bound)}"

    def holds(self, observed: float) -> bool:
        if math.isnan(observed):
            return False
        if self.op == "<=":
            return observed <= self.bound
        if self.op == ">=":
            return observed >= self.bound
        return observed == self.bound


@dataclass(frozen=True)
class Result:
    """One row of the table. ``ratio`` is value / baseline unless the scenario sets it otherwise."""

    scenario: str
    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: Target | None = None
    ok: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, None when either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def evaluate(result: Result) -> Result:
    """Fill ``ok`` from the target; a target whose operand is missing counts as missed."""
    if result.target is None:
        return replace(result, ok=None)
    observed = result.ratio if result.target.on == "ratio" else result.value
    return replace(result, ok=observed is not None and result.target.holds(observed))


def missed(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.target is not None and r.ok is False]


def describe_miss(r: Result) -> str:
    """One line naming a missed target: what was observed against what was wanted."""
    if r.target is None:
        return f"{r.scenario}: {r.metric}: no target"
    observed = r.ratio if r.target.on == "ratio" else r.value
    shown = (
        "missing" if observed is None else format_value(observed, "x" if r.target.on == "ratio" else r.unit)
    )
    why = f" ({r.note})" if r.note and observed is None else ""
    return f"{r.scenario}: {r.metric}: {r.target.on} {shown}, target {r.target.text()}{why}"


def _num(x: float) -> str:
    if x == 0 or math.isnan(x) or math.isinf(x):
        return str(x)
    mag = abs(x)
    if mag >= 1000:
        return f"{x:,.0f}"
    if mag >= 100:
        return f"{x:.1f}"
    if mag >= 1:
        return f"{x:.2f}"
    if mag >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("", "x"):
        return _num(value) + ("x" if unit == "x" else "")
    if unit == "count":
        return f"{value:,.0f}"
    return f"{_num(value)} {unit}"


def _ok_text(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


HEADERS = ("scenario", "metric", "value", "baseline", "ratio", "target", "ok")


def table_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in results:
        base = format_value(r.baseline, r.unit) if r.baseline is not None else ""
        if r.baseline_label and base:
            base = f"{base} ({r.baseline_label})"
        elif r.baseline_label:
            base = r.baseline_label
        rows.append(
            (
                r.scenario,
                r.metric,
                format_value(r.value, r.unit),
                base,
                format_value(r.ratio, "x") if r.ratio is not None else "",
                r.target.text() if r.target else "",
                _ok_text(r.ok),
            )
        )
    return rows


def format_table(results: Sequence[Result]) -> str:
    """Plain-text table, one row per result, columns padded to their widest cell."""
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def result_dict(r: Result) -> dict[str, Any]:
    """JSON-ready form of a result (the target as its parts and its label)."""
    return {
        "scenario": r.scenario,
        "metric": r.metric,
        "value": r.value,
        "unit": r.unit,
        "baseline": r.baseline,
        "baseline_label": r.baseline_label,
        "ratio": r.ratio,
        "target": None
        if r.target is None
        else {"op": r.target.op, "bound": r.target.bound, "on": r.target.on, "label": r.target.text()},
        "ok": r.ok,
        "note": r.note,
        "details": r.details,
    }
