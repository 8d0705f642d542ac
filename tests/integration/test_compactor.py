"""The compactor (`accumulator compact`, SPEC §15-§16) against real PostgreSQL.

In-process runs (`serve` in a thread, stopped by its Event) cover the tasks and the metrics; subprocesses
cover what needs a real process: kill -9, SIGTERM, two instances electing a leader. Every check waits on a
condition with a deadline. Where data moved, each test ends with the same proof: per combination, balance
cache == sum of movements == what the test posted, and `register_verify` is clean.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import REPO, CliProcess, dsn_as, wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.compactor import LEADER_KEY, serve
from consumer.localpg import LocalPostgres, free_port
from consumer.settings import Settings
from registers.migrate import migrate

pytestmark = pytest.mark.integration

DIMS = {"warehouse": "integer", "product": "integer"}
RES = {"qty": "numeric(18,2)"}
Key = tuple[int, int]

# Short cadences, so each behaviour shows within a second or two.
FAST: dict[str, Any] = {
    "merge_interval_ms": 200,
    "merge_delay_ms": 0,
    "leader_poll_ms": 200,
    "retry_initial_ms": 100,
    "retry_max_ms": 500,
    "connect_timeout_ms": 2000,
    "verify_interval_ms": 0,
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
}


@pytest.fixture(autouse=True)
def _no_accumulator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's ACCUMULATOR_* settings must not leak into Settings() (ACCUMULATOR_TEST_* stay)."""
    for field in Settings.model_fields:
        monkeypatch.delenv(f"ACCUMULATOR_{field.upper()}", raising=False)


def settings(dsn: str, **overrides: Any) -> Settings:
    return Settings(dsn=dsn, **{**FAST, **overrides})


# --- data --------------------------------------------------------------------------------------------------


def create(conn: psycopg.Connection[Any], name: str, *, high_write: bool = True) -> str:
    conn.execute(
        "SELECT accum.register_create(%s, %s::jsonb, %s::jsonb, high_write := %s)",
        (name, json.dumps(DIMS), json.dumps(RES), high_write),
    )
    return name


class Ledger:
    """What the test posted, per (warehouse, product): the model every final state must equal."""

    def __init__(self) -> None:
        self.totals: dict[Key, Decimal] = {}
        self.posts = 0

    def post(
        self, conn: psycopg.Connection[Any], register: str, n: int, *, period: str = "2026-01-15"
    ) -> None:
        """One document of `n` movements; each hits its own combination (so its own delta row)."""
        self.posts += 1
        movements = []
        for i in range(n):
            key = (i % 7, i)
            qty = Decimal(i % 13) - Decimal("5.25")
            movements.append(
                {
                    "recorder": f"doc-{self.posts}",
                    "period": period,
                    "warehouse": key[0],
                    "product": key[1],
                    "qty": str(qty),
                }
            )
            self.totals[key] = self.totals.get(key, Decimal(0)) + qty
        conn.execute("SELECT accum.register_post(%s, %s::jsonb)", (register, json.dumps(movements)))

    def expected(self) -> dict[Key, Decimal]:
        return {k: v for k, v in self.totals.items() if v != 0}


def pending(conn: psycopg.Connection[Any], register: str) -> int:
    row = conn.execute("SELECT pending_rows FROM accum.register_delta_status(%s)", (register,)).fetchone()
    return int(row[0]) if row is not None else 0  # no row: not a high-write register


def assert_consistent(conn: psycopg.Connection[Any], register: str, ledger: Ledger) -> None:
    """Nothing lost, nothing counted twice: movements, balance cache and the model agree; verify clean."""
    assert pending(conn, register) == 0
    sums = conn.execute(
        f"SELECT warehouse, product, sum(qty) FROM accum.{register}_movements"
        " GROUP BY 1, 2 HAVING sum(qty) <> 0"
    ).fetchall()
    cache = conn.execute(
        f"SELECT warehouse, product, qty FROM accum.{register}_balance_cache WHERE qty <> 0"
    ).fetchall()
    expected = ledger.expected()
    assert {(w, p): q for w, p, q in sums} == expected
    assert {(w, p): q for w, p, q in cache} == expected
    problems = conn.execute(
        "SELECT * FROM accum.register_verify(%s, problems_only := true)", (register,)
    ).fetchall()
    assert problems == []


def corrupt_cache(conn: psycopg.Connection[Any], register: str) -> None:
    conn.execute(
        f"UPDATE accum.{register}_balance_cache SET qty = qty + 1"
        f" WHERE ctid = (SELECT ctid FROM accum.{register}_balance_cache LIMIT 1)"
    )


