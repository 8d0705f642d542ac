"""Worker shell (SPEC §14): consume, plan, write, dead-letter, commit, rebalance, stop.

The order of I/O is the design: one PostgreSQL transaction per batch moves the stored offsets (fenced),
applies the commands and, before it commits, the batch's dead letters are produced and flushed. Kafka's
commit follows as a hint. On assignment the worker seeks to the offsets PostgreSQL holds, so a crash
anywhere replays exactly the records whose transaction did not commit.

Rebalance callbacks and batches both run in this thread (callbacks fire inside `consume()`), so a callback
never interrupts a transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.batching import (
    Batcher,
    Plan,
    Record,
    dead_letter_headers,
    dead_letter_topic,
    plan,
)
from consumer.batching import TopicPartition as TP
from consumer.health import Health, MetricsServer
from consumer.kafka import (
    KafkaConfigError,
    admin_config,
    client_logger,
    consumer_config,
    ensure_dead_letter_topics,
    produce_with_room,
    producer_config,
    to_record,
)
from consumer.metrics import WorkerMetrics
from consumer.process import check_schema, install_signals, one_line, restore_signals
from consumer.schedule import Backoff
from consumer.settings import ConfigError, Settings
from consumer.writer import Fenced, Outcome, RaceLost, Writer
from registers.errors import MigrationError, SchemaNotReady
from registers.migrate import package_version

__all__ = ["Backoff", "DeadLetterFailed", "Worker", "WorkerConfig", "run"]

log = logging.getLogger("accumulator.worker")

_OPS: Final = frozenset({"post", "unpost", "repost"})
_OUTCOME_LABEL: Final = {"id_reused": "dead_lettered"}  # SPEC §16: failed before the engine
_IDLE_TICK_S: Final = 1.0
_REGISTRY_REFRESH_S: Final = 10.0
_KAFKA_CALL_TIMEOUT_S: Final = 10.0
_DLQ_FLUSH_TIMEOUT_S: Final = 30.0


class DeadLetterFailed(Exception):
    """Dead letters could not be delivered: an infrastructure error, the batch rolls back (SPEC §13.3)."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The settings the loop needs (built from `Settings` by `run`, directly by tests)."""

    group: str
    topics: tuple[str, ...]
    dlq_topic: str = ""
    auto_offset_reset: str = "earliest"
    batch_max_messages: int = 1000
    batch_max_bytes: int = 8_388_608
    batch_max_wait_ms: int = 250
    retry_initial_ms: int = 500
    retry_max_ms: int = 30_000
    shutdown_grace_ms: int = 25_000

    @classmethod
    def from_settings(cls, s: Settings) -> WorkerConfig:
        return cls(
            group=s.kafka_group_id,
            topics=tuple(s.kafka_topics),
            dlq_topic=s.kafka_dlq_topic,
            auto_offset_reset=s.kafka_auto_offset_reset,
            batch_max_messages=s.batch_max_messages,
            batch_max_bytes=s.batch_max_bytes,
            batch_max_wait_ms=s.batch_max_wait_ms,
            retry_initial_ms=s.retry_initial_ms,
            retry_max_ms=s.retry_max_ms,
            shutdown_grace_ms=s.shutdown_grace_ms,
        )


@dataclass(frozen=True, slots=True)
class _Taken:
    """Records taken from the buffer as one batch; `planned` once decoded; `started` = first record polled."""

    records: list[Record]
    started: float
    planned: Plan | None = None

    def without(self, partitions: set[TP]) -> _Taken | None:
        kept = [r for r in self.records if (r.topic, r.partition) not in partitions]
        if len(kept) == len(self.records):
            return self
        return _Taken(kept, self.started) if kept else None


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    record: Record
    error_class: str
    reason: str
    sqlstate: str | None


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


