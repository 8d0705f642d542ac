"""Prometheus metrics of the worker and the compactor (SPEC §16).

Every metric lives on the registry the caller injects (never the global `REGISTRY`), so a test or a second
process in the same interpreter gets its own set. prometheus_client appends `_total` to counter names, hence
the bare names below; the exposed names are exactly SPEC's.

Labels stay bounded: `register` is a register name or `_unknown`, `op` an op or `_unknown`, and nothing ever
carries a recorder id, command id, dimension value or hash.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.commands import OPS

__all__ = [
    "BATCH_DURATION_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "COMMAND_AGE_BUCKETS",
    "MAINTENANCE_TASKS",
    "MERGE_DURATION_BUCKETS",
    "OUTCOMES",
    "RETRY_CAUSES",
    "ROLES",
    "UNKNOWN",
    "CompactorMetrics",
    "WorkerMetrics",
]

UNKNOWN: Final = "_unknown"

OUTCOMES: Final = ("applied", "duplicate", "rejected", "dead_lettered")
RETRY_CAUSES: Final = ("postgres", "kafka", "fenced")
ROLES: Final = ("leader", "standby")
MAINTENANCE_TASKS: Final = ("merge", "partitions", "verify", "purge")

BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
# A batch commits in milliseconds when healthy; the tail up to a minute shows lock waits and slow disks.
BATCH_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# sent_at -> commit: milliseconds when caught up, up to an hour while a backlog drains.
COMMAND_AGE_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
MERGE_DURATION_BUCKETS: Final = BATCH_DURATION_BUCKETS


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class WorkerMetrics:
    """Every worker metric of SPEC §16, created on `registry`."""

    def __init__(self, registry: CollectorRegistry, *, version: str, schema_version: str) -> None:
        r = registry
        self.commands = Counter(
            "accumulator_commands", "Commands by outcome", ["register", "op", "outcome"], registry=r
        )
        self.movements = Counter(
            "accumulator_movements", "Movements inserted by applied commands", ["register"], registry=r
        )
        self.batch_size = Histogram(
            "accumulator_batch_size", "Messages per batch", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_duration = Histogram(
            "accumulator_batch_duration_seconds",
            "First record polled to PostgreSQL commit",
            buckets=BATCH_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_retries = Counter(
            "accumulator_batch_retries", "Batches rolled back and retried", ["cause"], registry=r
        )
        self.consumer_lag = Gauge(
            "accumulator_consumer_lag_messages",
            "High watermark minus stored next offset, owned partitions",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "accumulator_assigned_partitions", "Partitions owned", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "accumulator_dead_letters", "Dead letters produced", ["reason"], registry=r
        )
        self.command_age = Histogram(
            "accumulator_command_age_seconds",
            "Commit time minus sent_at, when given",
            buckets=COMMAND_AGE_BUCKETS,
            registry=r,
        )
        self.key_mismatch = Counter(
            "accumulator_key_mismatch", "Messages whose key is not their recorder", ["topic"], registry=r
        )
        self.build_info = Gauge(
            "accumulator_build_info", "Build identity", ["version", "schema_version"], registry=r
        )
        self.build_info.labels(version, schema_version).set(1)
        # Bounded label sets start at 0, so rate() and alerts see the series before the first event.
        for cause in RETRY_CAUSES:
            self.batch_retries.labels(cause)
        # Topics ever reported by set_assigned, so a topic we stop owning reads 0 rather than its last count.
        self._topics: set[str] = set()
        self._topics_lock = threading.Lock()

    def count_command(self, register: str | None, op: str | None, outcome: str, n: int = 1) -> None:
        """Add `n` commands; a missing register or op (undecodable record) counts as `_unknown`."""
        _check(outcome, OUTCOMES, "outcome")
        # An op outside the contract could only come from raw input: keep the label set bounded.
        op_label = op if op in OPS else UNKNOWN
        self.commands.labels(register or UNKNOWN, op_label, outcome).inc(n)

    def count_retry(self, cause: str) -> None:
        """One batch rolled back and retried; `cause` is postgres, kafka or fenced."""
        self.batch_retries.labels(_check(cause, RETRY_CAUSES, "cause")).inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        # A stale high watermark can trail a just-committed offset; lag is never negative.
        self.consumer_lag.labels(topic, str(partition)).set(max(lag, 0))

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of revoked or lost partitions: they are no longer ours to report."""
        for topic, partition in partitions:
            self.consumer_lag.remove(topic, str(partition))

    def set_assigned(self, counts: Mapping[str, int]) -> None:
        """Owned partitions per topic; topics reported before but absent from `counts` read 0."""
        with self._topics_lock:  # one consistent picture even if two threads report at once
            self._topics.update(counts)
            for topic in self._topics:
                self.assigned_partitions.labels(topic).set(counts.get(topic, 0))


