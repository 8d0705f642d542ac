"""round_trip: the ``SELECT 1`` baseline every latency figure sits on (SPEC §21 measures it first)."""

from __future__ import annotations

from bench.context import Bench
from bench.report import Result
from bench.stats import summarize
from bench.timing import interleave

__all__ = ["round_trip"]


def round_trip(b: Bench) -> list[Result]:
    conn = b.conn
    s = interleave(
        {"select1": lambda i: conn.execute("SELECT 1").fetchone()},
        rounds=b.plan.rounds,
        per_round=b.plan.read_per_round,
    )
    one = summarize(s["select1"])
    return [
        Result(
            "round_trip",
            "SELECT 1 p50",
            one.p50_ms,
            "ms",
            note=f"p99 {one.p99_ms:.3f} ms",
            details={"select1": one.as_dict()},
        )
    ]
