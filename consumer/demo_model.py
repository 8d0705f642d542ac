"""What the demo registers must hold: the balances read at the start plus every command the producer sent.

Pure bookkeeping: `Expected` folds each sent command into per-register sums by dimension values, keeping the
live movements of the documents a later correction may still target; `compare` lines the sums up with what
the engine returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from registers.models import RegisterDefinition

__all__ = ["Expected", "Key", "Mismatch", "Totals", "compare", "key_of"]

Key = tuple[Any, ...]  # dimension values, in the order of the register's sorted dimension names
Totals = dict[Key, dict[str, Decimal]]  # per register: key -> resource -> sum


def key_of(defn: RegisterDefinition, values: Mapping[str, Any]) -> Key:
    return tuple(values[name] for name in sorted(defn.dimensions))


@dataclass
class Expected:
    """Sums per register and key: a baseline (`start`) plus the movements of every accepted command.

    `live` holds the movements each document currently has; `prune` drops documents no correction can reach
    any more (they are final, already folded into the sums), which keeps memory bounded on long runs.
    """

    registers: Mapping[str, RegisterDefinition]
    totals: dict[str, Totals] = field(default_factory=dict)
    live: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)

    def start(self, register: str, totals: Totals) -> None:
        """What the register held before this run (data is kept between demo runs)."""
        self.totals[register] = {k: dict(v) for k, v in totals.items()}

    def sent(self, command: Mapping[str, Any], dead_letter: str | None) -> None:
        if dead_letter is not None:
            self.dead_letters[dead_letter] += 1
            return
        op, register, recorder = command["op"], command["register"], command["recorder"]
        self.ops[op] += 1
        if op != "post":  # repost and unpost take the document's movements back first
            old = self.live.pop(recorder, None)
            if old is not None:
                self._add(*old, sign=-1)
        if op != "unpost":
            new = list(command["movements"])
            self._add(register, new, sign=+1)
            kept = self.live[recorder][1] if recorder in self.live else []  # a post appends to a document
            self.live[recorder] = (register, kept + new)

    def malformed(self, error_class: str) -> None:
        self.dead_letters[error_class] += 1

    def prune(self, keep: Container[str]) -> None:
        self.live = {r: doc for r, doc in self.live.items() if r in keep}

    def _add(self, register: str, movements: Iterable[Mapping[str, Any]], *, sign: int) -> None:
        defn = self.registers[register]
        sums = self.totals.setdefault(register, {})
        for m in movements:
            row = sums.setdefault(key_of(defn, m), {})
            for name in defn.resources:
                row[name] = row.get(name, Decimal(0)) + sign * Decimal(m[name])


@dataclass(frozen=True)
class Mismatch:
    register: str
    key: Key
    expected: dict[str, Decimal]
    actual: dict[str, Decimal]


def _filled(values: Mapping[str, Decimal] | None, resources: Iterable[str]) -> dict[str, Decimal]:
    # The engine drops rows that sum to zero: a missing key or resource reads 0.
    values = values or {}
    return {name: Decimal(values.get(name, 0)) for name in resources}


def compare(defn: RegisterDefinition, expected: Totals, actual: Totals) -> list[Mismatch]:
    """Every key whose sums differ (numerically: 1.50 == 1.5), in key order."""
    out = []
    for key in sorted(set(expected) | set(actual), key=repr):
        want = _filled(expected.get(key), defn.resources)
        got = _filled(actual.get(key), defn.resources)
        if want != got:
            out.append(Mismatch(defn.name, key, want, got))
    return out
