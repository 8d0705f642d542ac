"""PURE: deterministic movements for the benchmark registers and their plain twins.

One shape for every scenario: dimensions ``warehouse``, ``product`` (integer), resources ``quantity``
numeric(18,3) and ``amount`` numeric(18,2), documents of ``lines_per_doc`` movements sharing one period.
Combinations are picked with Zipf-like popularity: a few hot products, a long tail. That skew matters: it
decides how many (combination, day) totals rows a million movements make, hence bytes per movement.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "COLUMNS",
    "DIMENSIONS",
    "RESOURCES",
    "Movement",
    "Shape",
    "Workload",
    "iso",
    "payload",
    "rows",
]

DIMENSIONS = {"warehouse": "integer", "product": "integer"}
RESOURCES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)"}
# Column order of the plain inserts (any order works: columns are named).
COLUMNS = ("recorder", "period", "warehouse", "product", "quantity", "amount")

Movement = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    warehouses: int = 20
    products: int = 100
    zipf_s: float = 1.1
    lines_per_doc: int = 10
    negative_share: float = 0.4  # shipments among movements
    seed: int = 20261124

    @property
    def combinations(self) -> int:
        return self.warehouses * self.products

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "combinations": self.combinations}


def iso(ts: datetime) -> str:
    """An instant as a §5.2 period string with an explicit UTC offset (session TimeZone plays no part)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decimal(units: int, scale: int) -> str:
    sign = "-" if units < 0 else ""
    units = abs(units)
    whole, frac = divmod(units, 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d}"


class Workload:
    """Movement generator; the same ``Shape`` (seed included) gives the same movements."""

    def __init__(self, shape: Shape, *, stream: int = 0) -> None:
        self.shape = shape
        self.rnd = random.Random(shape.seed * 1000 + stream)
        order = random.Random(shape.seed)  # combination popularity is the same for every stream
        combos = [(w, p) for w in range(1, shape.warehouses + 1) for p in range(1, shape.products + 1)]
        order.shuffle(combos)
        self.combos: list[tuple[int, int]] = combos
        weights = [1.0 / (rank + 1) ** shape.zipf_s for rank in range(len(combos))]
        self._cum = list(itertools.accumulate(weights))
        self._serial = 0

    def combo(self) -> tuple[int, int]:
        return self.rnd.choices(self.combos, cum_weights=self._cum, k=1)[0]

    def sample_keys(self, n: int) -> list[tuple[int, int]]:
        """``n`` distinct-as-possible combinations, uniformly (reads hit hot and cold keys alike)."""
        if n <= len(self.combos):
            return self.rnd.sample(self.combos, n)
        return [self.rnd.choice(self.combos) for _ in range(n)]

    def movement(self, recorder: str, period: str, key: tuple[int, int] | None = None) -> Movement:
        w, p = key if key is not None else self.combo()
        sign = -1 if self.rnd.random() < self.shape.negative_share else 1
        return {
            "recorder": recorder,
            "period": period,
            "warehouse": w,
            "product": p,
            "quantity": _decimal(sign * self.rnd.randint(1, 99_999), 3),
            "amount": _decimal(sign * self.rnd.randint(1, 9_999_999), 2),
        }

    def recorder(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}:{self._serial}"

    def document(self, recorder: str, period: str, lines: int | None = None) -> list[Movement]:
        n = self.shape.lines_per_doc if lines is None else lines
        return [self.movement(recorder, period) for _ in range(n)]

    def documents(self, prefix: str, n_movements: int, period: str) -> list[Movement]:
        """Fresh documents totalling ``n_movements`` (the last one may be short), all at ``period``."""
        out: list[Movement] = []
        while len(out) < n_movements:
            lines = min(self.shape.lines_per_doc, n_movements - len(out))
            out += self.document(self.recorder(prefix), period, lines)
        return out

    def history(self, n_movements: int, start: datetime, end: datetime) -> Iterator[list[Movement]]:
        """Documents in period order, evenly spread over [start, end): the history load."""
        lines = self.shape.lines_per_doc
        n_docs = max(1, -(-n_movements // lines))
        span = (end - start).total_seconds()
        left = n_movements
        for i in range(n_docs):
            # document i lands inside its own slice of the span, so periods never go backwards
            at = start + timedelta(seconds=int(span * (i + self.rnd.random()) / n_docs))
            k = min(lines, left)
            left -= k
            yield self.document(f"h:{i + 1}", iso(at), k)


def payload(movements: Sequence[Movement]) -> str:
    """JSON text for register_post / register_repost (serialized once, outside the timed call)."""
    return json.dumps(list(movements), separators=(",", ":"))


def rows(movements: Sequence[Movement]) -> list[tuple[Any, ...]]:
    """Parameter rows of the plain inserts, in ``COLUMNS`` order."""
    return [tuple(m[c] for c in COLUMNS) for m in movements]
