"""Compactor sidecar (SPEC §15): merge the high-write delta buffer, keep partitions ahead, purge expired
idempotency records, verify every register on a timer.

One compactor per database leads: it holds a session advisory lock on its own connection and runs every
write task on that connection, so losing the connection ends leadership with it. The others poll the lock
as hot standbys. Two leaders at once could do no harm anyway (merges of a register serialize in the engine,
partitions and purges are idempotent); the lock only keeps them from doing the same work twice.

Every task is one short autocommitted statement (verify: one read-only transaction per register), so killing
the process at any instant loses nothing: an interrupted merge rolls back whole, and the next leader takes the
same delta rows. Verify runs in a thread on a connection of its own (`ACCUMULATOR_VERIFY_DSN` may point it at
a hot standby), so a long verify never holds merges back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal

import psycopg
from prometheus_client import CollectorRegistry
from psycopg.rows import TupleRow

from consumer.health import Health, MetricsServer
from consumer.metrics import CompactorMetrics
from consumer.process import check_schema, install_signals, one_line, restore_signals
from consumer.schedule import (
    Backoff,
    Every,
    Leadership,
    next_round,
    once_exit_code,
    wake_in,
)
from consumer.settings import Settings
from consumer.writer import cancel_running
from registers.errors import MigrationError, SchemaNotReady, TransientError
from registers.migrate import package_version
from registers.sqlfiles import queries

__all__ = ["LEADER_KEY", "Compactor", "CompactorConfig", "Verifier", "VerifyPass", "run", "serve"]

log = logging.getLogger("accumulator.compactor")

# Session advisory lock of the leader: "accumcmp" in ASCII. A bigint key: the engine's advisory locks take
# (int, int) pairs, which PostgreSQL keeps in a key space of their own, and the migration runner's bigint is
# "accummig" (registers.migrate.LOCK_KEY).
LEADER_KEY: Final = 0x616363756D636D70
PURGE_BATCH: Final = 10_000  # idempotency records per DELETE: one short transaction each
MAINTENANCE_RETRY_S: Final = 60.0  # a failed partitions/purge run comes back after this (or the interval)
_TICK_S: Final = 1.0  # the loop turns at least this often (liveness, verify results)
_VERIFY_STOP_S: Final = 10.0  # wait for a cancelled verify to return its connection
_EXIT_UNREACHABLE: Final = 4
_EXIT_USAGE: Final = 2
_EXIT_SCHEMA: Final = 6

Conn = psycopg.Connection[TupleRow]
_SQL: Final = queries("compactor")


def _q(name: str) -> bytes:
    return _SQL[name].encode("utf-8")  # bytes: psycopg takes them as a literal query


def _broken(conn: Conn | None) -> bool:
    return conn is None or conn.closed or conn.broken


def _connect(dsn: str, connect_timeout_s: int, role: str) -> Conn:
    return psycopg.connect(
        dsn, connect_timeout=connect_timeout_s, application_name=f"accumulator-{role}", autocommit=True
    )


@dataclass(frozen=True, slots=True)
class CompactorConfig:
    """The settings the compactor needs (built from `Settings` by `serve`, directly by tests)."""

    merge_interval_ms: int = 5000
    merge_delay_ms: int = 2000
    merge_batch: int = 10_000
    partitions_ahead: int = 3
    maintenance_interval_ms: int = 3_600_000
    leader_poll_ms: int = 5000
    verify_interval_ms: int = 600_000
    verify_timeout_ms: int = 300_000
    dedupe_retention_hours: int = 168
    retry_initial_ms: int = 500
    retry_max_ms: int = 30_000
    connect_timeout_s: int = 10
    shutdown_grace_ms: int = 25_000

    @classmethod
    def from_settings(cls, s: Settings) -> CompactorConfig:
        return cls(
            merge_interval_ms=s.merge_interval_ms,
            merge_delay_ms=s.merge_delay_ms,
            merge_batch=s.merge_batch,
            partitions_ahead=s.partitions_ahead,
            maintenance_interval_ms=s.maintenance_interval_ms,
            leader_poll_ms=s.leader_poll_ms,
            verify_interval_ms=s.verify_interval_ms,
            verify_timeout_ms=s.verify_timeout_ms,
            dedupe_retention_hours=s.dedupe_retention_hours,
            retry_initial_ms=s.retry_initial_ms,
            retry_max_ms=s.retry_max_ms,
            connect_timeout_s=s.connect_timeout_s,
            shutdown_grace_ms=s.shutdown_grace_ms,
        )

    @property
    def merge_interval_s(self) -> float:
        return self.merge_interval_ms / 1000


class _ConnectionLost(Exception):
    """The leader's connection broke: leadership is gone with it; reconnect with backoff."""


