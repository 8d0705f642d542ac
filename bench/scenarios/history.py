"""The history load and what needs it: balance_historical, turnover_month, bytes_per_movement, verify.

Register ``bh`` receives ``load_movements`` in period order over four years (documents of ten lines,
register_post calls of ``load_batch``). At 1/8, 1/4, 1/2 and all of the load, reads are timed against plain
tables holding the same data, so growth with history shows as a ratio (SPEC §5.4: read cost must not grow
with history). The plain twins: ``bench.ph`` (movements: same columns and indexes), ``bench.ph_month``
(monthly totals per combination), ``bench.ph_balance`` (current balance per combination).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.context import Bench
from bench.fixtures import (
    create_plain_balance,
    create_plain_month,
    create_plain_movements,
    create_register,
    engine_bytes,
    ensure_history_partitions,
    post,
    q,
    relation_bytes,
)
from bench.plan import FULL_LOAD
from bench.report import Result, Target, ratio
from bench.stats import Summary, summarize
from bench.timing import interleave
from bench.workload import Movement, Workload

__all__ = ["HISTORY_SCENARIOS", "history"]

HISTORY_SCENARIOS = ("balance_historical", "turnover_month", "bytes_per_movement", "verify")
REG = "bh"
PLAIN, MONTH, BALANCE = "ph", "ph_month", "ph_balance"
START = datetime(2022, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
STAGES = ((1, 8), (1, 4), (1, 2), (1, 1))
KEYS = 200
CHECKED_KEYS = 20


@dataclass
class Stage:
    label: str
    movements: int
    at_date: datetime
    month: datetime
    figures: dict[str, Summary] = field(default_factory=dict)


def _setup(b: Bench) -> None:
    create_register(b.conn, REG)
    created = ensure_history_partitions(b, REG, START, END)
    b.log(f"history: register {REG} with {created} back-dated partitions")
    create_plain_movements(b.conn, PLAIN, REG)
    create_plain_month(b.conn, MONTH)
    create_plain_balance(b.conn, BALANCE)


def _mirror(b: Bench, after_id: int) -> int:
    """Copy the movements loaded since ``after_id`` into the plain tables (same rows, same order)."""
    c = b.conn
    c.execute(
        q(
            f"INSERT INTO bench.{PLAIN} (recorder, period, warehouse, product, quantity, amount) "
            f"SELECT recorder, period, warehouse, product, quantity, amount FROM accum.{REG}_movements "
            "WHERE id > %s ORDER BY id"
        ),
        (after_id,),
    )
    c.execute(
        q(
            f"INSERT INTO bench.{MONTH} AS t SELECT warehouse, product, "
            "date_trunc('month', period AT TIME ZONE 'UTC')::date, sum(quantity), sum(amount) "
            f"FROM accum.{REG}_movements WHERE id > %s GROUP BY 1, 2, 3 "
            "ON CONFLICT (warehouse, product, month) DO UPDATE "
            "SET quantity = t.quantity + EXCLUDED.quantity, "
            "amount = t.amount + EXCLUDED.amount"
        ),
        (after_id,),
    )
    c.execute(
        q(
            f"INSERT INTO bench.{BALANCE} AS t SELECT warehouse, product, sum(quantity), sum(amount) "
            f"FROM accum.{REG}_movements WHERE id > %s GROUP BY 1, 2 "
            "ON CONFLICT (warehouse, product) DO UPDATE SET quantity = t.quantity + EXCLUDED.quantity, "
            "amount = t.amount + EXCLUDED.amount"
        ),
        (after_id,),
    )
    last = b.scalar(f"SELECT coalesce(max(id), 0) FROM accum.{REG}_movements")
    # steady state for every table alike: visibility maps set, statistics fresh
    c.execute(
        q(
            f"VACUUM ANALYZE accum.{REG}_movements, accum.{REG}_totals_day, accum.{REG}_totals_month, "
            f"accum.{REG}_totals_year, accum.{REG}_balance_cache, bench.{PLAIN}, bench.{MONTH}, "
            f"bench.{BALANCE}"
        )
    )
    return int(last)


def _month_before(ts: datetime) -> datetime:
    first = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=1)


def _next_month(m: datetime) -> datetime:
    return (m + timedelta(days=32)).replace(day=1)


def _measure(b: Bench, st: Stage, keys: list[tuple[int, int]]) -> None:
    conn = b.conn
    filters = [json.dumps({"warehouse": w, "product": p}) for w, p in keys]
    at = st.at_date.isoformat()
    m_from = st.month.isoformat()
    m_to = (_next_month(st.month) - timedelta(microseconds=1)).isoformat()
    m_day = st.month.date()
    hist_q = q(f"SELECT accum.{REG}_balance(%s::jsonb, %s::timestamptz)")
    bal_q = q(f"SELECT quantity, amount FROM bench.{BALANCE} WHERE warehouse = %s AND product = %s")
    turn_q = q(f"SELECT * FROM accum.{REG}_turnover(%s::timestamptz, %s::timestamptz, %s::jsonb)")
    month_q = q(
        f"SELECT quantity, amount FROM bench.{MONTH} WHERE warehouse = %s AND product = %s AND month = %s"
    )
    turn_all_q = q(f"SELECT * FROM accum.{REG}_turnover(%s::timestamptz, %s::timestamptz)")
    month_all_q = q(f"SELECT sum(quantity), sum(amount) FROM bench.{MONTH} WHERE month = %s")
    n = len(keys)
    s = interleave(
        {
            "hist_engine": lambda i: conn.execute(hist_q, (filters[i % n], at)).fetchone(),
            "hist_plain": lambda i: conn.execute(bal_q, keys[i % n]).fetchone(),
            "turn_engine": lambda i: conn.execute(turn_q, (m_from, m_to, filters[i % n])).fetchall(),
            "turn_plain": lambda i: conn.execute(month_q, (*keys[i % n], m_day)).fetchone(),
            "turn_all_engine": lambda i: conn.execute(turn_all_q, (m_from, m_to)).fetchall(),
            "turn_all_plain": lambda i: conn.execute(month_all_q, (m_day,)).fetchone(),
        },
        rounds=b.plan.rounds,
        per_round=max(10, b.plan.read_per_round // 2),
    )
    st.figures = {k: summarize(v) for k, v in s.items()}


def _exact(text: str) -> dict[str, Decimal]:
    parsed: dict[str, Decimal] = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    return parsed


def _check_reads(b: Bench, st: Stage, keys: list[tuple[int, int]]) -> int:
    """Engine reads against sums over the plain movements: a benchmark of wrong answers is worthless."""
    bad = 0
    m_to = _next_month(st.month) - timedelta(microseconds=1)
    for w, p in keys[:CHECKED_KEYS]:
        f = json.dumps({"warehouse": w, "product": p})
        got = _exact(b.scalar(f"SELECT accum.{REG}_balance(%s::jsonb, %s)::text", (f, st.at_date)))
        want = b.conn.execute(
            q(
                f"SELECT coalesce(sum(quantity), 0), coalesce(sum(amount), 0) FROM bench.{PLAIN} "
                "WHERE warehouse = %s AND product = %s AND period <= %s"
            ),
            (w, p, st.at_date),
        ).fetchone()
        turn = _exact(
            b.scalar(f"SELECT t::text FROM accum.{REG}_turnover(%s, %s, %s::jsonb) t", (st.month, m_to, f))
        )
        month = b.conn.execute(
            q(
                f"SELECT coalesce(sum(quantity), 0), coalesce(sum(amount), 0) FROM bench.{PLAIN} "
                "WHERE warehouse = %s AND product = %s AND period BETWEEN %s AND %s"
            ),
            (w, p, st.month, m_to),
        ).fetchone()
        assert want is not None
        assert month is not None
        for obj, exp in ((got, want), (turn, month)):
            if (obj["quantity"], obj["amount"]) != (exp[0], exp[1]):
                bad += 1
    return bad


def _load(b: Bench, docs: Iterator[list[Movement]], goal: int, loaded: int) -> tuple[int, str, float]:
    """register_post batches until ``goal`` movements are in; returns (loaded, last period, seconds)."""
    seconds = 0.0
    last = ""
    while loaded < goal:
        batch: list[Movement] = []
        while len(batch) < min(b.plan.load_batch, goal - loaded):
            doc = next(docs)
            batch += doc
            last = doc[0]["period"]
        started = time.perf_counter()
        post(b.conn, REG, batch)
        seconds += time.perf_counter() - started
        loaded += len(batch)
    return loaded, last, seconds


def history(b: Bench, want: set[str]) -> list[Result]:
    measure_reads = bool(want & {"balance_historical", "turnover_month"})
    _setup(b)
    gen = Workload(b.shape, stream=1)
    keys = gen.sample_keys(KEYS)
    docs = gen.history(b.plan.load_movements, START, END)
    loaded, last_id, load_s = 0, 0, 0.0
    stages: list[Stage] = []
    bad_reads = 0
    for num, den in STAGES:
        goal = b.plan.load_movements * num // den
        loaded, last, secs = _load(b, docs, goal, loaded)
        load_s += secs
        last_id = _mirror(b, last_id)
        last_at = datetime.fromisoformat(last.replace("Z", "+00:00"))
        day = last_at.replace(hour=0, minute=0, second=0, microsecond=0)
        st = Stage(
            f"{num}/{den}" if den > 1 else "1", loaded, day - timedelta(hours=12), _month_before(last_at)
        )
        b.log(f"history: {loaded:,} movements loaded ({loaded / load_s:,.0f}/s while posting)")
        if measure_reads:
            _measure(b, st, keys)
            bad_reads += _check_reads(b, st, keys)
        stages.append(st)
    out: list[Result] = [
        Result(
            "history_load",
            f"{b.plan.load_batch:,}/call movements/s",
            loaded / load_s,
            "/s",
            note="info: register_post while loading, period order",
        )
    ]
    if "balance_historical" in want:
        out += _historical_rows(stages)
    if "turnover_month" in want:
        out += _turnover_rows(stages)
    if measure_reads:
        out.append(
            Result(
                "history_reads",
                "mismatches vs plain sums",
                bad_reads,
                "count",
                target=Target("==", 0, on="value", label="= 0"),
                note=f"{CHECKED_KEYS} keys x balance and turnover, every stage",
            )
        )
    if "bytes_per_movement" in want:
        out += _bytes_rows(b)
    if "verify" in want:
        out += _verify_rows(b)
    return out


def _stage_metric(st: Stage) -> str:
    return f"@{st.label} ({st.movements:,} mv)"


def _historical_rows(stages: list[Stage]) -> list[Result]:
    out = []
    for st in stages:
        e, p = st.figures["hist_engine"], st.figures["hist_plain"]
        out.append(
            Result(
                "balance_historical",
                "p50 " + _stage_metric(st),
                e.p50_ms,
                "ms",
                p.p50_ms,
                "plain point SELECT",
                ratio(e.p50_ms, p.p50_ms),
                details={"engine": e.as_dict(), "plain": p.as_dict(), "at_date": st.at_date.isoformat()},
            )
        )
    first, last = stages[0].figures, stages[-1].figures
    growth = last["hist_engine"].p50_ms / first["hist_engine"].p50_ms
    relative = ratio(
        last["hist_engine"].p50_ms / last["hist_plain"].p50_ms,
        first["hist_engine"].p50_ms / first["hist_plain"].p50_ms,
    )
    out.append(
        Result(
            "balance_historical",
            f"p50 growth @{stages[0].label} -> @1",
            growth,
            "x",
            target=Target("<=", 1.5, on="value", label="<= 1.5x"),
            note=f"relative to plain point SELECT: {relative:.2f}x" if relative else "",
        )
    )
    return out


def _turnover_rows(stages: list[Stage]) -> list[Result]:
    out = []
    for st in stages:
        e, p = st.figures["turn_engine"], st.figures["turn_plain"]
        out.append(
            Result(
                "turnover_month",
                "p50 key " + _stage_metric(st),
                e.p50_ms,
                "ms",
                p.p50_ms,
                "plain monthly table",
                ratio(e.p50_ms, p.p50_ms),
                details={"engine": e.as_dict(), "plain": p.as_dict(), "month": st.month.date().isoformat()},
            )
        )
    first, last = stages[0].figures, stages[-1].figures

    def rel(f: dict[str, Summary], side: str) -> float:
        return f[f"{side}_engine"].p50_ms / f[f"{side}_plain"].p50_ms

    ea, pa = last["turn_all_engine"], last["turn_all_plain"]
    out += [
        Result(
            "turnover_month",
            f"growth vs plain @{stages[0].label} -> @1",
            rel(last, "turn") / rel(first, "turn"),
            "x",
            target=Target("<=", 1.5, on="value", label="<= 1.5x"),
            note=f"raw p50 growth {last['turn_engine'].p50_ms / first['turn_engine'].p50_ms:.2f}x",
        ),
        Result(
            "turnover_month",
            "p50 all keys @1",
            ea.p50_ms,
            "ms",
            pa.p50_ms,
            "plain monthly sum",
            ratio(ea.p50_ms, pa.p50_ms),
            details={"engine": ea.as_dict(), "plain": pa.as_dict()},
        ),
        Result(
            "turnover_month",
            f"all keys growth vs plain @{stages[0].label} -> @1",
            rel(last, "turn_all") / rel(first, "turn_all"),
            "x",
        ),
    ]
    return out


def _bytes_rows(b: Bench) -> list[Result]:
    n = int(b.scalar(f"SELECT count(*) FROM accum.{REG}_movements"))
    engine = engine_bytes(b.conn, REG)
    plain = relation_bytes(b.conn, [f"bench.{PLAIN}"])[f"bench.{PLAIN}"]
    total = sum(engine.values())
    movements = engine[f"accum.{REG}_movements"]
    details: dict[str, Any] = {"movements": n, "engine_bytes": engine, "plain_bytes": plain}
    # 53 partitions with 4 indexes each cost a fixed ~4 MB, amortized only by a full-size load
    small = "fixed per-partition size dominates below 1M movements" if n < FULL_LOAD else ""
    return [
        Result(
            "bytes_per_movement",
            "all register tables",
            total / n,
            "B",
            plain / n,
            "plain table",
            ratio(total, plain),
            Target("<=", 1.5, label="<= 1.5x plain table"),
            note=small,
            details=details,
        ),
        Result(
            "bytes_per_movement",
            "movements (partitions)",
            movements / n,
            "B",
            plain / n,
            "plain table",
            ratio(movements, plain),
        ),
        Result(
            "bytes_per_movement",
            "derived tables",
            (total - movements) / n,
            "B",
            plain / n,
            "plain table",
            ratio(total - movements, plain),
        ),
    ]


def _verify_rows(b: Bench) -> list[Result]:
    n = int(b.scalar(f"SELECT count(*) FROM accum.{REG}_movements"))
    started = time.perf_counter()
    problems = int(b.scalar("SELECT count(*) FROM accum.register_verify(%s, true)", (REG,)))
    verify_s = time.perf_counter() - started
    started = time.perf_counter()
    # the floor: one pass recomputing per-day sums from the plain table
    b.scalar(
        f"SELECT count(*) FROM (SELECT warehouse, product, (period AT TIME ZONE 'UTC')::date, "
        f"sum(quantity), sum(amount) FROM bench.{PLAIN} GROUP BY 1, 2, 3) x"
    )
    plain_s = time.perf_counter() - started
    per_m = 1e6 / n
    return [
        Result(
            "verify",
            "seconds per million movements",
            verify_s * per_m,
            "s",
            plain_s * per_m,
            "plain GROUP BY day",
            ratio(verify_s, plain_s),
            details={"movements": n, "seconds": verify_s},
        ),
        Result("verify", "problems", problems, "count", target=Target("==", 0, on="value", label="= 0")),
    ]