class CompactorMetrics:
    """Every compactor metric of SPEC §16, created on `registry`.

    Attributes: leader, merge_lag, delta_pending, merges, merged_rows, merge_duration, verify_status,
    verify_mismatches, verify_last_run, verify_duration, partitions_created, maintenance_errors, build_info.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str, schema_version: str) -> None:
        r = registry
        self.leader = Gauge(
            "accumulator_leader", "1 for the current role, 0 for the other", ["role"], registry=r
        )
        self.merge_lag = Gauge(
            "accumulator_merge_lag_seconds",
            "Age of the oldest unmerged delta row, 0 when none",
            ["register"],
            registry=r,
        )
        self.delta_pending = Gauge(
            "accumulator_delta_pending_rows", "Unmerged delta rows", ["register"], registry=r
        )
        self.merges = Counter(
            "accumulator_merges", "Merge transactions that consumed rows", ["register"], registry=r
        )
        self.merged_rows = Counter(
            "accumulator_merged_rows", "Delta rows consumed by merges", ["register"], registry=r
        )
        self.merge_duration = Histogram(
            "accumulator_merge_duration_seconds",
            "One merge transaction",
            buckets=MERGE_DURATION_BUCKETS,
            registry=r,
        )
        self.verify_status = Gauge(
            "accumulator_verify_status",
            "1 = last full verify clean, 0 = mismatches",
            ["register"],
            registry=r,
        )
        self.verify_mismatches = Gauge(
            "accumulator_verify_mismatches", "Non-OK rows in the last verify", ["register"], registry=r
        )
        self.verify_last_run = Gauge(
            "accumulator_verify_last_run_timestamp_seconds",
            "Unix time the last verify finished",
            ["register"],
            registry=r,
        )
        self.verify_duration = Gauge(
            "accumulator_verify_duration_seconds", "How long the last verify took", ["register"], registry=r
        )
        self.partitions_created = Counter(
            "accumulator_partitions_created", "Partitions created by maintenance", ["register"], registry=r
        )
        self.maintenance_errors = Counter(
            "accumulator_maintenance_errors", "Failed task runs (retried next cycle)", ["task"], registry=r
        )
        self.build_info = Gauge(
            "accumulator_build_info", "Build identity", ["version", "schema_version"], registry=r
        )
        self.build_info.labels(version, schema_version).set(1)
        for task in MAINTENANCE_TASKS:
            self.maintenance_errors.labels(task)
        # Every instance starts as a standby until it holds the leader lock.
        self.set_leader(False)

    def set_leader(self, is_leader: bool) -> None:
        self.leader.labels("leader").set(1 if is_leader else 0)
        self.leader.labels("standby").set(0 if is_leader else 1)

    def count_error(self, task: str) -> None:
        """One failed task run; `task` is merge, partitions, verify or purge."""
        self.maintenance_errors.labels(_check(task, MAINTENANCE_TASKS, "task")).inc()

    def record_verify(self, register: str, *, mismatches: int, duration_s: float, finished_at: float) -> None:
        """A finished full verify (a failed or timed-out one keeps the last values: call count_error)."""
        self.verify_status.labels(register).set(1 if mismatches == 0 else 0)
        self.verify_mismatches.labels(register).set(mismatches)
        self.verify_last_run.labels(register).set(finished_at)
        self.verify_duration.labels(register).set(duration_s)

    def forget_register(self, name: str) -> None:
        """Drop every per-register series of a dropped register."""
        for metric in (
            self.merge_lag,
            self.delta_pending,
            self.merges,
            self.merged_rows,
            self.verify_status,
            self.verify_mismatches,
            self.verify_last_run,
            self.verify_duration,
            self.partitions_created,
        ):
            metric.remove(name)
