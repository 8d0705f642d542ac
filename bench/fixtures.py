"""Benchmark registers and their plain twins (SPEC §21 baselines), created through the public SQL API.

Plain twins live in schema ``bench``: ``LIKE <r>_movements INCLUDING ALL`` gives the same columns (the
generated ``dim_hash`` too), CHECK constraints and indexes, without partitioning and without triggers, so
the difference to the engine is exactly what the engine adds. Each twin draws ids from its own sequence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Bench
from bench.db import Conn
from bench.workload import COLUMNS, DIMENSIONS, RESOURCES, Movement, payload, rows

__all__ = [
    "create_plain_balance",
    "create_plain_month",
    "create_plain_movements",
    "create_register",
    "engine_bytes",
    "ensure_history_partitions",
    "insert_plain",
    "post",
    "recent_period",
    "relation_bytes",
    "values_sql",
]


def q(text: str) -> bytes:
    """A query built at run time (names of this run's tables); psycopg takes bytes for those."""
    return text.encode()


def create_register(conn: Conn, name: str, *, high_write: bool = False) -> None:
    conn.execute(
        "SELECT accum.register_create(name => %s, dimensions => %s::jsonb, resources => %s::jsonb, "
        "high_write => %s)",
        (name, json.dumps(DIMENSIONS), json.dumps(RESOURCES), high_write),
    )


def post(conn: Conn, register: str, movements: Sequence[Movement]) -> int:
    row = conn.execute("SELECT accum.register_post(%s, %s::jsonb)", (register, payload(movements))).fetchone()
    assert row is not None
    return int(row[0])


def create_plain_movements(conn: Conn, table: str, register: str) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    conn.execute(q(f"CREATE SEQUENCE bench.{table}_id_seq"))
    conn.execute(q(f"CREATE TABLE bench.{table} (LIKE accum.{register}_movements INCLUDING ALL)"))
    conn.execute(q(f"ALTER TABLE bench.{table} ALTER COLUMN id SET DEFAULT nextval('bench.{table}_id_seq')"))


def create_plain_balance(conn: Conn, table: str) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    conn.execute(
        q(
            f"CREATE TABLE bench.{table} (warehouse integer NOT NULL, product integer NOT NULL, "
            "quantity numeric NOT NULL, amount numeric NOT NULL, PRIMARY KEY (warehouse, product))"
        )
    )


def create_plain_month(conn: Conn, table: str) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    conn.execute(
        q(
            f"CREATE TABLE bench.{table} (warehouse integer NOT NULL, product integer NOT NULL, "
            "month date NOT NULL, quantity numeric NOT NULL, amount numeric NOT NULL, "
            "PRIMARY KEY (warehouse, product, month))"
        )
    )
    conn.execute(q(f"CREATE INDEX ON bench.{table} (month)"))


def values_sql(table: str, n: int) -> bytes:
    """Multi-row INSERT ... VALUES with bound parameters: the plain INSERT floor."""
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    return q(f"INSERT INTO bench.{table} ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * n))


def insert_plain(conn: Conn, table: str, movements: Sequence[Movement]) -> None:
    conn.execute(values_sql(table, len(movements)), [v for row in rows(movements) for v in row])


def recent_period(rnd_fraction: float, now: datetime | None = None) -> str:
    """An instant in the current month up to now (its partition exists from register_create on)."""
    now = now or datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = min(now - month_start, timedelta(days=20))
    return (now - span * rnd_fraction).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_history_partitions(b: Bench, register: str, start: datetime, end: datetime) -> int:
    """Monthly partitions for a back-dated history, made the way production makes them: rows land in the
    default partition, then register_create_partitions creates their partitions and moves them."""
    seeds: list[Movement] = []
    month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month < end:
        seeds.append(
            {
                "recorder": "bench:seed",
                "period": month.strftime("%Y-%m-%dT12:00:00Z"),
                "warehouse": 1,
                "product": 1,
                "quantity": "1.000",
                "amount": "1.00",
            }
        )
        month = (month + timedelta(days=32)).replace(day=1)
    post(b.conn, register, seeds)
    created = int(b.scalar("SELECT accum.register_create_partitions(%s)", (register,)))
    b.conn.execute("SELECT accum.register_unpost(%s, 'bench:seed')", (register,))
    return created


def relation_bytes(conn: Conn, names: Sequence[str]) -> dict[str, int]:
    """pg_total_relation_size (heap, TOAST, indexes) per relation; a partitioned table sums its partitions."""
    out: dict[str, int] = {}
    for name in names:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            # pg_partition_tree lists nothing for a plain table, hence the table itself too
            "WHERE c.oid = %s::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree(%s::regclass))",
            (name, name),
        ).fetchone()
        assert row is not None
        out[name] = int(row[0])
    return out


def engine_bytes(conn: Conn, register: str) -> dict[str, int]:
    """Every table of a register (movements with all partitions, totals, cache, delta) with its indexes."""
    tables: list[Any] = [
        r[0]
        for r in conn.execute(
            "SELECT format('accum.%%I', c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'accum' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname = ANY (ARRAY[%s || '_movements', %s || '_totals_day', %s || '_totals_month', "
            "%s || '_totals_year', %s || '_balance_cache', %s || '_delta'])",
            (register,) * 6,
        )
    ]
    return relation_bytes(conn, tables)
