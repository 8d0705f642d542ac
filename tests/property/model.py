"""Exact model of one register, in plain Python: live movements per recorder, Decimal sums (SPEC §5, §7, §8).

The model is the oracle of the property test, so it shares no code with the engine: periods
are parsed with its own regex and resolved with ``zoneinfo`` (PostgreSQL's rule for DST gaps and overlaps),
sums are ``Decimal`` (never float), and JSON is written and read digit for digit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "DimValue",
    "Movement",
    "PeriodSpec",
    "Raw",
    "RegisterModel",
    "Shape",
    "dumps",
    "loads",
    "parse_period",
    "resolve_local",
]

DimValue = str | int


@dataclass(frozen=True)
class Shape:
    """Dimensions and resources of a register, each in the register's column order (names sorted bytewise)."""

    dims: tuple[str, ...]
    resources: tuple[str, ...]
    scales: tuple[int | None, ...]  # numeric(p,s) scale per resource; None: integer (shortest form)

    def dim_index(self, name: str) -> int:
        return self.dims.index(name)


@dataclass(frozen=True)
class Movement:
    recorder: str
    period: datetime  # aware
    dims: tuple[DimValue, ...]
    res: tuple[Decimal, ...]


# ------------------------------------------------------------------------------------------------------------
# Periods (SPEC §5.2)
# ------------------------------------------------------------------------------------------------------------

_PERIOD = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?)?"
    r"(?:(Z)|([+-])([0-9]{2})(?::([0-9]{2}))?)?$"
)


