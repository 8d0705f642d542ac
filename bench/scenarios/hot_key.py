"""hot_key: N clients posting single movements to ONE combination, standard register vs high_write.

Each client is a thread with its own connection, each post a new recorder (so only the derived rows of the
one combination are contended). The high_write run has a merger thread calling register_merge every 200 ms,
as the compactor would. Rounds alternate std, hw, std, hw. At the end the balance must equal what the
clients posted, verify must be clean, and no call may have died in a deadlock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from bench.context import Bench
from bench.fixtures import create_register
from bench.report import Result, Target, ratio

__all__ = ["hot_key"]

STD, HW = "hk_std", "hk_hw"
KEY = {"warehouse": 1, "product": 1}
QTY, AMOUNT = Decimal("1.000"), Decimal("0.01")
MERGE_EVERY_S = 0.2
DEADLOCK = "40P01"


@dataclass
class Tally:
    posts: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    merges: int = 0
    merged_rows: int = 0


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


def _merger(b: Bench, reg: str, stop: threading.Event, tally: Tally, lock: threading.Lock) -> None:
    with b.connect() as conn:
        while not stop.wait(MERGE_EVERY_S):
            try:
                row = conn.execute("SELECT accum.register_merge(%s)", (reg,)).fetchone()
                with lock:
                    tally.merges += 1
                    tally.merged_rows += int(row[0]) if row else 0
            except psycopg.Error as exc:
                with lock:
                    tally.errors[f"merge:{exc.sqlstate}"] += 1


def _run(b: Bench, reg: str, seconds: float, tally: Tally, clients: int) -> None:
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_client, args=(b, reg, i, start, stop, tally, lock)) for i in range(clients)
    ]
    if reg == HW:
        threads.append(threading.Thread(target=_merger, args=(b, reg, stop, tally, lock)))
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


def hot_key(b: Bench) -> list[Result]:
    create_register(b.conn, STD)
    create_register(b.conn, HW, high_write=True)
    clients = b.plan.hot_key_clients
    tallies = {STD: Tally(), HW: Tally()}
    # one client alone, same registers: how far N clients scale tells contention from a CPU-bound host
    solo = {STD: Tally(), HW: Tally()}
    per_round = b.plan.hot_key_seconds / 2
    for order in ((STD, HW), (HW, STD)):
        for reg in order:
            _run(b, reg, per_round, tallies[reg], clients)
            _run(b, reg, per_round / 4, solo[reg], 1)
            b.log(f"hot_key: {reg} {tallies[reg].posts:,} posts so far ({clients} clients)")
    while int(b.scalar("SELECT accum.register_merge(%s, 100000)", (HW,))) > 0:
        pass  # drain what the merger left, so verify compares merged totals too
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
    std, hw = (tallies[r].posts / tallies[r].seconds for r in (STD, HW))
    std1, hw1 = (solo[r].posts / solo[r].seconds for r in (STD, HW))
    deadlocks = sum(t.errors[DEADLOCK] for t in (*tallies.values(), *solo.values()))
    details = {
        reg: {
            "posts": t.posts,
            "seconds": t.seconds,
            "errors": dict(t.errors),
            "merges": t.merges,
            "merged_rows": t.merged_rows,
            "one_client": {
                "posts": solo[reg].posts,
                "seconds": solo[reg].seconds,
                "errors": dict(solo[reg].errors),
            },
        }
        for reg, t in tallies.items()
    }
    return [
        Result(
            "hot_key",
            f"{clients} clients high_write posts/s",
            hw,
            "/s",
            std,
            "standard register",
            ratio(hw, std),
            Target(">=", 5.0, label=">= 5x standard"),
            details=details,
        ),
        Result(
            "hot_key", "1 client high_write posts/s", hw1, "/s", std1, "1 client standard", ratio(hw1, std1)
        ),
        Result(
            "hot_key",
            f"standard {clients} clients / 1 client",
            std / std1,
            "x",
            note="scaling; ~1 means the clients queue (on a lock or for CPU)",
        ),
        Result("hot_key", f"high_write {clients} clients / 1 client", hw / hw1, "x"),
        Result(
            "hot_key",
            "deadlocks",
            deadlocks,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details={reg: dict(t.errors + solo[reg].errors) for reg, t in tallies.items()},
        ),
        Result(
            "hot_key",
            "registers with wrong balance or verify",
            wrong,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details=checks,
        ),
    ]
