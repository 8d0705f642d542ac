"""The demo's final report: balances and a month turnover, then three checks with what they found.

- balances: every balance (and every turnover group) equals what it was at the start plus what the producer
  sent, key by key;
- dead letters: read back from the DLQ topic, by error class, equal the bad messages the producer sent;
- verify: a full `register_verify` of each register finds nothing.

`Report.data` is what `<home>/last-run.json` holds, so scripts and tests check the same thing.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.demo_model import Expected, Mismatch, Totals, compare, key_of
from consumer.demo_stream import ACCOUNTS, CURRENCIES, DEMO_REGISTERS, DIMENSION_VALUES, PRODUCTS, WAREHOUSES
from consumer.kafka import client_logger
from registers.client import RegisterClient
from registers.models import RegisterDefinition

__all__ = ["Report", "print_balances", "read_dead_letters", "read_totals", "verify_registers"]

_CLASS_HEADER = "accumulator.error.class"
_SOURCE_HEADERS = ("accumulator.source.topic", "accumulator.source.partition", "accumulator.source.offset")


def read_totals(client: RegisterClient, defn: RegisterDefinition) -> Totals:
    """Balances of every combination the stream uses, or every turnover group, all time."""
    names = sorted(defn.dimensions)
    out: Totals = {}
    if defn.kind == "turnover":
        for row in client.turnover(defn.name, None, None, group_by=names):
            out[key_of(defn, row.group)] = dict(row.resources)
        return out
    values = DIMENSION_VALUES[defn.name]
    for combination in itertools.product(*(values[n] for n in names)):
        dims = dict(zip(names, combination, strict=True))
        balance = client.balance(defn.name, dims)
        if any(balance.values()):
            out[key_of(defn, dims)] = balance
    return out


def read_dead_letters(
    bootstrap: str, topic: str, start: Mapping[int, int], end: Mapping[int, int], *, within: float = 20.0
) -> Counter[str] | None:
    """Dead letters in `[start, end)` of each partition by error class; None when not read in time.

    One source record may be dead-lettered twice after a retried commit (SPEC §13.3): counted once.
    """
    wanted = {p: (start.get(p, 0), high) for p, high in end.items() if high > start.get(p, 0)}
    counts: Counter[str] = Counter()
    if not wanted:
        return counts
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "accumulator-demo-dlq-reader",  # assigned, never joins or commits
            "enable.auto.commit": "false",
            "logger": client_logger("demo-dlq"),
        }
    )
    seen: set[tuple[bytes | None, ...]] = set()
    try:
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in wanted.items()])
        left = {p: high for p, (_, high) in wanted.items()}
        deadline = time.monotonic() + within
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None or offset >= left.get(partition, -1):
                continue  # a partition already read to its end
            if offset + 1 >= left[partition]:
                del left[partition]
            headers = dict(message.headers() or [])
            source = tuple(_bytes(headers.get(name)) for name in _SOURCE_HEADERS)
            if source not in seen:
                seen.add(source)
                error_class = _bytes(headers.get(_CLASS_HEADER)) or b"?"
                counts[error_class.decode("utf-8", errors="replace")] += 1
        return None if left else counts
    except KafkaException:
        return None
    finally:
        consumer.close()


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def verify_registers(client: RegisterClient, out: TextIO) -> dict[str, int]:
    """Full verify of each demo register; problems per register (the first few printed)."""
    problems_by_register = {}
    for defn in DEMO_REGISTERS:
        problems = client.verify(defn.name)
        problems_by_register[defn.name] = len(problems)
        for p in problems[:5]:
            print(
                f"    {defn.name}: {p.check_type} {p.status} {p.dimensions} expected {p.expected} "
                f"actual {p.actual}",
                file=out,
            )
    return problems_by_register


# ---- printing ---------------------------------------------------------------------------------------------


def _table(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    from consumer.cli import render_table  # the CLI's table format; cli imports the demo lazily

    print(render_table(rows), file=out)


def print_balances(client: RegisterClient, today: date, out: TextIO) -> None:
    month_start = today.replace(day=1)
    print(f"\ndemo_inventory: balance now and on {month_start}", file=out)
    rows: list[dict[str, Any]] = []
    for warehouse in WAREHOUSES:
        for product in PRODUCTS[:2]:
            dims = {"warehouse": warehouse, "product": product}
            now = client.balance("demo_inventory", dims)
            then = client.balance("demo_inventory", dims, month_start)
            rows.append({**dims, **now, f"quantity on {month_start}": then.get("quantity")})
    rows.append({"warehouse": 1, "product": "(all)", **client.balance("demo_inventory", {"warehouse": 1})})
    _table(rows, out)

    print("\ndemo_accounts (high-write): balances; transfers net to zero per currency", file=out)
    rows = [
        {
            "account": a,
            "currency": "EUR",
            **client.balance("demo_accounts", {"account": a, "currency": "EUR"}),
        }
        for a in ACCOUNTS[:3]
    ]
    rows += [
        {"account": "(all)", "currency": c, **client.balance("demo_accounts", {"currency": c})}
        for c in CURRENCIES
    ]
    _table(rows, out)

    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    # Bounds are inclusive: the month is [first day 00:00, next month's first instant - 1 µs], local time.
    end = datetime.combine(this_month, datetime.min.time()) - timedelta(microseconds=1)
    turnover = client.turnover("demo_sales", last_month, end, group_by=["channel"])
    print(f"\ndemo_sales (turnover): {last_month:%B %Y} by channel", file=out)
    _table([{**r.group, **r.resources} for r in turnover] or [{"channel": "(none)", "qty": 0}], out)


# ---- the report -------------------------------------------------------------------------------------------


def _text(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


@dataclass
class Report:
    """What the checks found; `ok` when every check passed."""

    data: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def balances(self, model: Expected, actual: Mapping[str, Totals], out: TextIO) -> None:
        registers: dict[str, Any] = {}
        summary = []
        for defn in DEMO_REGISTERS:
            expected = model.totals.get(defn.name, {})
            got = actual.get(defn.name, {})
            mismatches = compare(defn, expected, got)
            names = sorted(defn.dimensions)
            keys = sorted(set(expected) | set(got), key=repr)
            registers[defn.name] = {
                "rows": [
                    {
                        "key": dict(zip(names, key, strict=True)),
                        "expected": _text(expected.get(key, {})),
                        "actual": _text(got.get(key, {})),
                    }
                    for key in keys
                ],
                "mismatches": len(mismatches),
            }
            what = "groups" if defn.kind == "turnover" else "balances"
            summary.append(f"{defn.name} {len(keys)} {what} {'ok' if not mismatches else 'MISMATCH'}")
            for m in mismatches[:5]:
                print(f"    {_mismatch(m)}", file=out)
            if mismatches:
                self.failures.append(f"{defn.name}: {len(mismatches)} key(s) differ from what was sent")
        self.data["registers"] = registers
        print(f"  balances      {' · '.join(summary)} (start of the run + what was sent)", file=out)

    def dead_letters(
        self, expected: Counter[str], actual: Counter[str] | None, topic: str, out: TextIO
    ) -> None:
        self.data["dead_letters"] = {
            "expected": dict(expected),
            "actual": None if actual is None else dict(actual),
        }
        if actual is None:
            self.failures.append(f"dead letters: {topic} could not be read back")
            print(f"  dead letters  {topic} could not be read back", file=out)
            return
        found = ", ".join(f"{k} {n}" for k, n in sorted(actual.items())) or "none"
        same = actual == expected
        print(f"  dead letters  {found} (read back from {topic}) {'ok' if same else 'MISMATCH'}", file=out)
        if not same:
            want = ", ".join(f"{k} {n}" for k, n in sorted(expected.items()))
            print(f"    expected {want}", file=out)
            self.failures.append("dead letters differ from the bad messages sent")

    def verify(self, problems: Mapping[str, int], compactor: str, out: TextIO) -> None:
        self.data["verify"] = dict(problems)
        text = " · ".join(f"{name} {'ok' if n == 0 else f'{n} problem(s)'}" for name, n in problems.items())
        print(f"  verify        {text} (full register_verify; compactor: {compactor})", file=out)
        bad = [name for name, n in problems.items() if n]
        if bad:
            self.failures.append(f"verify found problems in {', '.join(bad)}")


def _mismatch(m: Mismatch) -> str:
    return f"{m.register} {m.key}: expected {_text(m.expected)}, found {_text(m.actual)}"