class Worker:
    """One group member. `run()` returns when `stop` is set (after finishing or aborting its batch)."""

    def __init__(
        self,
        cfg: WorkerConfig,
        *,
        consumer: Consumer,
        producer: Producer,
        writer: Writer,
        metrics: WorkerMetrics,
        health: Health,
        stop: threading.Event,
    ) -> None:
        self.cfg = cfg
        self.consumer = consumer
        self.producer = producer
        self.writer = writer
        self.metrics = metrics
        self.health = health
        self.stop = stop
        self.batcher = Batcher(
            max_messages=cfg.batch_max_messages,
            max_bytes=cfg.batch_max_bytes,
            max_wait_ms=cfg.batch_max_wait_ms,
        )
        self.backoff = Backoff(cfg.retry_initial_ms / 1000, cfg.retry_max_ms / 1000)
        self.expected: dict[
            TP, int
        ] = {}  # seeded partitions: stored next offset = where the next batch starts
        self.owned: set[TP] = set()  # assigned partitions, seeded or not
        self.unseeded: set[TP] = set()  # assigned but paused until PostgreSQL tells where to start
        self.hinted: dict[TP, int] = {}  # last offset committed to Kafka as the hint
        self.inflight: _Taken | None = None  # the batch being applied, or waiting for its retry
        self.next_up: _Taken | None = None  # the batch after it, decoded while PostgreSQL applied the first
        # One thread for the batch transaction, so the next batch is decoded meanwhile (psycopg releases the
        # GIL while it waits on the server). Nothing polls Kafka while a transaction runs.
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accumulator-db")
        self.retry_at = 0.0
        self.seed_retry_at = 0.0
        self.in_backoff = False
        self.first_failed: dict[tuple[str, int, int], datetime] = {}
        self.known_registers: set[str] = set()
        self.registers_read_at = float("-inf")
        self.last_tick = 0.0
        self.batches = 0

    # --- main loop -----------------------------------------------------------------------------------------

    def run(self) -> None:
        self.consumer.subscribe(
            list(self.cfg.topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("worker started", extra={"action": "worker_started", "group": self.cfg.group})
        while not self.stop.is_set():
            self.health.beat()
            now = time.monotonic()
            if self.unseeded and now >= self.seed_retry_at:
                self._seed_paused()
            if self.inflight is None:
                if self.next_up is not None:
                    self.inflight, self.next_up = self.next_up, None
                elif self.batcher.due():
                    self.inflight = self._take()
            if self.inflight is not None and now >= self.retry_at:
                self._attempt(self.inflight)
                if self.stop.is_set():
                    break
            self._poll()
        self._shutdown()

    def _poll_timeout(self) -> float:
        timeout = _IDLE_TICK_S
        if self.inflight is not None:
            timeout = min(timeout, max(0.0, self.retry_at - time.monotonic()))
        else:
            wait = self.batcher.wait_s()
            if wait is not None:
                timeout = min(timeout, wait)
        if self.unseeded:
            timeout = min(timeout, max(0.0, self.seed_retry_at - time.monotonic()))
        return timeout

    def _poll(self) -> None:
        # Room for two batches: the second is decoded while PostgreSQL applies the first.
        room = max(1, 2 * self.cfg.batch_max_messages - len(self.batcher)) if self.inflight is None else 1
        timeout = self._poll_timeout()
        if len(self.batcher) == 0 and room > 1:
            # librdkafka's consume(n, t) returns only when n messages are there or t has passed: with an empty
            # buffer that would hold the first record back until a whole batch arrived. Wait for one record,
            # then take what is already fetched; the batch wait starts at the first record (SPEC §14.1).
            messages = self.consumer.consume(num_messages=1, timeout=timeout)
            if messages:
                messages += self.consumer.consume(num_messages=room - 1, timeout=0)
        else:
            messages = self.consumer.consume(num_messages=room, timeout=timeout)
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._client_error(error)
                continue
            record = to_record(message)
            start = self.expected.get((record.topic, record.partition))
            # Only records of seeded partitions at or past the stored offset: anything else was applied
            # already, or belongs to a partition that is not ours any more.
            if start is not None and record.offset >= start:
                records.append(record)
        if records:
            self.batcher.add(records)
        elif time.monotonic() - self.last_tick >= _IDLE_TICK_S:
            self._idle_tick()

    def _client_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        log.warning("kafka: %s", error.str(), extra={"action": "kafka_error", "code": error.code()})

    def _idle_tick(self) -> None:
        self.last_tick = time.monotonic()
        self._commit_hint(self.expected, asynchronous=True)
        self._update_lag(self.expected)

    # --- a batch -------------------------------------------------------------------------------------------

    def _attempt(self, taken: _Taken) -> None:
        try:
            self._process(taken)
        except Fenced as fenced:
            self.metrics.batch_retries.labels(cause="fenced").inc()
            log.warning(
                "offsets moved by another worker; re-reading them",
                extra={"action": "batch_fenced", "partitions": [f"{t}/{p}" for t, p in fenced.partitions]},
            )
            self.inflight = None
            self._reseed({(r.topic, r.partition) for r in taken.records})
        except (psycopg.Error, RaceLost) as exc:
            self._retry_later("postgres", exc)
        except (KafkaException, DeadLetterFailed, BufferError) as exc:
            self._retry_later("kafka", exc)
        else:
            self.inflight = None
            if self.in_backoff:
                self._leave_backoff()

    def _retry_later(self, cause: str, exc: BaseException) -> None:
        self.metrics.batch_retries.labels(cause=cause).inc()
        delay = self.backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        log.warning(
            "batch failed (%s: %s); retrying in %.1f s",
            cause,
            one_line(exc),
            delay,
            extra={"action": "batch_retry", "cause": cause, "delay_s": round(delay, 3)},
        )
        if not self.in_backoff:
            self.in_backoff = True
            self.health.set_ready_part("backoff", False, f"{cause} unavailable")
            self.health.set_ready_part(cause, False, one_line(exc))
            # Stop fetching while the batch waits: nothing new could be applied before it anyway.
            seeded = [TopicPartition(t, p) for t, p in self.expected]
            if seeded:
                self.consumer.pause(seeded)

    def _leave_backoff(self) -> None:
        self.in_backoff = False
        self.backoff.reset()
        self.health.set_ready_part("backoff", True)
        self.health.set_ready_part("postgres", True)
        self.health.set_ready_part("kafka", True)
        seeded = [TopicPartition(t, p) for t, p in self.expected]
        if seeded:
            self.consumer.resume(seeded)
        log.info("recovered", extra={"action": "recovered"})

    def _take(self) -> _Taken:
        started = time.monotonic() - self.batcher.oldest_age()
        return _Taken(self.batcher.take(), started)

    def _process(self, taken: _Taken) -> None:
        # A record from before a seek, or of a partition revoked since it was polled, is not ours to apply.
        records = taken.records
        mine = [r for r in records if r.offset >= self.expected.get((r.topic, r.partition), 1 << 62)]
        if not mine:
            return
        batch = taken.planned if taken.planned is not None and len(mine) == len(records) else plan(mine)
        expected = {tp: self.expected[tp] for tp in batch.next_offsets}
        letters: list[_DeadLetter] = []

        def before_commit(outcomes: list[Outcome]) -> None:
            letters.extend(self._dead_letters(batch, outcomes))
            self._produce(letters)

        applying = self.db_thread.submit(self.writer.write, batch, expected, before_commit)
        if self.next_up is None and self.batcher.due():
            upcoming = self._take()
            self.next_up = _Taken(upcoming.records, upcoming.started, plan(upcoming.records))
        outcomes = applying.result()
        committed_at = time.monotonic()
        self.expected.update(batch.next_offsets)
        for letter in letters:
            self.first_failed.pop((letter.record.topic, letter.record.partition, letter.record.offset), None)
        self._commit_hint(batch.next_offsets, asynchronous=True)
        self.health.set_ready_part("postgres", True)
        self._observe(batch, outcomes, letters, committed_at)
        self._update_lag(batch.next_offsets)

    def _dead_letters(self, batch: Plan, outcomes: Sequence[Outcome]) -> list[_DeadLetter]:
        letters = [_DeadLetter(r.record, r.error_class, r.reason, None) for r in batch.rejects]
        for entry, outcome in zip(batch.commands, outcomes, strict=True):
            if outcome.status == "rejected":
                error_class = "unknown_register" if outcome.sqlstate == "42704" else "rejected"
                reason = outcome.message or f"rejected by the engine ({outcome.sqlstate})"
                letters.append(_DeadLetter(entry.record, error_class, reason, outcome.sqlstate))
            elif outcome.status == "id_reused":
                letters.append(_DeadLetter(entry.record, "id_reused", outcome.message or "id reused", None))
        return letters

    def _produce(self, letters: Sequence[_DeadLetter]) -> None:
        """Produce and flush every dead letter; raise when any is not acknowledged (the batch rolls back)."""
        if not letters:
            return
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(err.str())

        now = datetime.now(UTC)
        for letter in letters:
            r = letter.record
            first = self.first_failed.setdefault((r.topic, r.partition, r.offset), now)
            headers = dead_letter_headers(
                r, letter.error_class, letter.reason, self.cfg.group, first, letter.sqlstate
            )
            topic = dead_letter_topic(r.topic, self.cfg.dlq_topic)
            produce_with_room(
                self.producer, topic, r.value, r.key, headers=list(headers), on_delivery=delivered
            )
        remaining = self.producer.flush(_DLQ_FLUSH_TIMEOUT_S)
        if remaining or failures:
            detail = (
                failures[0] if failures else f"{remaining} not acknowledged in {_DLQ_FLUSH_TIMEOUT_S:.0f} s"
            )
            raise DeadLetterFailed(f"dead letters not delivered: {detail}")

    def _observe(
        self, batch: Plan, outcomes: Sequence[Outcome], letters: Sequence[_DeadLetter], committed_at: float
    ) -> None:
        m = self.metrics
        self.batches += 1
        m.batch_size.observe(len(batch.commands) + len(batch.rejects))
        started = self.inflight.started if self.inflight is not None else committed_at
        m.batch_duration.observe(max(0.0, committed_at - started))
        now = datetime.now(UTC)
        # Counted per label set first: one labels() lookup per distinct set, not two per command.
        counts: Counter[tuple[str | None, str | None, str]] = Counter()
        moved: Counter[str] = Counter()
        for entry, outcome in zip(batch.commands, outcomes, strict=True):
            command = entry.command
            register: str | None = command.register_name
            if outcome.status == "rejected" and outcome.sqlstate == "42704":
                register = None
            elif outcome.status in ("applied", "duplicate") or outcome.sqlstate is not None:
                self.known_registers.add(command.register_name)
            counts[(register, command.op, _OUTCOME_LABEL.get(outcome.status, outcome.status))] += 1
            if outcome.status == "applied":
                if command.op != "unpost" and outcome.affected:
                    moved[command.register_name] += outcome.affected
                if command.sent_at is not None:
                    m.command_age.observe(max(0.0, (now - command.sent_at).total_seconds()))
        if batch.rejects:
            self._refresh_registers({r.register for r in batch.rejects if r.register})
        for rejected in batch.rejects:
            register = rejected.register if rejected.register in self.known_registers else None
            op = rejected.op if rejected.op in _OPS else None
            counts[(register, op, "dead_lettered")] += 1
        for (register, op, label), n in counts.items():
            m.count_command(register, op, label, n)
        for register_name, n in moved.items():
            m.movements.labels(register=register_name).inc(n)
        applied = sum(n for (_, _, label), n in counts.items() if label == "applied")
        for letter in letters:
            m.dead_letters.labels(reason=letter.error_class).inc()
        if batch.key_mismatches:
            for record in batch.key_mismatches:
                m.key_mismatch.labels(topic=record.topic).inc()
            log.warning(
                "%d message(s) keyed other than by their recorder",
                len(batch.key_mismatches),
                extra={"action": "key_mismatch", "messages": len(batch.key_mismatches)},
            )
        log.debug(
            "batch committed",
            extra={
                "action": "batch_committed",
                "messages": len(batch.commands) + len(batch.rejects),
                "applied": applied,
                "dead_letters": len(letters),
            },
        )

    def _refresh_registers(self, names: set[str]) -> None:
        """Re-read the registry (rate-limited) when a label needs a name it does not know."""
        if names <= self.known_registers or time.monotonic() - self.registers_read_at < _REGISTRY_REFRESH_S:
            return
        self.registers_read_at = time.monotonic()
        try:
            self.known_registers = self.writer.register_names()
        except psycopg.Error as exc:  # labels only: never fail a committed batch over them
            log.debug("could not read the registry: %s", exc)

    # --- offsets and the Kafka hint -----------------------------------------------------------------------

    def _commit_hint(self, offsets: dict[TP, int], *, asynchronous: bool) -> None:
        changed = [
            TopicPartition(t, p, o)
            for (t, p), o in offsets.items()
            if self.hinted.get((t, p)) != o and (t, p) in self.owned
        ]
        if not changed:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=changed, asynchronous=True)
            else:
                self.consumer.commit(offsets=changed, asynchronous=False)
        except KafkaException as exc:  # a hint only: the truth is in PostgreSQL
            log.debug("kafka offset hint not committed: %s", exc)
            return
        for tp in changed:
            self.hinted[(tp.topic, tp.partition)] = tp.offset

    def _update_lag(self, partitions: Iterable[TP]) -> None:
        for tp in list(partitions):
            stored = self.expected.get(tp)
            if stored is None:
                continue
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.metrics.set_lag(tp[0], tp[1], max(0, high - stored))

    def _kafka_starts(self, partitions: Sequence[TP]) -> dict[TP, int]:
        """Where a partition with no stored row starts: Kafka's committed offset, else auto.offset.reset."""
        starts: dict[TP, int] = {}
        committed = self.consumer.committed(
            [TopicPartition(t, p) for t, p in partitions], _KAFKA_CALL_TIMEOUT_S
        )
        for tp in committed:
            if tp.offset >= 0:
                starts[(tp.topic, tp.partition)] = tp.offset
        for t, p in partitions:
            if (t, p) in starts:
                continue
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(t, p), timeout=_KAFKA_CALL_TIMEOUT_S
            )
            if self.cfg.auto_offset_reset == "latest":
                starts[(t, p)] = high
            elif self.cfg.auto_offset_reset == "earliest":
                starts[(t, p)] = low
            else:
                raise ConfigError(f"no stored or committed offset for {t}/{p} and auto.offset.reset=error")
        return starts

    def _seed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        stored = self.writer.stored_offsets(partitions)
        missing = [tp for tp in partitions if tp not in stored]
        if missing:
            stored.update(self.writer.insert_offsets(self._kafka_starts(missing)))
        return stored

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = _tps(partitions)
        self.health.set_ready_part("group", True)
        self.owned.update(tps)
        try:
            offsets = self._seed(tps)
        except (psycopg.Error, KafkaException) as exc:
            # Fetching must not start anywhere but at the stored offsets: take the partitions paused and
            # seed them from the loop once PostgreSQL answers.
            log.warning(
                "cannot read stored offsets (%s); partitions wait",
                one_line(exc),
                extra={"action": "seed_wait"},
            )
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_INVALID) for t, p in tps])
            consumer.pause([TopicPartition(t, p) for t, p in tps])
            self.unseeded.update(tps)
            self.seed_retry_at = time.monotonic() + self.backoff.next_delay()
        else:
            consumer.incremental_assign([TopicPartition(t, p, offsets[(t, p)]) for t, p in tps])
            self.expected.update(offsets)
            self._commit_hint(offsets, asynchronous=True)
        self._set_assigned_gauge()
        log.info(
            "partitions assigned",
            extra={"action": "assigned", "partitions": [f"{t}/{p}" for t, p in sorted(tps)]},
        )

    def _seed_paused(self) -> None:
        tps = sorted(self.unseeded)
        try:
            offsets = self._seed(tps)
            for (t, p), offset in offsets.items():
                self.consumer.seek(TopicPartition(t, p, offset))
        except (psycopg.Error, KafkaException) as exc:
            self.seed_retry_at = time.monotonic() + self.backoff.next_delay()
            log.warning("stored offsets still unavailable: %s", one_line(exc), extra={"action": "seed_wait"})
            return
        self.unseeded.clear()
        self.expected.update(offsets)
        self.backoff.reset()
        if not self.in_backoff:
            self.consumer.resume([TopicPartition(t, p) for t, p in tps])
        log.info("partitions seeded from stored offsets", extra={"action": "seeded"})

    def _reseed(self, partitions: set[TP]) -> None:
        """After fencing: forget what was buffered for `partitions`, seek them to what PostgreSQL holds."""
        self.batcher.drop(partitions)
        if self.next_up is not None:
            self.next_up = self.next_up.without(partitions)
        for tp in partitions:
            self.expected.pop(tp, None)
        self.unseeded.update(tp for tp in partitions if tp in self.owned)
        if self.unseeded:
            self.consumer.pause([TopicPartition(t, p) for t, p in self.unseeded])
            self.seed_retry_at = time.monotonic()

    def _forget(self, partitions: list[TopicPartition]) -> list[TP]:
        tps = _tps(partitions)
        gone = set(tps)
        self.batcher.drop(gone)
        if self.inflight is not None:
            self.inflight = self.inflight.without(gone)
        if self.next_up is not None:
            self.next_up = self.next_up.without(gone)
        for tp in tps:
            self.expected.pop(tp, None)
            self.owned.discard(tp)
            self.unseeded.discard(tp)
            self.hinted.pop(tp, None)
        self.metrics.forget_partitions(tps)
        self._set_assigned_gauge()
        return tps

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit_hint(
            {tp: self.expected[tp] for tp in _tps(partitions) if tp in self.expected}, asynchronous=False
        )
        tps = self._forget(partitions)
        consumer.incremental_unassign(partitions)
        log.info(
            "partitions revoked", extra={"action": "revoked", "partitions": [f"{t}/{p}" for t, p in tps]}
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = self._forget(partitions)
        self.health.set_ready_part("group", False, "partitions lost")
        consumer.incremental_unassign(partitions)
        log.warning("partitions lost", extra={"action": "lost", "partitions": [f"{t}/{p}" for t, p in tps]})

    def _set_assigned_gauge(self) -> None:
        counts: dict[str, int] = {}
        for topic, _ in self.owned:
            counts[topic] = counts.get(topic, 0) + 1
        self.metrics.set_assigned(counts)

    # --- stop ----------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping", extra={"action": "stopping", "batches": self.batches})
        self._commit_hint(self.expected, asynchronous=False)
        self.consumer.close()  # leaves the group; the revoke callback runs in here
        self.producer.flush(5.0)
        self.db_thread.shutdown(wait=True)
        self.writer.close()


# --- process entry point ---


def _wait_for_database(
    writer: Writer, settings: Settings, stop: threading.Event, health: Health
) -> str | None:
    """Connect, check (or migrate) the schema and return its version; retry an unreachable server with
    backoff until `stop` (None)."""
    backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
    while not stop.is_set():
        health.beat()
        try:
            version = check_schema(writer.connection(), settings.migrate_on_start)
            health.set_ready_part("postgres", True)
            health.set_ready_part("schema", True)
            return version
        except (SchemaNotReady, MigrationError):
            raise
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            health.set_ready_part("postgres", False, one_line(exc))
            log.warning(
                "PostgreSQL unreachable (%s); retrying in %.1f s",
                one_line(exc),
                delay,
                extra={"action": "connect_retry"},
            )
            stop.wait(delay)
    return None


def run(settings: Settings) -> int:
    """`accumulator consume`: run the worker until SIGTERM/SIGINT; returns the exit code (SPEC §17)."""
    try:
        dsn = settings.database_dsn()
        client_id = settings.kafka_client_id
        consumer_conf: dict[str, Any] = consumer_config(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            client_id=client_id,
            auto_offset_reset=settings.kafka_auto_offset_reset,
            kafka_extra=settings.kafka_extra,
            consumer_extra=settings.consumer_extra,
        )
        producer_conf: dict[str, Any] = producer_config(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{client_id}-dlq",
            kafka_extra=settings.kafka_extra,
            producer_extra=settings.producer_extra,
        )
    except (ConfigError, KafkaConfigError) as exc:
        log.error("configuration: %s", exc)
        return 2
    cfg = WorkerConfig.from_settings(settings)
    stop = threading.Event()
    writer = Writer(dsn, cfg.group, connect_timeout_s=settings.connect_timeout_s)
    grace_timer: list[threading.Timer] = []

    def start_grace() -> None:
        timer = threading.Timer(settings.shutdown_grace_ms / 1000, writer.cancel)
        timer.daemon = True
        timer.start()
        grace_timer.append(timer)

    previous_handlers = install_signals(stop, start_grace, finishing="batch")
    health = Health(liveness_timeout_s=settings.liveness_timeout_ms / 1000)
    for part in ("postgres", "schema", "group", "backoff"):
        health.set_ready_part(part, part == "backoff", "not yet")
    registry = CollectorRegistry()
    port = settings.metrics_port_for("consume")
    server: MetricsServer | None = None
    try:
        if port:
            # Served from the start, so probes answer (not ready) while PostgreSQL is still awaited; the
            # metrics join the registry once the schema is known.
            server = MetricsServer(registry, health, settings.metrics_host, port)
            server.start()
        try:
            schema_version = _wait_for_database(writer, settings, stop, health)
            if schema_version is None:
                return 0
        except SchemaNotReady as exc:
            log.error("%s", exc)
            return 6
        except MigrationError as exc:
            log.error("migrations: %s", exc)
            return 6
        metrics = WorkerMetrics(registry, version=package_version(), schema_version=schema_version)
        consumer_conf["logger"] = client_logger("consumer")
        consumer_conf["error_cb"] = _log_client_error
        producer_conf.setdefault("message.timeout.ms", str(int(_DLQ_FLUSH_TIMEOUT_S * 1000)))
        producer_conf["logger"] = client_logger("producer")
        producer_conf["error_cb"] = _log_client_error
        ensure_dead_letter_topics(
            admin_config(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                client_id=f"{client_id}-admin",
                kafka_extra=settings.kafka_extra,
            ),
            cfg.topics,
            cfg.dlq_topic,
        )
        worker = Worker(
            cfg,
            consumer=Consumer(consumer_conf),
            producer=Producer(producer_conf),
            writer=writer,
            metrics=metrics,
            health=health,
            stop=stop,
        )
        with contextlib.suppress(psycopg.Error):  # metric labels only; refreshed later
            worker.known_registers = writer.register_names()
        worker.run()
        log.info("worker stopped", extra={"action": "worker_stopped"})
        return 0
    finally:
        for timer in grace_timer:
            timer.cancel()
        if server is not None:
            server.stop()
        writer.close()
        restore_signals(previous_handlers)


def _log_client_error(error: KafkaError) -> None:
    log.warning("kafka: %s", error.str(), extra={"action": "kafka_error", "code": error.code()})
