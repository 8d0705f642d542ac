"""Drive the real worker (`accumulator consume`) against real Kafka and PostgreSQL, with an exact model.

`Script` generates a seeded command stream (posts, reposts, unposts, ids, replays, bad commands) together
with what must come of it: the movements each recorder ends with and the dead letters by error class.
`WorkerProcess` runs one worker as a subprocess and stops it by its PID.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import CliProcess, wait_until

from consumer.kafka import produce_with_room, producer_config

# The register every script writes to: two dimensions, two resources.
REGISTER_DIMENSIONS = {"warehouse": "integer", "product": "text"}
REGISTER_RESOURCES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)"}

Key = tuple[int, str]  # (warehouse, product)
Totals = dict[Key, tuple[Decimal, Decimal]]


def create_script_register(dsn: str, name: str, *, high_write: bool = False) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT accum.register_create(%s, %s::jsonb, %s::jsonb, 'balance', high_write := %s)",
            (name, json.dumps(REGISTER_DIMENSIONS), json.dumps(REGISTER_RESOURCES), high_write),
        )


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    error_class: str | None = None  # None: a good command; else the dead-letter class it must get


@dataclass
class Script:
    """A seeded stream and its exact expected outcome (`live`: recorder -> movements it ends with)."""

    register: str
    messages: list[Message] = field(default_factory=list)
    live: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    applied_ids: dict[str, str] = field(default_factory=dict)  # id -> canonical payload text

    @classmethod
    def generate(
        cls, register: str, n: int, *, seed: int, recorders: int = 40, bad_every: int = 25
    ) -> Script:
        rng = random.Random(seed)
        script = cls(register)
        sent_with_id: list[tuple[str, bytes, str]] = []  # (id, value, recorder) of applied commands
        for i in range(n):
            recorder = f"doc-{rng.randrange(recorders)}"
            roll = rng.random()
            if bad_every and i % bad_every == bad_every - 1:
                script._bad(rng, recorder, sent_with_id, i)
                continue
            if sent_with_id and roll < 0.05:  # a replay of a command that had an id: a duplicate
                _cid, value, rec = rng.choice(sent_with_id)
                script.messages.append(Message(rec.encode(), value))
                continue
            command: dict[str, Any]
            if roll < 0.55:
                movements = script._movements(rng, i)
                command = {"op": "post", "register": register, "recorder": recorder, "movements": movements}
                script.live.setdefault(recorder, []).extend(movements)
            elif roll < 0.8:
                movements = script._movements(rng, i) if rng.random() < 0.85 else []
                command = {"op": "repost", "register": register, "recorder": recorder, "movements": movements}
                script.live[recorder] = list(movements)
            else:
                command = {"op": "unpost", "register": register, "recorder": recorder}
                script.live[recorder] = []
            if rng.random() < 0.3:
                command["id"] = f"cmd-{i}"
            value = json.dumps(command).encode()
            if "id" in command:
                sent_with_id.append((command["id"], value, recorder))
            script.messages.append(Message(recorder.encode(), value))
        return script

    @staticmethod
    def _movements(rng: random.Random, i: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(rng.randint(1, 3)):
            out.append(
                {
                    "period": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "warehouse": rng.randint(1, 4),
                    "product": rng.choice(["apple", "pear", "plum"]),
                    # strings and numbers, with exact decimals: a float would lose digits
                    "quantity": rng.choice(
                        [f"{rng.randint(-500, 500)}.{rng.randint(0, 999):03d}", 7, "0.125"]
                    ),
                    "amount": f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}",
                }
            )
        return out

    def _bad(
        self, rng: random.Random, recorder: str, sent_with_id: list[tuple[str, bytes, str]], i: int
    ) -> None:
        key = recorder.encode()
        kind = rng.choice(["invalid_json", "schema_violation", "unknown_register", "rejected", "id_reused"])
        marker = f"bad-{i}"
        if kind == "invalid_json":
            self.messages.append(Message(key, f'{{"op": "post", "marker": "{marker}"'.encode(), kind))
        elif kind == "schema_violation":
            bad = {
                "op": "post",
                "register": self.register,
                "recorder": recorder,
                "movements": [],
                "m": marker,
            }
            self.messages.append(Message(key, json.dumps(bad).encode(), kind))
        elif kind == "unknown_register":
            bad = {"op": "unpost", "register": "no_such_register", "recorder": f"{recorder}-{marker}"}
            self.messages.append(Message(key, json.dumps(bad).encode(), kind))
        elif kind == "rejected":
            movement = {
                "period": "2026-01-01",
                "warehouse": 1,
                "product": "apple",
                "quantity": "1.2345",
                "amount": "1",
                "note": marker,
            }
            bad = {"op": "post", "register": self.register, "recorder": recorder, "movements": [movement]}
            self.messages.append(Message(key, json.dumps(bad).encode(), kind))
        elif sent_with_id:
            cid, _value, rec = rng.choice(sent_with_id)
            bad = {"op": "unpost", "register": self.register, "recorder": f"{rec}-{marker}", "id": cid}
            self.messages.append(Message(rec.encode(), json.dumps(bad).encode(), "id_reused"))
        else:
            self.messages.append(Message(key, b"", "invalid_json"))

    def expected_dead_letters(self) -> Counter[tuple[bytes | None, str]]:
        return Counter((m.value, m.error_class) for m in self.messages if m.error_class is not None)

    def expected_totals(self) -> Totals:
        totals: dict[Key, list[Decimal]] = {}
        for movements in self.live.values():
            for m in movements:
                t = totals.setdefault((m["warehouse"], m["product"]), [Decimal(0), Decimal(0)])
                t[0] += Decimal(str(m["quantity"]))
                t[1] += Decimal(str(m["amount"]))
        return {k: (v[0], v[1]) for k, v in totals.items() if v != [0, 0]}

    def expected_movement_counts(self) -> dict[str, int]:
        return {rec: len(ms) for rec, ms in self.live.items() if ms}


def produce(bootstrap: str, topic: str, messages: Iterable[Message]) -> int:
    producer = Producer(
        producer_config(bootstrap_servers=bootstrap, client_id="test", kafka_extra={}, producer_extra={})
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    n = 0
    for m in messages:
        produce_with_room(producer, topic, m.value, m.key, on_delivery=delivered)
        n += 1
    assert producer.flush(30) == 0, "messages not delivered"
    assert not failures, failures
    return n


def high_watermarks(bootstrap: str, topic: str, partitions: int = 3) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "watermarks", "enable.auto.commit": False}
    )
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def stored_offsets(dsn: str, group: str, topic: str) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM accum.consumer_offsets"
            " WHERE consumer_group = %s AND topic = %s",
            (group, topic),
        ).fetchall()
    return {p: o for p, o in rows}


def wait_caught_up(dsn: str, bootstrap: str, group: str, topic: str, *, within: float = 120.0) -> None:
    marks = high_watermarks(bootstrap, topic)
    wanted = {p: o for p, o in marks.items() if o > 0}
    wait_until(
        lambda: all(stored_offsets(dsn, group, topic).get(p, -1) >= o for p, o in wanted.items()),
        within=within,
        what=f"worker caught up to {wanted}",
    )


def read_topic(bootstrap: str, topic: str, count: int, *, within: float = 60.0) -> list[Any]:
    """Every message of `topic` from the start, waiting until at least `count` arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    out.append(message)
            if len(out) >= count:
                # give stragglers (an unexpected extra letter) a short chance to show up
                out.extend(m for m in consumer.consume(num_messages=1000, timeout=1.0) if m.error() is None)
                return out
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: {len(out)} message(s) after {within}s, wanted {count}")


