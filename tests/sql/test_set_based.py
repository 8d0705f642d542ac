"""The write path is set-based (SPEC §7.2): the work a call does in functions does not grow with its size.

PostgreSQL counts calls of PL/pgSQL and SQL functions (track_functions); a write of 500 movements must make
exactly as many function calls as a write of 1: the statement triggers fire once per statement, and no
per-movement or per-row function runs (checks and conversions are inline SQL).
"""

from __future__ import annotations

from typing import Any

from helpers import Conn, create_register, one, post_movements
from psycopg.types.json import Jsonb


def _calls(conn: Conn) -> dict[str, int]:
    # Counters reach the shared statistics when a transaction ends after this request
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'accum'"
    ).fetchall()
    return {name: int(calls) for name, calls in rows}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _movements(recorder: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "recorder": recorder,
            "period": f"2026-0{1 + i % 9}-{1 + i % 28:02d}T10:00",
            "item": f"i{i % 37}",
            "wh": i % 5,
            "qty": (i % 7) - 3,
            "amount": f"{i % 11}.25",
        }
        for i in range(n)
    ]


def _measure(conn: Conn, call: str, params: tuple[Any, ...]) -> dict[str, int]:
    before = _calls(conn)
    conn.execute(call, params)
    return _delta(before, _calls(conn))


def test_function_calls_do_not_grow_with_the_batch(conn: Conn) -> None:
    conn.execute("SET track_functions = 'all'")
    dims, res = {"item": "text", "wh": "integer"}, {"qty": "integer", "amount": "numeric(12,2)"}
    create_register(conn, "sb", dims, res)
    create_register(conn, "sb_hw", dims, res, high_write=True)
    for register in ("sb", "sb_hw"):
        post_movements(conn, register, _movements("warm", 3))  # first calls compile; count steady state
        small = _measure(conn, "SELECT accum.register_post(%s, %s)", (register, Jsonb(_movements("a", 1))))
        large = _measure(conn, "SELECT accum.register_post(%s, %s)", (register, Jsonb(_movements("b", 500))))
        assert small == large, f"{register}: post calls {small} for 1 movement, {large} for 500"
        assert small[f"_{register}_ins"] == 1

        small = _measure(
            conn, "SELECT accum.register_repost(%s, 'a', %s)", (register, Jsonb(_movements("a", 1)))
        )
        large = _measure(
            conn, "SELECT accum.register_repost(%s, 'b', %s)", (register, Jsonb(_movements("b", 500)))
        )
        assert small == large, f"{register}: repost calls {small} for 1 movement, {large} for 500"

        cmds = [
            {"op": "post", "register": register, "recorder": f"c{i}", "movements": _movements(f"c{i}", 2)}
            for i in range(300)
        ]
        small = _measure(conn, "SELECT count(*) FROM accum.register_apply(%s)", (Jsonb(cmds[:1]),))
        large = _measure(conn, "SELECT count(*) FROM accum.register_apply(%s)", (Jsonb(cmds[1:]),))
        assert small == large, f"{register}: apply calls {small} for 1 command, {large} for 299"
    assert one(conn, "SELECT count(*) FROM accum.register_verify('sb', true)") == 0