# --- verify -------------------------------------------------------------------------------------------------


@dataclass
class VerifyPass:
    """Outcome of one pass over the registers: problem rows per verified register, registers that failed."""

    mismatches: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    cancelled: bool = False
    finished_at: float = 0.0  # monotonic


class Verifier:
    """Full `register_verify` of each register, one at a time, on a connection of its own.

    Each register is one read-only transaction under `statement_timeout = verify_timeout_ms`. A failed or
    timed-out verify keeps the register's last status and counts `maintenance_errors_total{task="verify"}`.
    `start` runs a pass in a thread (the long-running loop); `verify` runs one in the caller's (`--once`).
    """

    def __init__(
        self, dsn: str, *, timeout_ms: int, connect_timeout_s: int, metrics: CompactorMetrics
    ) -> None:
        self.dsn = dsn
        self.timeout_ms = timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self.metrics = metrics
        self._conn: Conn | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: VerifyPass | None = None

    # --- a pass, in the caller's thread ------------------------------------------------------------------

    def verify(self, names: Sequence[str]) -> VerifyPass:
        result = VerifyPass()
        started = time.monotonic()
        for name in names:
            if self._cancel.is_set():
                result.cancelled = True
                break
            try:
                conn = self._connection()
            except psycopg.Error as exc:
                # Unreachable: the rest of the pass would only wait out the same timeout, one by one.
                self.metrics.count_error("verify")
                log.warning(
                    "verify: cannot connect (%s); pass abandoned",
                    one_line(exc),
                    extra={"action": "verify_failed", "registers": len(names) - len(result.mismatches)},
                )
                result.failed.extend(n for n in names if n not in result.mismatches)
                break
            outcome = self._verify_one(conn, name)
            if outcome == "cancelled":
                result.cancelled = True
                break
            if outcome == "failed":
                result.failed.append(name)
            elif isinstance(outcome, int):
                result.mismatches[name] = outcome
        result.finished_at = time.monotonic()
        problems = sum(result.mismatches.values())
        log.info(
            "verify pass finished",
            extra={
                "action": "verify_pass",
                "registers": len(result.mismatches),
                "problems": problems,
                "failed": len(result.failed),
                "cancelled": result.cancelled,
                "duration_s": round(result.finished_at - started, 3),
            },
        )
        return result

    def _verify_one(self, conn: Conn, name: str) -> int | Literal["failed", "cancelled"] | None:
        """Problem rows of `name`; None when the register was dropped meanwhile; "failed" or "cancelled"."""
        started = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute(_q("verify_timeout"), {"ms": str(self.timeout_ms)})
                rows = conn.execute(_q("verify"), {"register": name}).fetchall()
        except psycopg.errors.UndefinedObject:
            return None  # dropped since the registry was read: nothing to verify
        except psycopg.Error as exc:
            if self._cancel.is_set():
                return "cancelled"
            self.metrics.count_error("verify")
            timed_out = isinstance(exc, psycopg.errors.QueryCanceled)
            log.warning(
                "verify of %s %s: %s",
                name,
                "timed out" if timed_out else "failed",
                one_line(exc),
                extra={"action": "verify_failed", "register": name, "timed_out": timed_out},
            )
            if _broken(conn):
                self._close()
            return "failed"
        duration = time.perf_counter() - started
        problems = sum(int(n) for _kind, _status, n, _samples in rows)
        self.metrics.record_verify(name, mismatches=problems, duration_s=duration, finished_at=time.time())
        if problems:
            kinds = {f"{kind}/{state}": int(n) for kind, state, n, _samples in rows}
            log.warning(
                "verify found %d problem(s) in %s",
                problems,
                name,
                extra={"action": "verify_mismatch", "register": name, "problems": problems, "kinds": kinds},
            )
            # Samples carry dimension values and amounts: payload, so DEBUG only.
            for kind, state, _n, samples in rows:
                log.debug(
                    "verify %s %s/%s samples: %s",
                    name,
                    kind,
                    state,
                    samples,
                    extra={"action": "verify_samples", "register": name},
                )
        else:
            log.debug(
                "verify of %s clean",
                name,
                extra={"action": "verify_clean", "register": name, "duration_s": round(duration, 3)},
            )
        return problems

    def _connection(self) -> Conn:
        conn = self._conn
        if _broken(conn):
            self._close()
            conn = _connect(self.dsn, self.connect_timeout_s, "compact-verify")
            conn.read_only = True  # every transaction BEGINs READ ONLY: fine on a hot standby
            self._conn = conn
        assert conn is not None
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # --- a pass in a thread ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, names: Sequence[str]) -> None:
        if self.running:
            raise RuntimeError("a verify pass is running already")
        self._cancel.clear()
        self._result = None
        names = list(names)

        def work() -> None:
            try:
                self._result = self.verify(names)
            except Exception:  # never let the thread die silently: the pass counts as failed
                log.exception("verify pass crashed", extra={"action": "verify_crashed"})
                self.metrics.count_error("verify")
                self._result = VerifyPass(failed=names, finished_at=time.monotonic())

        self._thread = threading.Thread(target=work, name="accumulator-verify", daemon=True)
        self._thread.start()

    def take_result(self) -> VerifyPass | None:
        """The finished pass's result, once; None while running or when nothing ran."""
        if self.running:
            return None
        result, self._result = self._result, None
        return result

    def cancel(self) -> None:
        """Stop the pass after (or, by cancelling the statement, during) the current register; thread-safe."""
        self._cancel.set()
        cancel_running(self._conn)

    def stop(self, within: float = _VERIFY_STOP_S) -> None:
        """Cancel a running pass and wait for its thread (cancelling again: a cancel may land between
        statements), then close the connection."""
        deadline = time.monotonic() + within
        while self.running and time.monotonic() < deadline:
            self.cancel()
            if self._thread is not None:
                self._thread.join(0.2)
        if not self.running:
            self._close()

    def reset(self) -> None:
        """Allow the next pass after a cancelled one."""
        self._cancel.clear()