def resolve_local(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a wall time in ``zone``, resolved like PostgreSQL.

    PostgreSQL ("Handling of Invalid or Ambiguous Timestamps"): a time inside a DST gap takes the UTC offset
    in force just before the transition, which is zoneinfo's fold=0 there; an ambiguous time takes the offset
    in force just after it, which is fold=1 in an overlap.
    """
    early = local.replace(tzinfo=zone, fold=0)
    late = local.replace(tzinfo=zone, fold=1)
    off_early, off_late = early.utcoffset(), late.utcoffset()
    assert off_early is not None
    assert off_late is not None
    chosen = late if off_early > off_late else early
    return chosen.astimezone(UTC)


def parse_period(text: str, zone: ZoneInfo) -> datetime:
    """The instant a valid §5.2 period string denotes for a register in ``zone`` (ValueError otherwise)."""
    m = _PERIOD.match(text)
    if m is None:
        raise ValueError(f"not a period: {text!r}")
    y, mo, d, hh, mi, ss, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "").ljust(6, "0")) if frac else 0
    local = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), micro)
    if z is None and sign is None:
        return resolve_local(local, zone)
    offset = timedelta(hours=int(oh or 0), minutes=int(om or 0))
    if sign == "-":
        offset = -offset
    return (local - offset).replace(tzinfo=UTC)


@dataclass(frozen=True)
class PeriodSpec:
    """A generated period: a wall time in the register zone, written as local time or in another offset.

    ``style`` bits pick the spelling: 1 = space instead of ``T``; 2 = always write seconds; 4 = six fraction
    digits (else as few as needed), and for offsets ``+00:00`` instead of ``Z``, ``+HH:MM`` instead of
    ``+HH``.
    """

    local: datetime  # naive
    offset_minutes: int | None  # None: local time without offset
    style: int = 0

    def render(self, zone: ZoneInfo) -> tuple[str, datetime]:
        """(period string, the instant it denotes)."""
        instant = resolve_local(self.local, zone)
        if self.offset_minutes is None:
            return _wall_text(self.local, self.style, allow_date_only=True), instant
        offset = timedelta(minutes=self.offset_minutes)
        wall = (instant + offset).replace(tzinfo=None)
        return _wall_text(wall, self.style, allow_date_only=False) + _offset_text(
            self.offset_minutes, self.style
        ), (instant)


def _wall_text(wall: datetime, style: int, *, allow_date_only: bool) -> str:
    date = f"{wall.year:04d}-{wall.month:02d}-{wall.day:02d}"
    if allow_date_only and not style & 2 and wall.time() == datetime.min.time():
        return date
    text = date + (" " if style & 1 else "T") + f"{wall.hour:02d}:{wall.minute:02d}"
    if style & 2 or wall.second or wall.microsecond:
        text += f":{wall.second:02d}"
    if wall.microsecond:
        digits = f"{wall.microsecond:06d}"
        text += "." + (digits if style & 4 else digits.rstrip("0"))
    return text


def _offset_text(minutes: int, style: int) -> str:
    if minutes == 0 and not style & 4:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    if mm == 0 and not style & 4:
        return f"{sign}{hh:02d}"
    return f"{sign}{hh:02d}:{mm:02d}"


# ------------------------------------------------------------------------------------------------------------
# JSON, digit for digit
# ------------------------------------------------------------------------------------------------------------


class Raw(str):
    """A JSON token written as is (a number spelled exactly as the test wants it)."""


def dumps(value: Any) -> str:
    """JSON text; Decimals and Raw tokens are written verbatim, strings keep non-ASCII characters."""
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def loads(text: str) -> Any:
    """JSON with every number as a Decimal that keeps its written scale (``150.00`` stays two decimals)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# ------------------------------------------------------------------------------------------------------------
# The register
# ------------------------------------------------------------------------------------------------------------


def _sort_key(value: DimValue) -> tuple[int, bytes | int]:
    # Text dimensions have collation "C": bytewise order of the UTF-8 encoding.
    return (0, value.encode()) if isinstance(value, str) else (1, value)


@dataclass
class RegisterModel:
    """Live movements per recorder; every read is a sum over them."""

    shape: Shape
    docs: dict[str, list[Movement]] = field(default_factory=dict)

    def movements(self) -> list[Movement]:
        return [m for doc in self.docs.values() for m in doc]

    def post(self, movements: Iterable[Movement]) -> int:
        """Appends each movement to its recorder's document; returns how many."""
        n = 0
        for m in movements:
            self.docs.setdefault(m.recorder, []).append(m)
            n += 1
        return n

    def unpost(self, recorder: str) -> int:
        return len(self.docs.pop(recorder, []))

    def repost(self, recorder: str, movements: Sequence[Movement]) -> int:
        assert all(m.recorder == recorder for m in movements)
        self.docs.pop(recorder, None)
        return self.post(movements)

    def _matches(self, m: Movement, flt: Mapping[str, DimValue] | None) -> bool:
        return not flt or all(m.dims[self.shape.dim_index(k)] == v for k, v in flt.items())

    def _sum(self, movements: Iterable[Movement]) -> dict[str, Decimal]:
        totals = [Decimal(0)] * len(self.shape.resources)
        for m in movements:
            totals = [t + r for t, r in zip(totals, m.res, strict=True)]
        return dict(zip(self.shape.resources, totals, strict=True))

    def balance(
        self, flt: Mapping[str, DimValue] | None = None, at: datetime | None = None
    ) -> dict[str, Decimal]:
        """Sum of matching movements with ``period <= at``; ``at`` None = every movement (SPEC §5.4)."""
        return self._sum(
            m for m in self.movements() if self._matches(m, flt) and (at is None or m.period <= at)
        )

    def turnover(
        self,
        frm: datetime | None,
        to: datetime | None,
        flt: Mapping[str, DimValue] | None = None,
        group_by: Sequence[str] | None = None,
    ) -> list[dict[str, DimValue | Decimal]]:
        """``frm <= period <= to`` (None = unbounded). Without group_by one row of every resource; with it a
        row per group with a non-zero resource, ordered by the group values in the register's column order."""
        chosen = [
            m
            for m in self.movements()
            if self._matches(m, flt) and (frm is None or frm <= m.period) and (to is None or m.period <= to)
        ]
        if not group_by:
            return [dict(self._sum(chosen))]
        cols = [d for d in self.shape.dims if d in group_by]
        groups: dict[tuple[DimValue, ...], list[Movement]] = {}
        for m in chosen:
            groups.setdefault(tuple(m.dims[self.shape.dim_index(c)] for c in cols), []).append(m)
        rows: list[dict[str, DimValue | Decimal]] = []
        for key in sorted(groups, key=lambda k: tuple(_sort_key(v) for v in k)):
            sums = self._sum(groups[key])
            if any(sums.values()):
                rows.append({**dict(zip(cols, key, strict=True)), **sums})
        return rows