def dead_letters(messages: Sequence[Any]) -> Counter[tuple[bytes | None, str]]:
    """Dead letters by (value, class); a retried batch may repeat one (SPEC §13.3): one per source."""
    seen: dict[tuple[str, str, str], tuple[bytes | None, str]] = {}
    for m in messages:
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        source = (
            headers["accumulator.source.topic"],
            headers["accumulator.source.partition"],
            headers["accumulator.source.offset"],
        )
        seen[source] = (
            m.value() or b"" if m.value() is not None else None,
            headers["accumulator.error.class"],
        )
    return Counter(seen.values())


def actual_totals(dsn: str, register: str) -> Totals:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT warehouse, product, sum(quantity), sum(amount) FROM accum.{register}_movements "
            "GROUP BY 1, 2 HAVING sum(quantity) <> 0 OR sum(amount) <> 0"
        ).fetchall()
        cache = conn.execute(
            f"SELECT warehouse, product, quantity, amount FROM accum.{register}_balance_cache "
            "WHERE quantity <> 0 OR amount <> 0"
        ).fetchall()
    movements = {(w, p): (q, a) for w, p, q, a in rows}
    assert {(w, p): (q, a) for w, p, q, a in cache} == movements, "balance cache differs from the movements"
    return movements


def actual_movement_counts(dsn: str, register: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT recorder, count(*) FROM accum.{register}_movements GROUP BY 1"
        ).fetchall()
    return {r: n for r, n in rows}


def verify_problems(dsn: str, register: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT * FROM accum.register_verify(%s, problems_only := true)", (register,)
        ).fetchall()


def assert_matches(script: Script, dsn: str) -> None:
    """State equals the model exactly: per-recorder movement counts, totals (movements and cache), verify."""
    assert actual_movement_counts(dsn, script.register) == script.expected_movement_counts()
    assert actual_totals(dsn, script.register) == script.expected_totals()
    assert verify_problems(dsn, script.register) == []


class WorkerProcess(CliProcess):
    """`accumulator consume` on one topic and group, with short batch waits and retries."""

    def __init__(
        self,
        *,
        dsn: str,
        bootstrap: str,
        topic: str,
        group: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        settings = {
            "ACCUMULATOR_DSN": dsn,
            "ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ACCUMULATOR_KAFKA_TOPICS": topic,
            "ACCUMULATOR_KAFKA_GROUP_ID": group,
            "ACCUMULATOR_KAFKA_CLIENT_ID": f"{group}-{log_path.stem}",
            "ACCUMULATOR_METRICS_PORT": "0",
            "ACCUMULATOR_BATCH_MAX_WAIT_MS": "50",
            "ACCUMULATOR_RETRY_INITIAL_MS": "100",
            "ACCUMULATOR_RETRY_MAX_MS": "1000",
            "ACCUMULATOR_LOG_LEVEL": "INFO",
        }
        super().__init__("consume", log_path, {**settings, **(env or {})})


@dataclass
class Workers:
    """Every worker a test started; `close()` stops all of them (the fixture calls it)."""

    dsn: str
    bootstrap: str
    topic: str
    group: str
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, env: Mapping[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            dsn=self.dsn,
            bootstrap=self.bootstrap,
            topic=self.topic,
            group=self.group,
            log_path=self.tmp / f"worker-{len(self.started)}.log",
            env=env,
        )
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.close()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.started)


def chunks(items: Sequence[Message], n: int) -> Iterator[Sequence[Message]]:
    size = max(1, -(-len(items) // n))
    for i in range(0, len(items), size):
        yield items[i : i + size]