# --- the loop -----------------------------------------------------------------------------------------------


class Compactor:
    """One compactor instance. `run()` loops until `stop`; `run_once()` runs one pass of every task."""

    def __init__(
        self,
        cfg: CompactorConfig,
        *,
        dsn: str,
        verifier: Verifier,
        metrics: CompactorMetrics,
        health: Health,
        stop: threading.Event,
        conn: Conn | None = None,
        key: int = LEADER_KEY,
    ) -> None:
        self.cfg = cfg
        self.dsn = dsn
        self.verifier = verifier
        self.metrics = metrics
        self.health = health
        self.stop = stop
        self.key = key
        self.conn = conn
        self._session_ready = False
        self.leadership = Leadership()
        self.merge_every = Every(cfg.merge_interval_ms / 1000)
        self.maintain_every = Every(cfg.maintenance_interval_ms / 1000)
        self.verify_every = Every(cfg.verify_interval_ms / 1000)
        self.poll_every = Every(cfg.leader_poll_ms / 1000)
        self.backoff = Backoff(cfg.retry_initial_ms / 1000, cfg.retry_max_ms / 1000)
        self.registers: dict[str, bool] = {}  # name -> high_write, as last read from the registry
        self.lag_registers: set[str] = set()  # registers with merge lag series
        self.failed: set[str] = set()  # tasks that failed in this pass (--once exit code)
        self._said_standby = False

    # --- connection ----------------------------------------------------------------------------------------

    def connection(self) -> Conn:
        """The leader-lock connection, (re)opened when needed; psycopg.OperationalError when unreachable."""
        conn = self.conn
        if conn is None or _broken(conn):
            self.close()
            conn = _connect(self.dsn, self.cfg.connect_timeout_s, "compact")
            self.conn = conn
        if not self._session_ready:
            try:
                conn.execute(_q("leader_session"))
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:  # keepalives only shorten a failover: never a reason to stop
                log.warning("session settings refused: %s", one_line(exc), extra={"action": "session_setup"})
            self._session_ready = True
        return conn

    def cancel_statement(self) -> None:
        """Cancel the leader connection's running statement (shutdown grace exceeded); thread-safe."""
        cancel_running(self.conn)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self._session_ready = False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # --- long-running loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        log.info(
            "compactor started",
            extra={"action": "compactor_started", "merge_interval_ms": self.cfg.merge_interval_ms},
        )
        try:
            while not self.stop.is_set():
                self.health.beat()
                try:
                    self._turn(time.monotonic())
                except (_ConnectionLost, psycopg.OperationalError) as exc:
                    self._disconnected(exc)
                    self.stop.wait(self._backoff_delay(exc))
                    continue
                now = time.monotonic()
                schedules = (
                    [self.merge_every, self.maintain_every, self.verify_every]
                    if self.leadership.is_leader
                    else [self.poll_every]
                )
                self.stop.wait(wake_in(now, schedules, cap_s=_TICK_S))
        finally:
            self._shutdown()

    def _turn(self, now: float) -> None:
        conn = self.connection()
        self.health.set_ready_part("postgres", True)
        if not self.leadership.is_leader and self.poll_every.due(now):
            self.poll_every.ran(now)
            if self._try_lead(conn):
                self._acquired(now)
            elif not self._said_standby:
                self._said_standby = True
                log.info("standing by: another compactor leads", extra={"action": "standby"})
        if self.leadership.is_leader:
            self._lead(conn, time.monotonic())
        self.backoff.reset()

    def _try_lead(self, conn: Conn) -> bool:
        try:
            row = conn.execute(_q("try_lead"), {"key": self.key}).fetchone()
        except psycopg.Error as exc:
            raise _ConnectionLost(one_line(exc)) from exc
        return bool(row and row[0])

    def _acquired(self, now: float) -> None:
        self.leadership.observe(True, now)
        self._said_standby = False
        self.metrics.set_leader(True)
        # A new term runs every task at once: merges and partitions may have waited for a leader, and the
        # per-register gauges of this instance were dropped when it last stopped leading.
        for schedule in (self.merge_every, self.maintain_every, self.verify_every):
            schedule.reset()
        self.verifier.reset()
        log.info("leading", extra={"action": "leader_acquired", "term": self.leadership.terms})

    def _lead(self, conn: Conn, now: float) -> None:
        self._collect_verify()
        due_merge = self.merge_every.due(now)
        due_maintenance = self.maintain_every.due(now)
        due_verify = self.verify_every.due(now) and not self.verifier.running
        if not (due_merge or due_maintenance or due_verify):
            return
        if due_merge:
            self.merge_every.ran(now)
        if not self._read_registers(conn):
            # Counted; whatever was due comes back with the next merge round, not in a tight loop.
            for schedule, due in ((self.maintain_every, due_maintenance), (self.verify_every, due_verify)):
                if due:
                    schedule.retry(now, self.cfg.merge_interval_s)
            return
        if due_merge:
            self.merge(conn, deadline=now + self.cfg.merge_interval_s)
        if due_maintenance and not self.stop.is_set():
            started = time.monotonic()
            outcome = self.maintain(conn, deadline=started + self.cfg.merge_interval_s)
            if outcome == "done":
                self.maintain_every.ran(started)
            elif outcome == "unfinished":  # a purge backlog: go on after the next merge round
                self.maintain_every.retry(time.monotonic(), self.cfg.merge_interval_s)
            else:  # partitions are kept periods ahead: a minute's wait costs nothing, hammering might
                self.maintain_every.retry(
                    time.monotonic(), max(MAINTENANCE_RETRY_S, self.cfg.merge_interval_s)
                )
        if due_verify and not self.stop.is_set():
            self.verify_every.hold()  # until the pass finishes: the interval counts from its end
            self.verifier.start(list(self.registers))

    def _collect_verify(self) -> None:
        result = self.verifier.take_result()
        if result is None:
            return
        if result.cancelled:
            self.verifier.reset()
            self.verify_every.reset()
        else:
            self.verify_every.ran(result.finished_at)

    def _backoff_delay(self, exc: BaseException) -> float:
        delay = self.backoff.next_delay()
        log.warning(
            "PostgreSQL unavailable (%s); retrying in %.1f s",
            one_line(exc),
            delay,
            extra={"action": "connect_retry", "delay_s": round(delay, 3)},
        )
        return delay

    def _disconnected(self, exc: BaseException) -> None:
        self.health.set_ready_part("postgres", False, one_line(exc))
        self.close()
        if self.leadership.connection_lost(time.monotonic()) is not None:
            log.warning(
                "leadership lost with the connection",
                extra={"action": "leader_lost", "error": one_line(exc)},
            )
            self._step_down()

    def _step_down(self) -> None:
        """Stop leader work: cancel a verify, report standby, drop the gauges only a leader reports."""
        self.verifier.stop()
        self._collect_verify()
        self.metrics.set_leader(False)
        for gauge in (
            self.metrics.merge_lag,
            self.metrics.delta_pending,
            self.metrics.verify_status,
            self.metrics.verify_mismatches,
            self.metrics.verify_last_run,
            self.metrics.verify_duration,
        ):
            gauge.clear()
        self.lag_registers.clear()

    def _shutdown(self) -> None:
        if self.leadership.is_leader:
            self._step_down()
            if not _broken(self.conn):
                assert self.conn is not None
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute(_q("release_lead"), {"key": self.key})
            self.leadership.released(time.monotonic())
            log.info("leadership released", extra={"action": "leader_released"})
        else:
            self.verifier.stop()
        self.close()
        log.info("compactor stopped", extra={"action": "compactor_stopped"})

    # --- one pass (--once) ---------------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass of every task if this instance can lead; the exit code (SPEC §17). Raises
        psycopg.OperationalError when PostgreSQL cannot be reached, _ConnectionLost when it goes away."""
        conn = self.connection()
        if not self._try_lead(conn):
            log.info("another compactor leads; nothing to do", extra={"action": "once_skipped"})
            self.close()
            return 0
        now = time.monotonic()
        self.leadership.observe(True, now)
        self.metrics.set_leader(True)
        self.failed.clear()
        mismatches: dict[str, int] = {}
        try:
            if not self._read_registers(conn):
                return once_exit_code(mismatches={}, failed=["registers"], interrupted=self.stop.is_set())
            merged = self.merge(conn, deadline=now + self.cfg.merge_interval_s)
            if not self.stop.is_set():
                self.maintain(conn, deadline=None)
            if self.verify_every.enabled and not self.stop.is_set():
                result = self.verifier.verify(list(self.registers))
                mismatches = result.mismatches
                if result.failed:
                    self.failed.add("verify")
            interrupted = self.stop.is_set()
            code = once_exit_code(mismatches=mismatches, failed=sorted(self.failed), interrupted=interrupted)
            log.info(
                "pass finished",
                extra={
                    "action": "once_finished",
                    "merged_rows": merged,
                    "problems": sum(mismatches.values()),
                    "failed": sorted(self.failed),
                    "exit": code,
                },
            )
            return code
        finally:
            if not _broken(self.conn):
                with contextlib.suppress(psycopg.Error):
                    conn.execute(_q("release_lead"), {"key": self.key})
            self.leadership.released(time.monotonic())
            self.metrics.set_leader(False)
            self.verifier.stop()
            self.close()

    # --- tasks ---------------------------------------------------------------------------------------------

    def _task_failed(self, task: str, register: str | None, exc: psycopg.Error, conn: Conn) -> None:
        """Count and log a failed task run; raise _ConnectionLost when the leader's connection is gone."""
        self.metrics.count_error(task)
        self.failed.add(task)
        if _broken(conn):
            raise _ConnectionLost(one_line(exc)) from exc
        log.warning(
            "%s failed%s: %s",
            task,
            f" for {register}" if register else "",
            one_line(exc),
            extra={"action": f"{task}_failed", "register": register, "sqlstate": exc.sqlstate},
        )

    def _read_registers(self, conn: Conn) -> bool:
        try:
            rows = conn.execute(_q("registers")).fetchall()
        except psycopg.Error as exc:
            self._task_failed("merge", None, exc, conn)  # every task needs the list; merge is the first
            return False
        current = {str(name): bool(high_write) for name, high_write in rows}
        for gone in self.registers.keys() - current.keys():
            self.metrics.forget_register(gone)
            self.lag_registers.discard(gone)
            log.info(
                "register dropped; its series removed", extra={"action": "register_gone", "register": gone}
            )
        self.registers = current
        return True

    def merge(self, conn: Conn, *, deadline: float) -> int:
        """Merge each high-write register, round after round while calls consume full batches and time
        is left before `deadline`; then refresh the lag gauges. Returns the delta rows consumed."""
        total = 0
        pending = [name for name, high_write in self.registers.items() if high_write]
        while pending and not self.stop.is_set():
            consumed: dict[str, int | None] = {}
            for name in pending:
                if self.stop.is_set():
                    break
                consumed[name] = self._merge_call(conn, name)
                total += consumed[name] or 0
            pending = next_round(consumed, self.cfg.merge_batch)
            if time.monotonic() >= deadline:
                break
        self._delta_gauges(conn)
        return total

    def _merge_call(self, conn: Conn, name: str) -> int | None:
        started = time.perf_counter()
        params = {
            "register": name,
            "max_rows": self.cfg.merge_batch,
            "min_age": timedelta(milliseconds=self.cfg.merge_delay_ms),
        }
        try:
            row = conn.execute(_q("merge"), params).fetchone()
        except psycopg.errors.UndefinedObject:
            return None  # dropped since the registry was read
        except psycopg.Error as exc:
            self._task_failed("merge", name, exc, conn)
            return None
        finally:
            self.health.beat()
        n = int(row[0]) if row and row[0] is not None else 0
        if n:
            self.metrics.merges.labels(name).inc()
            self.metrics.merged_rows.labels(name).inc(n)
            self.metrics.merge_duration.observe(time.perf_counter() - started)
        return n

    def _delta_gauges(self, conn: Conn) -> None:
        try:
            rows = conn.execute(_q("delta_status")).fetchall()
        except psycopg.Error as exc:
            self._task_failed("merge", None, exc, conn)
            return
        seen: set[str] = set()
        for register, pending_rows, lag_seconds in rows:
            seen.add(register)
            self.metrics.merge_lag.labels(register).set(float(lag_seconds or 0))
            self.metrics.delta_pending.labels(register).set(int(pending_rows or 0))
        for gone in self.lag_registers - seen:  # no longer high-write (or dropped): no buffer to report
            self.metrics.merge_lag.remove(gone)
            self.metrics.delta_pending.remove(gone)
        self.lag_registers = seen

    def maintain(self, conn: Conn, *, deadline: float | None) -> Literal["done", "unfinished", "failed"]:
        """Partitions ahead for every register, then the purge until done or `deadline` (None: until done).

        "failed" when a step failed, "unfinished" when stopped or out of time, else "done".
        """
        ok = True
        for name in list(self.registers):
            if self.stop.is_set():
                return "unfinished"
            try:
                row = conn.execute(
                    _q("create_partitions"), {"register": name, "periods": self.cfg.partitions_ahead}
                ).fetchone()
            except psycopg.errors.UndefinedObject:
                continue
            except psycopg.Error as exc:
                self._task_failed("partitions", name, exc, conn)
                ok = False
                continue
            finally:
                self.health.beat()
            created = int(row[0]) if row and row[0] is not None else 0
            if created:
                self.metrics.partitions_created.labels(name).inc(created)
                log.info(
                    "created %d partition(s) of %s",
                    created,
                    name,
                    extra={"action": "partitions_created", "register": name, "partitions": created},
                )
        purged = self.purge(conn, deadline=deadline)
        if not ok or purged == "failed":
            return "failed"
        return purged

    def purge(self, conn: Conn, *, deadline: float | None) -> Literal["done", "unfinished", "failed"]:
        """Delete expired idempotency records in batches of PURGE_BATCH until none is left or `deadline`."""
        total = 0
        done = False
        try:
            while not self.stop.is_set():
                try:
                    cur = conn.execute(
                        _q("purge_commands"),
                        {"hours": self.cfg.dedupe_retention_hours, "limit": PURGE_BATCH},
                    )
                except psycopg.Error as exc:
                    self._task_failed("purge", None, exc, conn)
                    return "failed"
                finally:
                    self.health.beat()
                total += cur.rowcount
                if cur.rowcount < PURGE_BATCH:
                    done = True
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            if total:
                log.info(
                    "purged %d expired idempotency record(s)",
                    total,
                    extra={"action": "purged", "records": total, "finished": done},
                )
        return "done" if done else "unfinished"


