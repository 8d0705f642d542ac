"""merge: delta rows folded per second by register_merge, after high-write batch posts fill the buffer."""

from __future__ import annotations

import time

from bench.context import Bench
from bench.fixtures import create_register, post
from bench.report import Result, Target
from bench.scenarios.writes import WriteSetup
from bench.workload import Workload

__all__ = ["merge"]

REG = "bm"
BATCH = 1000
MAX_ROWS = 10_000


def merge(b: Bench) -> list[Result]:
    create_register(b.conn, REG, high_write=True)
    ws = WriteSetup(REG, "", Workload(b.shape, stream=30))
    posted, post_s = 0, 0.0
    while posted < b.plan.merge_movements:
        batch = ws.batch("m", min(BATCH, b.plan.merge_movements - posted))
        started = time.perf_counter()
        post(b.conn, REG, batch)
        post_s += time.perf_counter() - started
        posted += len(batch)
    pending = int(b.scalar(f"SELECT count(*) FROM accum.{REG}_delta"))
    b.conn.execute(f"VACUUM ANALYZE accum.{REG}_delta".encode())
    merged, calls, merge_s = 0, 0, 0.0
    while True:
        started = time.perf_counter()
        n = int(b.scalar("SELECT accum.register_merge(%s, %s)", (REG, MAX_ROWS)))
        merge_s += time.perf_counter() - started
        calls += 1
        merged += n
        if n == 0:
            break
    problems = int(b.scalar("SELECT count(*) FROM accum.register_verify(%s, true)", (REG,)))
    details = {
        "movements": posted,
        "delta_rows": pending,
        "merged": merged,
        "calls": calls,
        "seconds": merge_s,
    }
    return [
        Result(
            "merge",
            f"delta rows/s ({MAX_ROWS:,}/call)",
            merged / merge_s,
            "/s",
            details=details,
            note=f"{pending:,} delta rows from {posted:,} movements",
        ),
        Result(
            "merge",
            f"high_write post {BATCH}/call movements/s",
            posted / post_s,
            "/s",
            note="info: the posts that filled the buffer",
        ),
        Result(
            "merge",
            "verify problems after merge",
            problems,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
        ),
    ]