# --- metrics -----------------------------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:  # not listening (yet, or any more)
        return 0, str(error)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = http_get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, frozenset(labels.items())))


def has_series_of(port: int, register: str) -> bool:
    return any(("register", register) in labels for _name, labels in scrape(port))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- compactors ---------------------------------------------------------------------------------------------


class InProcess:
    """`serve()` in a thread; `stop()` sets its Event and returns the exit code."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self.registry = CollectorRegistry()
        self.stop_event = threading.Event()
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-compactor", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        port = self.settings.metrics_port
        assert port, "started without a metrics port"
        return port

    def _run(self) -> None:
        try:
            self.code = serve(self.settings, self.stop_event, registry=self.registry)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def value(self, name: str, **labels: str) -> float | None:
        return sample(self.registry, name, **labels)

    def leads(self) -> bool:
        return self.value("accumulator_leader", role="leader") == 1.0

    def stop(self, within: float = 15.0) -> int | None:
        self.stop_event.set()
        self.thread.join(within)
        assert not self.thread.is_alive(), "compactor did not stop"
        if self.error is not None:
            raise self.error
        return self.code


@pytest.fixture
def in_process() -> Iterator[list[InProcess]]:
    """Start compactors with `started.append(InProcess(...))`; all are stopped afterwards."""
    started: list[InProcess] = []
    yield started
    for c in started:
        c.stop_event.set()
    for c in started:
        c.thread.join(15)


class Proc(CliProcess):
    """`accumulator compact` with the FAST intervals, metrics on `port`."""

    def __init__(self, dsn: str, log_path: Path, port: int, env: Mapping[str, str]) -> None:
        self.port = port
        settings = {f"ACCUMULATOR_{k.upper()}": str(v) for k, v in FAST.items()}
        settings.update({"ACCUMULATOR_DSN": dsn, "ACCUMULATOR_METRICS_PORT": str(port), **env})
        super().__init__("compact", log_path, settings)

    def metric(self, name: str, **labels: str) -> float | None:
        return metric(self.port, name, **labels)

    def leads(self) -> bool:
        return self.metric("accumulator_leader", role="leader") == 1.0

    def stands_by(self) -> bool:
        return self.metric("accumulator_leader", role="standby") == 1.0


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def start_proc(procs: list[Proc], dsn: str, tmp_path: Path, **env: str) -> Proc:
    p = Proc(dsn, tmp_path / f"compactor-{len(procs)}.log", free_port(), env)
    procs.append(p)
    return p


# --- --once -------------------------------------------------------------------------------------------------


def test_once_merges_creates_partitions_purges_and_verifies(db_dsn: str, pg_roles: object) -> None:
    ledger = Ledger()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "hw")
        ledger.post(conn, "hw", 300, period="2020-01-15")  # no partition for that month yet: default
        ledger.post(conn, "hw", 200)
        partitions_before = len(conn.execute("SELECT * FROM accum.register_partitions('hw')").fetchall())
        conn.execute(
            "INSERT INTO accum.consumer_commands (register, id, fingerprint, applied_at) VALUES"
            " ('hw', 'old', 'f', now() - interval '200 hours'), ('hw', 'recent', 'f', now())"
        )
        waiting = pending(conn, "hw")
        assert waiting >= 500

        registry = CollectorRegistry()
        # The documented roles: a writer for the tasks; verify needs a reader only (it may be a hot standby).
        s = settings(
            dsn_as(db_dsn, "t_writer"),
            verify_dsn=dsn_as(db_dsn, "t_reader"),
            verify_interval_ms=600_000,
            partitions_ahead=5,
        )
        assert serve(s, threading.Event(), once=True, registry=registry) == 0

        assert pending(conn, "hw") == 0
        assert sample(registry, "accumulator_merged_rows_total", register="hw") == waiting
        assert (sample(registry, "accumulator_merges_total", register="hw") or 0) >= 1
        assert sample(registry, "accumulator_merge_duration_seconds_count") == sample(
            registry, "accumulator_merges_total", register="hw"
        )
        assert sample(registry, "accumulator_merge_lag_seconds", register="hw") == 0
        assert sample(registry, "accumulator_delta_pending_rows", register="hw") == 0
        partitions = conn.execute("SELECT partition_name FROM accum.register_partitions('hw')").fetchall()
        assert ("hw_movements_2020_01",) in partitions
        created = len(partitions) - partitions_before
        assert created >= 1
        assert sample(registry, "accumulator_partitions_created_total", register="hw") == created
        ids = conn.execute("SELECT id FROM accum.consumer_commands ORDER BY id").fetchall()
        assert ids == [("recent",)]
        assert sample(registry, "accumulator_verify_status", register="hw") == 1
        assert sample(registry, "accumulator_verify_mismatches", register="hw") == 0
        assert (sample(registry, "accumulator_verify_last_run_timestamp_seconds", register="hw") or 0) > 0
        for task in ("merge", "partitions", "verify", "purge"):
            assert sample(registry, "accumulator_maintenance_errors_total", task=task) == 0
        assert_consistent(conn, "hw", ledger)

        corrupt_cache(conn, "hw")
        registry = CollectorRegistry()
        assert serve(s, threading.Event(), once=True, registry=registry) == 3
        assert sample(registry, "accumulator_verify_status", register="hw") == 0
        assert (sample(registry, "accumulator_verify_mismatches", register="hw") or 0) >= 1


def test_once_command_line_exit_codes(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "plain", high_write=False)
        Ledger().post(conn, "plain", 20)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
        argv = [sys.executable, "-m", "consumer", "compact", "--once", "--dsn", db_dsn]
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        corrupt_cache(conn, "plain")
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert "verify found 1 problem(s) in plain" in done.stderr


def test_once_does_nothing_while_another_compactor_leads(
    db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn, psycopg.connect(db_dsn, autocommit=True) as leader:
        create(conn, "hw")
        Ledger().post(conn, "hw", 50)
        assert leader.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,)).fetchone() == (True,)
        caplog.set_level(logging.INFO, logger="accumulator.compactor")
        assert serve(settings(db_dsn), threading.Event(), once=True) == 0
        assert pending(conn, "hw") == 50
        assert "another compactor leads" in caplog.text


def test_unmigrated_database_exits_6(empty_db_dsn: str) -> None:
    assert serve(settings(empty_db_dsn), threading.Event(), once=True) == 6
    assert serve(settings(empty_db_dsn), threading.Event()) == 6


# --- long-running, in-process -------------------------------------------------------------------------------


def test_merge_lag_rises_while_merging_waits_and_falls_when_it_resumes(
    db_dsn: str, in_process: list[InProcess]
) -> None:
    ledger = Ledger()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "hw")
        ledger.post(conn, "hw", 400)
        waiting = pending(conn, "hw")
        # Merging held back: nothing is an hour old yet.
        held = InProcess(settings(db_dsn, merge_delay_ms=3_600_000, metrics_port=free_port()))
        in_process.append(held)
        wait_until(
            lambda: metric(held.port, "accumulator_delta_pending_rows", register="hw") == waiting,
            within=10,
            what="pending rows reported",
        )
        first = metric(held.port, "accumulator_merge_lag_seconds", register="hw")
        assert first is not None
        wait_until(
            lambda: (metric(held.port, "accumulator_merge_lag_seconds", register="hw") or 0) > first + 0.5,
            within=10,
            what="merge lag rising",
        )
        assert pending(conn, "hw") == waiting
        assert held.stop() == 0

        resumed = InProcess(settings(db_dsn, metrics_port=free_port()))
        in_process.append(resumed)
        wait_until(
            lambda: (
                metric(resumed.port, "accumulator_delta_pending_rows", register="hw") == 0
                and metric(resumed.port, "accumulator_merge_lag_seconds", register="hw") == 0
            ),
            within=10,
            what="merge lag back to 0",
        )
        assert metric(resumed.port, "accumulator_merged_rows_total", register="hw") == waiting
        assert resumed.stop() == 0
        assert_consistent(conn, "hw", ledger)


def test_verify_status_follows_a_corruption_and_its_repair(db_dsn: str, in_process: list[InProcess]) -> None:
    ledger = Ledger()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "hw")
        create(conn, "plain", high_write=False)
        ledger.post(conn, "plain", 30)
        Ledger().post(conn, "hw", 30)
        c = InProcess(settings(db_dsn, verify_interval_ms=200, metrics_port=free_port()))
        in_process.append(c)
        wait_until(
            lambda: (
                metric(c.port, "accumulator_verify_status", register="plain") == 1
                and metric(c.port, "accumulator_verify_status", register="hw") == 1
            ),
            within=10,
            what="both registers verified clean",
        )
        assert http_get(c.port, "/readyz")[0] == 200
        assert http_get(c.port, "/healthz")[0] == 200
        assert metric(c.port, "accumulator_leader", role="leader") == 1
        assert metric(c.port, "accumulator_leader", role="standby") == 0
        assert (metric(c.port, "accumulator_verify_last_run_timestamp_seconds", register="plain") or 0) > (
            time.time() - 60
        )

        corrupt_cache(conn, "plain")
        wait_until(
            lambda: metric(c.port, "accumulator_verify_status", register="plain") == 0,
            within=10,
            what="verify status 0 after the corruption",
        )
        assert metric(c.port, "accumulator_verify_mismatches", register="plain") == 1
        assert metric(c.port, "accumulator_verify_status", register="hw") == 1

        conn.execute("SELECT accum.register_rebuild_cache('plain')")
        wait_until(
            lambda: metric(c.port, "accumulator_verify_status", register="plain") == 1,
            within=10,
            what="verify status back to 1 after the rebuild",
        )
        assert metric(c.port, "accumulator_verify_mismatches", register="plain") == 0
        assert metric(c.port, "accumulator_maintenance_errors_total", task="verify") == 0
        assert c.stop() == 0
        assert_consistent(conn, "plain", ledger)


def test_a_timed_out_verify_keeps_the_last_status_and_a_stop_cancels_a_long_one(
    db_dsn: str, in_process: list[InProcess]
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn, psycopg.connect(db_dsn) as blocker:
        create(conn, "plain", high_write=False)
        Ledger().post(conn, "plain", 30)
        quick = InProcess(
            settings(db_dsn, verify_interval_ms=100, verify_timeout_ms=300, metrics_port=free_port())
        )
        in_process.append(quick)
        wait_until(
            lambda: quick.value("accumulator_verify_status", register="plain") == 1,
            within=10,
            what="verified clean",
        )
        corrupt_cache(conn, "plain")
        # Verify reads the cache: a transaction holding it locked makes verify wait past its timeout (and
        # nothing else the compactor does: partitions lock the movements).
        blocker.execute("LOCK TABLE accum.plain_balance_cache IN ACCESS EXCLUSIVE MODE")
        last_run = quick.value("accumulator_verify_last_run_timestamp_seconds", register="plain")
        wait_until(
            lambda: (quick.value("accumulator_maintenance_errors_total", task="verify") or 0) >= 2,
            within=10,
            what="timed-out verifies counted",
        )
        assert quick.value("accumulator_verify_status", register="plain") == 1  # the last finished verify
        assert quick.value("accumulator_verify_last_run_timestamp_seconds", register="plain") == last_run
        assert quick.stop() == 0

        slow = InProcess(settings(db_dsn, verify_interval_ms=100, verify_timeout_ms=600_000))
        in_process.append(slow)

        def verify_waiting() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'accumulator-compact-verify'"
                " AND wait_event_type = 'Lock'"
            ).fetchone()
            return row is not None and row[0] == 1

        wait_until(verify_waiting, within=10, what="a verify waiting on the lock")
        started = time.monotonic()
        assert slow.stop() == 0
        assert time.monotonic() - started < 5, "the verify was not cancelled"
        assert slow.value("accumulator_maintenance_errors_total", task="verify") == 0  # cancelled, not failed
        blocker.rollback()
        assert serve(settings(db_dsn, verify_interval_ms=1), threading.Event(), once=True) == 3


def test_registers_created_and_dropped_while_running_are_picked_up(
    db_dsn: str, in_process: list[InProcess]
) -> None:
    c = InProcess(settings(dsn_as(db_dsn, "t_writer"), metrics_port=free_port()))
    in_process.append(c)
    wait_until(lambda: metric(c.port, "accumulator_leader", role="leader") == 1, within=10, what="leading")
    ledger = Ledger()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "late")  # after the compactor started
        ledger.post(conn, "late", 120)
        wait_until(lambda: pending(conn, "late") == 0, within=10, what="late register merged")
        wait_until(
            lambda: metric(c.port, "accumulator_merged_rows_total", register="late") == 120,
            within=10,
            what="late register counted",
        )
        assert_consistent(conn, "late", ledger)

        conn.execute("SELECT accum.register_drop('late', force := true)")
        wait_until(lambda: not has_series_of(c.port, "late"), within=10, what="dropped register forgotten")
    assert c.stop() == 0


def test_task_errors_are_counted_and_the_loop_goes_on(
    db_dsn: str, pg_roles: object, in_process: list[InProcess]
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "hw")
        Ledger().post(conn, "hw", 10)
    # A reader may not merge, create partitions or purge: every write task fails, every cycle.
    c = InProcess(settings(dsn_as(db_dsn, "t_reader"), metrics_port=free_port()))
    in_process.append(c)
    wait_until(
        lambda: (metric(c.port, "accumulator_maintenance_errors_total", task="merge") or 0) >= 3,
        within=10,
        what="merge errors counted cycle after cycle",
    )
    assert (metric(c.port, "accumulator_maintenance_errors_total", task="partitions") or 0) >= 1
    assert (metric(c.port, "accumulator_maintenance_errors_total", task="purge") or 0) >= 1
    assert metric(c.port, "accumulator_leader", role="leader") == 1
    assert http_get(c.port, "/healthz")[0] == 200
    assert http_get(c.port, "/readyz")[0] == 200
    assert c.stop() == 0


# --- processes: leader election, kill -9, SIGTERM -----------------------------------------------------------


def test_standby_takes_over_when_the_leader_is_killed_mid_merge(
    db_dsn: str, tmp_path: Path, procs: list[Proc]
) -> None:
    small = {"ACCUMULATOR_MERGE_BATCH": "20"}
    first = start_proc(procs, db_dsn, tmp_path, **small)
    wait_until(first.leads, within=20, what="first compactor leads")
    second = start_proc(procs, db_dsn, tmp_path, **small)
    wait_until(
        lambda: second.stands_by() and http_get(second.port, "/readyz")[0] == 200,
        within=20,
        what="second compactor ready as a standby",
    )
    ledger = Ledger()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create(conn, "hw")
        for _ in range(4):
            ledger.post(conn, "hw", 5000)
        total = 20_000
        wait_until(lambda: 0 < pending(conn, "hw") < total - 400, within=20, what="leader merging")
        first.signal(signal.SIGKILL)  # mid-merge: its open transaction dies with its backend
        first.wait(10)
        left = pending(conn, "hw")
        assert left > 0, "the leader finished before the kill: nothing left to prove"
        wait_until(second.leads, within=10, what="standby took over")
        assert first.proc.returncode == -signal.SIGKILL
        wait_until(lambda: pending(conn, "hw") == 0, within=30, what="standby merged the rest")
        wait_until(
            lambda: (second.metric("accumulator_merged_rows_total", register="hw") or 0) >= left,
            within=10,
            what="standby counted its merges",
        )
        assert_consistent(conn, "hw", ledger)


def test_sigterm_stops_promptly_and_a_standby_takes_over(
    db_dsn: str, tmp_path: Path, procs: list[Proc]
) -> None:
    # Leader poll of 5 s for the standby to notice would be too slow for the test; 200 ms as elsewhere.
    first = start_proc(procs, db_dsn, tmp_path)
    wait_until(first.leads, within=20, what="first compactor leads")
    second = start_proc(procs, db_dsn, tmp_path)
    wait_until(second.stands_by, within=20, what="second compactor stands by")
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0, first.log()
    assert time.monotonic() - started < 5
    assert "leadership released" in first.log()
    wait_until(second.leads, within=5, what="standby took over")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        ledger = Ledger()
        create(conn, "hw")
        ledger.post(conn, "hw", 100)
        wait_until(lambda: pending(conn, "hw") == 0, within=10, what="new leader merges")
        assert_consistent(conn, "hw", ledger)
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0, second.log()


# --- crash safety -------------------------------------------------------------------------------------------


@pytest.fixture
def durable_postgres() -> Iterator[LocalPostgres]:
    """A durable cluster (fsync on) of this test's own: an immediate stop is a real crash, for nobody else."""
    with LocalPostgres(durable=True) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn)
        yield server