# --- process entry points -----------------------------------------------------------------------------------


class _Interrupts:
    """What the first SIGTERM/SIGINT does besides setting `stop`: cancel a running verify at once and,
    past the shutdown grace, the leader's running statement."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.compactor: Compactor | None = None
        self.timers: list[threading.Timer] = []

    def __call__(self) -> None:
        compactor = self.compactor
        if compactor is None:
            return
        # Threads: a signal handler must not block on the network.
        threading.Thread(target=compactor.verifier.cancel, name="accumulator-cancel", daemon=True).start()
        timer = threading.Timer(self.grace_s, compactor.cancel_statement)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()


def _wait_for_database(
    dsn: str, cfg: CompactorConfig, migrate_on_start: bool, stop: threading.Event, health: Health
) -> tuple[Conn, str] | None:
    """Connect and check the schema, retrying an unreachable server with backoff until `stop` (None)."""
    backoff = Backoff(cfg.retry_initial_ms / 1000, cfg.retry_max_ms / 1000)
    while not stop.is_set():
        health.beat()
        conn: Conn | None = None
        try:
            conn = _connect(dsn, cfg.connect_timeout_s, "compact")
            version = check_schema(conn, migrate_on_start)
        except (psycopg.OperationalError, TransientError) as exc:
            if conn is not None:
                conn.close()
            delay = backoff.next_delay()
            health.set_ready_part("postgres", False, one_line(exc))
            log.warning(
                "PostgreSQL unreachable (%s); retrying in %.1f s",
                one_line(exc),
                delay,
                extra={"action": "connect_retry", "delay_s": round(delay, 3)},
            )
            stop.wait(delay)
            continue
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        health.set_ready_part("postgres", True)
        health.set_ready_part("schema", True)
        return conn, version
    return None


def _connect_once(dsn: str, cfg: CompactorConfig, migrate_on_start: bool) -> tuple[Conn, str] | int:
    """`--once`: one attempt; an exit code when PostgreSQL cannot be used."""
    try:
        conn = _connect(dsn, cfg.connect_timeout_s, "compact")
    except psycopg.OperationalError as exc:
        state = exc.sqlstate or ""
        log.error("cannot connect to PostgreSQL: %s", one_line(exc), extra={"action": "connect_failed"})
        # Wrong credentials or database are configuration; anything else means unreachable (SPEC §17).
        return _EXIT_USAGE if state.startswith("28") or state == "3D000" else _EXIT_UNREACHABLE
    try:
        return conn, check_schema(conn, migrate_on_start)
    except BaseException:
        conn.close()
        raise


def serve(
    settings: Settings,
    stop: threading.Event,
    *,
    once: bool = False,
    registry: CollectorRegistry | None = None,
    interrupts: _Interrupts | None = None,
) -> int:
    """Run the compactor until `stop` is set (or one pass with `once`); returns the exit code.

    No signal handling here (tests run it in a thread); `run` adds it. `registry` lets a caller read the
    metrics of a `--once` pass, which serves no endpoint. ConfigError (exit 2) propagates to the CLI.
    """
    dsn = settings.database_dsn()
    verify_dsn = settings.verify_database_dsn()
    cfg = CompactorConfig.from_settings(settings)
    registry = registry if registry is not None else CollectorRegistry()
    health = Health(liveness_timeout_s=settings.liveness_timeout_ms / 1000)
    for part in ("postgres", "schema"):
        health.set_ready_part(part, False, "not yet")
    port = settings.metrics_port_for("compact")
    server: MetricsServer | None = None
    compactor: Compactor | None = None
    try:
        # --once serves nothing: it would only fight the sidecar next to it for the port.
        if port and not once:
            server = MetricsServer(registry, health, settings.metrics_host, port)
            server.start()
        try:
            if once:
                connected = _connect_once(dsn, cfg, settings.migrate_on_start)
                if isinstance(connected, int):
                    return connected
            else:
                waited = _wait_for_database(dsn, cfg, settings.migrate_on_start, stop, health)
                if waited is None:
                    return 0
                connected = waited
        except SchemaNotReady as exc:
            log.error("%s", exc)
            return _EXIT_SCHEMA
        except MigrationError as exc:
            log.error("migrations: %s", exc)
            return _EXIT_SCHEMA
        conn, schema_version = connected
        metrics = CompactorMetrics(registry, version=package_version(), schema_version=schema_version)
        verifier = Verifier(
            verify_dsn,
            timeout_ms=cfg.verify_timeout_ms,
            connect_timeout_s=cfg.connect_timeout_s,
            metrics=metrics,
        )
        compactor = Compactor(
            cfg, dsn=dsn, verifier=verifier, metrics=metrics, health=health, stop=stop, conn=conn
        )
        if interrupts is not None:
            interrupts.compactor = compactor
        if once:
            try:
                return compactor.run_once()
            except (_ConnectionLost, psycopg.OperationalError) as exc:
                log.error(
                    "PostgreSQL connection lost: %s", one_line(exc), extra={"action": "connection_lost"}
                )
                return _EXIT_UNREACHABLE
        compactor.run()
        return 0
    finally:
        if compactor is not None:
            compactor.verifier.stop()
            compactor.close()
        if server is not None:
            server.stop()


def run(settings: Settings, *, once: bool = False) -> int:
    """`accumulator compact [--once]`: run until SIGTERM/SIGINT (or one pass); returns the exit code."""
    settings.database_dsn()  # ConfigError (exit 2) before anything is set up
    stop = threading.Event()
    interrupts = _Interrupts(settings.shutdown_grace_ms / 1000)
    previous = install_signals(stop, interrupts, finishing="task")
    try:
        return serve(settings, stop, once=once, interrupts=interrupts)
    finally:
        interrupts.close()
        restore_signals(previous)
