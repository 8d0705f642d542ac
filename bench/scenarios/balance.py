"""balance_current: ``bw_balance(full key)`` against a point SELECT from a plain balance table, same key."""

from __future__ import annotations

import json

from bench.context import Bench
from bench.fixtures import create_plain_balance, q
from bench.report import Result, Target, ratio
from bench.scenarios.writes import write_setup
from bench.stats import summarize
from bench.timing import interleave

__all__ = ["balance_current"]

PLAIN_BALANCE = "pw_balance"


def balance_current(b: Bench) -> list[Result]:
    ws = write_setup(b)
    conn = b.conn
    reg = ws.register
    # the plain table holds what the cache holds: one row per combination with its balance
    create_plain_balance(conn, PLAIN_BALANCE)
    conn.execute(
        q(
            f"INSERT INTO bench.{PLAIN_BALANCE} SELECT warehouse, product, quantity, amount "
            f"FROM accum.{reg}_balance_cache"
        )
    )
    conn.execute(q(f"ANALYZE bench.{PLAIN_BALANCE}"))
    conn.execute(q(f"VACUUM ANALYZE accum.{reg}_balance_cache"))
    keys = ws.gen.sample_keys(200)
    filters = [json.dumps({"warehouse": w, "product": p}) for w, p in keys]
    engine_q = q(f"SELECT accum.{reg}_balance(%s::jsonb)")
    plain_q = q(f"SELECT quantity, amount FROM bench.{PLAIN_BALANCE} WHERE warehouse = %s AND product = %s")
    cache_q = q(
        f"SELECT quantity, amount FROM accum.{reg}_balance_cache WHERE warehouse = %s AND product = %s"
    )
    s = interleave(
        {
            "engine": lambda i: conn.execute(engine_q, (filters[i % len(filters)],)).fetchone(),
            "plain": lambda i: conn.execute(plain_q, keys[i % len(keys)]).fetchone(),
            "cache_select": lambda i: conn.execute(cache_q, keys[i % len(keys)]).fetchone(),
        },
        rounds=b.plan.rounds,
        per_round=b.plan.read_per_round,
    )
    e, p, c = summarize(s["engine"]), summarize(s["plain"]), summarize(s["cache_select"])
    details = {"engine": e.as_dict(), "plain": p.as_dict(), "cache_select": c.as_dict()}
    return [
        Result(
            "balance_current",
            f"p50 {reg}_balance(full key)",
            e.p50_ms,
            "ms",
            p.p50_ms,
            "plain point SELECT",
            ratio(e.p50_ms, p.p50_ms),
            Target("<=", 3.0, label="<= 3x plain point SELECT"),
            details=details,
        ),
        Result(
            "balance_current",
            "p50 SELECT from balance_cache",
            c.p50_ms,
            "ms",
            p.p50_ms,
            "plain point SELECT",
            ratio(c.p50_ms, p.p50_ms),
        ),
    ]