def test_postgres_crash_mid_merge_loses_and_doubles_nothing(
    durable_postgres: LocalPostgres, in_process: list[InProcess]
) -> None:
    dsn = durable_postgres.dsn
    ledger = Ledger()
    with psycopg.connect(dsn, autocommit=True) as conn:
        create(conn, "hw")
        for _ in range(4):
            ledger.post(conn, "hw", 5000)
    total = 20_000
    c = InProcess(settings(dsn, merge_batch=40))
    in_process.append(c)

    def waiting() -> int:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            return pending(conn, "hw")

    wait_until(lambda: 0 < waiting() < total - 400, within=20, what="compactor merging")
    durable_postgres.kill_immediate()  # deltas pending, a merge in flight
    wait_until(lambda: not c.leads(), within=10, what="leadership lost with the connection")
    durable_postgres.start_again()  # crash recovery
    wait_until(c.leads, within=20, what="compactor leads again by itself")
    with psycopg.connect(dsn, autocommit=True) as conn:
        ledger.post(conn, "hw", 500)  # and goes on with new writes
        wait_until(lambda: pending(conn, "hw") == 0, within=30, what="everything merged after the crash")
        assert_consistent(conn, "hw", ledger)
    assert (c.value("accumulator_maintenance_errors_total", task="merge") or 0) >= 1
    assert c.stop() == 0
