"""What the demo observes while it runs: Kafka watermarks against the offsets stored in PostgreSQL, both
processes' `/metrics`, the delta buffer and a few balances, gathered into one `Snapshot` per refresh.

Every source may fail for a moment (a process still starting, a scrape timing out): that field is None and
the next refresh tries again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumer.demo_stream import WAREHOUSES
from consumer.kafka import client_logger
from registers.client import RegisterClient
from registers.models import DeltaStatus

__all__ = ["Metrics", "Snapshot", "Watcher", "parse_metrics", "ready", "scrape"]

log = logging.getLogger("accumulator.demo")

Labels = tuple[tuple[str, str], ...]

_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
)

_STORED_OFFSETS = (
    "SELECT partition, next_offset FROM accum.consumer_offsets WHERE consumer_group = %s AND topic = %s"
)


@dataclass(frozen=True)
class Metrics:
    """The samples of one `/metrics` scrape: (name, labels, value)."""

    samples: tuple[tuple[str, Labels, float], ...] = ()

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for n, lbl, v in self.samples if n == name and want <= set(lbl))

    def by(self, name: str, label: str) -> dict[str, float]:
        """Samples called `name` summed per value of `label`."""
        out: dict[str, float] = {}
        for n, lbl, v in self.samples:
            value = dict(lbl).get(label)
            if n == name and value is not None:
                out[value] = out.get(value, 0.0) + v
        return out


def scrape(url: str, timeout: float = 0.5) -> Metrics | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return parse_metrics(text)


def parse_metrics(text: str) -> Metrics:
    """Samples of a Prometheus text exposition (counters as their `_total` samples)."""
    samples = [
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return Metrics(tuple(samples))


def ready(url: str, timeout: float = 0.5) -> bool:
    """Whether a process's `/readyz` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


@dataclass(frozen=True)
class Snapshot:
    at: float  # monotonic seconds
    sent: int
    processed: int | None  # messages the worker committed since the run started (stored offsets)
    lag: int | None
    worker: Metrics | None
    compactor: Metrics | None
    deltas: list[DeltaStatus] | None
    balances: list[tuple[str, str]] = field(default_factory=list)


class Watcher:
    """Read-only connections to PostgreSQL and Kafka for the summary and the final checks."""

    def __init__(self, dsn: str, bootstrap: str, topic: str, group: str) -> None:
        self.topic = topic
        self.group = group
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._client: RegisterClient | None = None
        self._kafka = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "accumulator-demo-watch",  # never joins: it only asks for watermarks
                "enable.auto.commit": "false",
                "logger": client_logger("demo-watch"),
            }
        )
        self._partitions: dict[str, list[int]] = {}
        self.start_offsets: dict[int, int] = {}

    def connection(self) -> psycopg.Connection[Any]:
        """One autocommit connection, opened again after it broke."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._dsn, autocommit=True, application_name="accumulator-demo", connect_timeout=5
            )
            self._client = RegisterClient(self._conn)
        return self._conn

    @property
    def client(self) -> RegisterClient:
        self.connection()
        assert self._client is not None
        return self._client

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._kafka.close()
        if self._conn is not None:
            self._conn.close()

    # --- offsets ----------------------------------------------------------------------------------------

    def watermarks(self, topic: str, *, within: float = 15.0) -> dict[int, int]:
        """High watermark (offset of the last message + 1) per partition of `topic`.

        A broker that just made the topic may answer "not leader" for a moment: asked again until `within`.
        """
        deadline = time.monotonic() + within
        while True:
            try:
                return self._watermarks(topic)
            except KafkaException as exc:
                if time.monotonic() >= deadline or not _retriable(exc):
                    raise
            time.sleep(0.1)  # the partition leader is being elected; the deadline bounds the wait

    def _watermarks(self, topic: str) -> dict[int, int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            metadata = self._kafka.list_topics(topic, timeout=10)
            partitions = self._partitions[topic] = sorted(metadata.topics[topic].partitions)
        out = {}
        for p in partitions:
            found = self._kafka.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            if found is None:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no watermarks for {topic}[{p}]"))
            out[p] = int(found[1])
        return out

    def stored_offsets(self) -> dict[int, int]:
        """The worker's truth (SPEC §14.2): next offset per partition, from `accum.consumer_offsets`."""
        query = _STORED_OFFSETS
        rows = self.connection().execute(query, (self.group, self.topic)).fetchall()
        return {int(p): int(n) for p, n in rows}

    def lag(self) -> int:
        """High watermark minus stored next offset, over every partition (no row yet: from offset 0)."""
        stored = self.stored_offsets()
        high = self.watermarks(self.topic, within=2.0)
        return sum(max(n - stored.get(p, 0), 0) for p, n in high.items())

    def mark_start(self) -> None:
        """Count `processed` from here (data and offsets are kept between runs)."""
        self.start_offsets = self.stored_offsets()

    def processed(self) -> int:
        stored = self.stored_offsets()
        return sum(n - self.start_offsets.get(p, 0) for p, n in stored.items())

    def forget_stale_offsets(self) -> bool:
        """Stored offsets beyond the topic's end mean the topic was made anew: start its partitions over."""
        high = self.watermarks(self.topic)
        if all(n <= high.get(p, 0) for p, n in self.stored_offsets().items()):
            return False
        query = "DELETE FROM accum.consumer_offsets WHERE consumer_group = %s AND topic = %s"
        self.connection().execute(query, (self.group, self.topic))
        return True

    # --- one refresh ------------------------------------------------------------------------------------

    def snapshot(self, *, sent: int, worker_url: str, compactor_url: str, today: date) -> Snapshot:
        processed = lag = deltas = None
        balances: list[tuple[str, str]] = []
        try:
            processed, lag = self.processed(), self.lag()
            deltas = self.client.delta_status()
            balances = few_balances(self.client, today)
        except (psycopg.Error, KafkaException) as exc:
            log.debug("demo snapshot incomplete: %s", exc)
        return Snapshot(
            at=time.monotonic(),
            sent=sent,
            processed=processed,
            lag=lag,
            worker=scrape(worker_url),
            compactor=scrape(compactor_url),
            deltas=deltas,
            balances=balances,
        )


def _retriable(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return False
    return bool(error.retriable()) or error.code() in _NO_LEADER_YET


def _number(value: Decimal | None) -> str:
    return "0" if value is None else f"{value:,}"


def few_balances(client: RegisterClient, today: date) -> list[tuple[str, str]]:
    """Stock per warehouse, two accounts, this month's sales per channel: (label, value)."""
    out = []
    for w in WAREHOUSES:
        stock: Mapping[str, Decimal] = client.balance("demo_inventory", {"warehouse": w})
        out.append((f"warehouse {w}", f"{_number(stock.get('quantity'))} units"))
    for account in ("cash", "bank:main"):
        money = client.balance("demo_accounts", {"account": account, "currency": "EUR"})
        out.append((f"{account} EUR", _number(money.get("amount"))))
    month = today.replace(day=1)
    for row in client.turnover("demo_sales", month, None, group_by=["channel"]):
        out.append((f"{row.group['channel']} sales this month", _number(row.resources.get("qty"))))
    return out
