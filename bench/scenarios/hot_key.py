"""hot_key: N clients posting single movements to ONE combination, standard register vs high_write.

Each client is a thread with its own connection, each post a new recorder (so only the derived rows of the
one combination are contended). The real compaction sidecar (`accumulator compact`, merging every 200 ms with
no delay) runs throughout, as in production. After each high_write round the balance is read while deltas
are still pending and must equal what the clients posted so far. Rounds alternate std, hw, std, hw. At the
end the balance must equal what the clients posted, verify must be clean, and no call may have died in a
deadlock. During the N-client runs a
sampler reads ``pg_stat_activity`` every 10 ms: where the posting backends are (row lock, WAL, CPU, client).

Two variants. ``hot_key`` runs on the suite's server, by default the non-durable local cluster: there both
registers are CPU-bound, so its figures are informative. ``hot_key_durable`` runs where commits wait for their
WAL flush (PostgreSQL's defaults, as in production): a standard-register writer keeps its row locks on the
hot totals/cache rows until that flush, so hot-key writers queue on commit latency, which high_write removes
(writers only append to the delta buffer). The SPEC §21 hot-key target (>= 5x, 0 deadlocks) is on that one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

import psycopg

from bench.context import Bench
from bench.db import connect, database, is_durable, server, with_session_settings
from bench.fixtures import create_register
from bench.report import Result, Target, ratio
from bench.waits import CPU, profile, share

__all__ = ["hot_key", "hot_key_durable"]

KEY = {"warehouse": 1, "product": 1}
QTY, AMOUNT = Decimal("1.000"), Decimal("0.01")
MERGE_EVERY_S = 0.2
SAMPLE_EVERY_S = 0.01
RESULTS_DIR: Final = Path(__file__).resolve().parents[1] / "results"
DEADLOCK = "40P01"
POSTER = "bench_hot_key_post"  # application_name of the posting sessions, what the sampler looks for
# Per session, so a --dsn server commits durably here whatever its own default (fsync is server-wide).
DURABLE_SESSION: Final = {"synchronous_commit": "on"}
_SAMPLE = f"""
SELECT CASE WHEN wait_event IS NOT NULL THEN wait_event_type || ':' || wait_event
            WHEN state = 'active' THEN '{CPU}' ELSE coalesce(state, 'gone') END
FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()
""".encode()


@dataclass(frozen=True)
class Variant:
    scenario: str
    std: str  # register names (distinct per variant: with --dsn both run in the same database)
    hw: str
    targeted: bool  # the SPEC §21 ratio target is on this variant's figure
    where: str = ""  # how durability was obtained, for the notes


NON_DURABLE = Variant("hot_key", "hk_std", "hk_hw", targeted=False)
DURABLE = Variant("hot_key_durable", "hkd_std", "hkd_hw", targeted=True)


@dataclass
class Tally:
    posts: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    waits: Counter[str] = field(default_factory=Counter)  # pg_stat_activity samples of the posting sessions


def _client(
    b: Bench,
    reg: str,
    client: int,
    start: threading.Barrier,
    stop: threading.Event,
    tally: Tally,
    lock: threading.Lock,
) -> None:
    period = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {**KEY, "period": period, "quantity": str(QTY), "amount": str(AMOUNT)}
    posts = 0
    errors: Counter[str] = Counter()
    with b.connect() as conn:
        conn.execute("SELECT set_config('application_name', %s, false)", (POSTER,))
        start.wait()
        n = 0
        while not stop.is_set():
            n += 1
            data = json.dumps({**body, "recorder": f"{reg}:{client}:{n}:{time.monotonic_ns()}"})
            try:
                conn.execute("SELECT accum.register_post(%s, %s::jsonb)", (reg, data)).fetchone()
                posts += 1
            except psycopg.Error as exc:  # counted, never fatal: a deadlock here is the finding
                errors[exc.sqlstate or type(exc).__name__] += 1
    with lock:
        tally.posts += posts
        tally.errors.update(errors)


@contextlib.contextmanager
def _compactor(b: Bench, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`accumulator compact` on the bench database: merges every MERGE_EVERY_S, no delay, no verify."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    env.update(
        {
            "ACCUMULATOR_DSN": b.dsn,
            "ACCUMULATOR_MERGE_INTERVAL_MS": str(int(MERGE_EVERY_S * 1000)),
            "ACCUMULATOR_MERGE_DELAY_MS": "0",
            "ACCUMULATOR_VERIFY_INTERVAL_MS": "0",
            "ACCUMULATOR_LEADER_POLL_MS": "200",
            "ACCUMULATOR_METRICS_PORT": "0",
        }
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "compact"], env=env, stdout=log, stderr=log
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _pending(b: Bench, reg: str) -> int:
    return int(b.scalar("SELECT coalesce(sum(pending_rows), 0) FROM accum.register_delta_status(%s)", (reg,)))


def _sampler(
    b: Bench, start: threading.Barrier, stop: threading.Event, tally: Tally, lock: threading.Lock
) -> None:
    seen: Counter[str] = Counter()
    with b.connect() as conn:
        start.wait()
        while not stop.wait(SAMPLE_EVERY_S):
            seen.update(str(row[0]) for row in conn.execute(_SAMPLE, (POSTER,)))
    with lock:
        tally.waits.update(seen)


def _run(b: Bench, reg: str, seconds: float, tally: Tally, clients: int, *, sample: bool) -> None:
    start = threading.Barrier(clients + 1 + (1 if sample else 0))
    stop = threading.Event()
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_client, args=(b, reg, i, start, stop, tally, lock)) for i in range(clients)
    ]
    if sample:
        threads.append(threading.Thread(target=_sampler, args=(b, start, stop, tally, lock)))
    for t in threads:
        t.start()
    start.wait()  # every client connected: the window starts now
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    tally.seconds += time.perf_counter() - began


def _exact_balance(b: Bench, reg: str) -> tuple[Decimal, Decimal]:
    text = b.scalar(f"SELECT accum.{reg}_balance(%s::jsonb)::text", (json.dumps(KEY),))
    got = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    return Decimal(got["quantity"]), Decimal(got["amount"])


def _session(b: Bench) -> tuple[str, str]:
    fsync = str(b.scalar("SELECT current_setting('fsync')"))
    return fsync, str(b.scalar("SELECT current_setting('synchronous_commit')"))


def _compare(b: Bench, v: Variant) -> list[Result]:
    name, std_reg, hw_reg = v.scenario, v.std, v.hw
    create_register(b.conn, std_reg)
    create_register(b.conn, hw_reg, high_write=True)
    fsync, sync_commit = _session(b)
    label = "durable" if is_durable(fsync, sync_commit) else "non-durable"
    settings = f"{label}: fsync={fsync}, synchronous_commit={sync_commit}"
    settings += f"; {v.where}" if v.where else ""
    b.log(f"{name}: {settings}")
    clients = b.plan.hot_key_clients
    tallies = {std_reg: Tally(), hw_reg: Tally()}
    # one client alone, same registers: how far N clients scale tells contention from a CPU-bound host
    solo = {std_reg: Tally(), hw_reg: Tally()}
    per_round = b.plan.hot_key_seconds / 2
    pending_reads: list[
        dict[str, object]
    ] = []  # balance reads of the high_write register with deltas pending
    log_path = RESULTS_DIR / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-compactor.log"
    with _compactor(b, log_path) as compactor:
        for order in ((std_reg, hw_reg), (hw_reg, std_reg)):
            for reg in order:
                _run(b, reg, per_round, tallies[reg], clients, sample=True)
                _run(b, reg, per_round / 4, solo[reg], 1, sample=False)
                b.log(f"{name}: {reg} {tallies[reg].posts:,} posts so far ({clients} clients)")
                if reg == hw_reg:
                    pending = _pending(b, reg)
                    qty, amount = _exact_balance(b, reg)
                    posts = tallies[reg].posts + solo[reg].posts
                    pending_reads.append(
                        {
                            "pending_rows": pending,
                            "posts": posts,
                            "exact": (qty, amount) == (QTY * posts, AMOUNT * posts),
                        }
                    )
        compactor_alive = compactor.poll() is None
    while int(b.scalar("SELECT accum.register_merge(%s, 100000)", (hw_reg,))) > 0:
        pass  # drain what the compactor left, so verify compares merged totals too
    wrong = 0
    checks: dict[str, object] = {}
    for reg, t in tallies.items():
        qty, amount = _exact_balance(b, reg)
        problems = int(b.scalar("SELECT count(*) FROM accum.register_verify(%s, true)", (reg,)))
        posts = t.posts + solo[reg].posts
        exact = qty == QTY * posts and amount == AMOUNT * posts and problems == 0
        wrong += 0 if exact else 1
        checks[reg] = {
            "posts": posts,
            "quantity": str(qty),
            "amount": str(amount),
            "verify_problems": problems,
        }
    std, hw = (tallies[r].posts / tallies[r].seconds for r in (std_reg, hw_reg))
    std1, hw1 = (solo[r].posts / solo[r].seconds for r in (std_reg, hw_reg))
    deadlocks = sum(t.errors[DEADLOCK] for t in (*tallies.values(), *solo.values()))
    for reg, kind in ((std_reg, "standard"), (hw_reg, "high_write")):
        b.log(f"{name}: {kind} posting sessions ({clients} clients): {profile(tallies[reg].waits)}")
    details = {
        reg: {
            "posts": t.posts,
            "seconds": t.seconds,
            "errors": dict(t.errors),
            "waits": dict(t.waits.most_common()),
            "one_client": {
                "posts": solo[reg].posts,
                "seconds": solo[reg].seconds,
                "errors": dict(solo[reg].errors),
            },
        }
        for reg, t in tallies.items()
    }
    target = Target(">=", 5.0, label=">= 5x standard") if v.targeted else None
    inexact_pending = sum(1 for r in pending_reads if not r["exact"])
    return [
        Result(
            name,
            f"{clients} clients high_write posts/s ({label})",
            hw,
            "/s",
            std,
            "standard register",
            ratio(hw, std),
            target,
            note=settings if v.targeted else f"info ({settings}); the SPEC §21 target is on hot_key_durable",
            details={"settings": {"fsync": fsync, "synchronous_commit": sync_commit}, **details},
        ),
        Result(
            name,
            f"1 client high_write posts/s ({label})",
            hw1,
            "/s",
            std1,
            "1 client standard",
            ratio(hw1, std1),
        ),
        Result(
            name,
            f"standard {clients} clients / 1 client",
            std / std1,
            "x",
            note="scaling; ~1 means the clients queue (on a lock or for CPU)",
        ),
        Result(name, f"high_write {clients} clients / 1 client", hw / hw1, "x"),
        *(
            Result(
                name,
                f"{kind} {clients} clients: posting sessions on a row lock",
                share(tallies[reg].waits, "Lock:"),
                "%",
                note=profile(tallies[reg].waits),
                details=dict(tallies[reg].waits.most_common()),
            )
            for reg, kind in ((std_reg, "standard"), (hw_reg, "high_write"))
        ),
        Result(
            name,
            "deadlocks",
            deadlocks,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details={reg: dict(t.errors + solo[reg].errors) for reg, t in tallies.items()},
        ),
        Result(
            name,
            "high_write balance reads with deltas pending that were not exact",
            inexact_pending,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            note=f"{len(pending_reads)} reads, pending delta rows at each: "
            + ", ".join(str(r["pending_rows"]) for r in pending_reads)
            + ("" if compactor_alive else "; THE COMPACTOR DIED (see its log)"),
            details={"reads": pending_reads, "compactor_log": str(log_path)},
        ),
        Result(
            name,
            "registers with wrong balance or verify",
            wrong,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details=checks,
        ),
    ]


def hot_key(b: Bench) -> list[Result]:
    """On the suite's server as it is (the default local cluster is non-durable): informative figures."""
    return _compare(b, NON_DURABLE)


@contextlib.contextmanager
def _durable_bench(b: Bench) -> Iterator[Bench]:
    """A Bench whose sessions commit durably: a throwaway durable local cluster with its own migrated
    database, stopped at exit; or, with --dsn, the suite's database with synchronous_commit=on per session."""
    if b.external_server:
        dsn = with_session_settings(b.dsn, DURABLE_SESSION)
        with connect(dsn) as conn:
            yield replace(b, dsn=dsn, conn=conn, state={})
        return
    b.log("hot_key_durable: starting a durable local cluster (fsync, synchronous_commit, full_page_writes)")
    with (
        server(None, keep=b.keep, durable=True) as admin_dsn,
        database(admin_dsn, keep=b.keep) as dsn,
        connect(dsn) as conn,
    ):
        yield replace(b, dsn=dsn, conn=conn, state={})


def hot_key_durable(b: Bench) -> list[Result]:
    """Where commits wait for their WAL flush: the run the SPEC §21 hot-key target is about."""
    where = "own durable cluster"
    if b.external_server:
        where = "--dsn server, synchronous_commit=on set per session"
    with _durable_bench(b) as db:
        return _compare(db, replace(DURABLE, where=where))
