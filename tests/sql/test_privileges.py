"""Privileges (SPEC §3.3): what the group roles may do, and that the derived tables stay closed to everyone
but the owner's functions. Runs as LOGIN members of the group roles, never as a superuser or the owner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import Conn, connect_as

MOVEMENT = (
    '{"recorder": "%s", "period": "2026-01-05T10:00", "warehouse": 1, "product": "p",'
    ' "quantity": 2, "amount": "1.5"}'
)
DERIVED = ["inv_totals_day", "inv_totals_month", "inv_totals_year", "inv_balance_cache", "hw_delta"]


def ok(conn: Conn, query: str) -> list[tuple[Any, ...]]:
    cur = conn.execute(query)
    return cur.fetchall() if cur.description else []


def denied(conn: Conn, query: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(query)


@pytest.fixture
def roles(db_dsn: str) -> Iterator[dict[str, Conn]]:
    conns = {r: connect_as(db_dsn, r) for r in ("t_admin", "t_writer", "t_reader", "t_nobody")}
    try:
        for c in conns.values():
            assert ok(c, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
        admin = conns["t_admin"]
        ok(
            admin,
            'SELECT accum.register_create(\'inv\', \'{"warehouse": "int", "product": "text"}\','
            ' \'{"quantity": "int", "amount": "numeric(10,2)"}\')',
        )
        ok(
            admin,
            'SELECT accum.register_create(\'hw\', \'{"warehouse": "int", "product": "text"}\','
            ' \'{"quantity": "int", "amount": "numeric(10,2)"}\', high_write => true)',
        )
        yield conns
    finally:
        for c in conns.values():
            c.close()


def test_admin_manages_registers(roles: dict[str, Conn]) -> None:
    admin = roles["t_admin"]
    ok(admin, "SELECT accum.register_alter('inv', add_resources => '{\"weight\": \"integer\"}')")
    ok(admin, f"SELECT accum.register_post('inv', '{MOVEMENT[:-1] % 'a'}, \"weight\": 1}}')")
    assert ok(admin, "SELECT accum.register_rebuild_totals('inv')")[0][0] == 3
    assert ok(admin, "SELECT accum.register_rebuild_cache('inv')") == [(1,)]
    ok(admin, 'SELECT accum.register_create(\'tmp\', \'{"d": "int"}\', \'{"q": "int"}\')')
    ok(admin, "SELECT accum.register_drop('tmp')")
    ok(admin, "SELECT accum.register_drop('inv', force => true)")
    assert [r[0] for r in ok(admin, "SELECT name FROM accum.register_list()")] == ["hw"]


def test_writer(roles: dict[str, Conn]) -> None:
    w = roles["t_writer"]
    assert ok(w, f"SELECT accum.register_post('inv', '[{MOVEMENT % 'a'}, {MOVEMENT % 'b'}]')") == [(2,)]
    assert ok(w, f"SELECT accum.register_repost('inv', 'a', '[{MOVEMENT % 'a'}]')") == [(1,)]
    assert ok(w, "SELECT accum.register_unpost('inv', 'b')") == [(1,)]
    rows = ok(
        w,
        'SELECT ord, outcome FROM accum.register_apply(\'[{"op": "unpost", "register": "inv",'
        ' "recorder": "a"}, {"op": "unpost", "register": "hw", "recorder": "x"}]\')',
    )
    assert rows == [(0, "applied"), (1, "applied")]
    ok(w, f"SELECT accum.register_post('hw', '{MOVEMENT % 'h'}')")
    # direct DML through the parent, with its triggers
    ok(
        w,
        "INSERT INTO accum.inv_movements (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('d', '2026-01-05 10:00:00+00', 1, 'p', 5, 1), ('d', now(), 2, 'p', 1, 1)",
    )
    ok(w, "UPDATE accum.inv_movements SET period = now(), quantity = quantity + 1 WHERE warehouse = 1")
    ok(w, "DELETE FROM accum.inv_movements WHERE warehouse = 2")
    ok(
        w,
        "INSERT INTO accum.hw_movements (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('d', now(), 1, 'p', 5, 1)",
    )
    assert ok(w, "SELECT accum.inv_balance()::text") == [('{"amount": 1.00, "quantity": 6}',)]
    # maintenance a writer may run
    assert ok(w, "SELECT accum.register_merge('hw')")[0][0] > 0
    ok(w, "SELECT accum._force_delta_merge()")
    ok(w, "SELECT accum.register_create_partitions('inv')")
    ok(
        w,
        "INSERT INTO accum.consumer_offsets (consumer_group, topic, partition, next_offset)"
        " VALUES ('g', 't', 0, 1)",
    )
    ok(w, "INSERT INTO accum.consumer_commands (register, id, fingerprint) VALUES ('inv', 'c1', 'f')")
    assert ok(w, "SELECT count(*) FROM accum.register_verify('inv', true)") == [(0,)]
    assert ok(w, "SELECT count(*) FROM accum.register_verify('hw', true)") == [(0,)]

    # the derived tables and the delta buffer: readable, never writable
    for table in DERIVED:
        assert ok(w, f"SELECT count(*) FROM accum.{table}")[0][0] >= 0
        denied(w, f"INSERT INTO accum.{table} (dim_hash) VALUES (1)")  # privileges are checked first
        denied(w, f"UPDATE accum.{table} SET quantity = quantity + 1")
        denied(w, f"DELETE FROM accum.{table}")
        denied(w, f"TRUNCATE accum.{table}")
    denied(w, "TRUNCATE accum.inv_movements")
    # partitions grant nothing: DML goes through the parent, whose statement triggers always fire
    denied(w, "DELETE FROM accum.inv_movements_default")
    denied(
        w,
        "INSERT INTO accum.inv_movements_default (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('x', '2020-01-01 00:00:00+00', 1, 'p', 1, 1)",
    )
    denied(w, "ALTER TABLE accum.inv_movements DISABLE TRIGGER USER")
    denied(w, "DROP TABLE accum.inv_totals_day")
    # admin-only functions and internals
    for query in [
        'SELECT accum.register_create(\'w\', \'{"d": "int"}\', \'{"q": "int"}\')',
        "SELECT accum.register_alter('inv', add_resources => '{\"x\": \"int\"}')",
        "SELECT accum.register_drop('inv', force => true)",
        "SELECT accum.register_rebuild_totals('inv')",
        "SELECT accum.register_rebuild_cache('inv')",
        "SELECT accum._inv_post('[]')",
        "SELECT accum._inv_rebuild_totals()",
        "SELECT accum._apply_grants()",
    ]:
        denied(w, query)


def test_no_session_setting_opens_derived_tables(roles: dict[str, Conn]) -> None:
    w = roles["t_writer"]
    ok(w, f"SELECT accum.register_post('inv', '{MOVEMENT % 'a'}')")
    denied(w, "SET session_replication_role = replica")
    denied(w, "SET ROLE accum_owner")
    for setting in (
        "pg_accumulator.allow_direct_write",
        "accum.allow_direct_write",
        "accum.bypass",
        "accum.trusted",
    ):
        ok(w, f"SET {setting} = 'on'")
    ok(w, "SET search_path = pg_temp, accum, public")
    for table in DERIVED:
        denied(w, f"DELETE FROM accum.{table}")
        denied(w, f"UPDATE accum.{table} SET quantity = 0")
    # inside a trigger-like nesting depth, still nothing: a function the writer owns runs as the writer
    ok(w, "CREATE FUNCTION pg_temp.poke() RETURNS void LANGUAGE sql AS 'DELETE FROM accum.inv_balance_cache'")
    denied(w, "SELECT pg_temp.poke()")
    # a temp table shadowing a name cannot redirect the SECURITY DEFINER functions (search_path is pinned)
    ok(w, "CREATE TEMP TABLE _registers (LIKE accum._registers)")
    ok(w, "CREATE TEMP TABLE inv_movements (LIKE accum.inv_movements)")
    assert ok(w, f"SELECT accum.register_post('inv', '{MOVEMENT % 'b'}')") == [(1,)]
    assert ok(w, "SELECT count(*) FROM pg_temp.inv_movements") == [(0,)]
    assert ok(w, "SELECT count(*) FROM accum.inv_movements") == [(2,)]
    assert ok(w, "SELECT count(*) FROM accum.register_verify('inv', true)") == [(0,)]


def test_reader(roles: dict[str, Conn]) -> None:
    ok(roles["t_writer"], f"SELECT accum.register_post('inv', '{MOVEMENT % 'a'}')")
    ok(roles["t_writer"], f"SELECT accum.register_post('hw', '{MOVEMENT % 'a'}')")
    r = roles["t_reader"]
    assert ok(r, "SELECT accum.inv_balance('{\"warehouse\": 1}')::text") == [
        ('{"amount": 1.50, "quantity": 2}',)
    ]
    assert ok(r, "SELECT accum.hw_balance(NULL, now())::text") == [('{"amount": 1.50, "quantity": 2}',)]
    assert len(ok(r, "SELECT * FROM accum.inv_turnover(NULL, NULL, NULL, '[\"product\"]')")) == 1
    assert len(ok(r, "SELECT * FROM accum.hw_turnover('2026-01-01 00:00:00+00', NULL)")) == 1
    assert len(ok(r, "SELECT * FROM accum.inv_movements('a')")) == 1
    assert [x[0] for x in ok(r, "SELECT name FROM accum.register_list()")] == ["hw", "inv"]
    for query in [
        "SELECT accum.register_info('inv')",
        "SELECT accum.register_stats('hw')",
        "SELECT * FROM accum.register_partitions('inv')",
        "SELECT * FROM accum.register_verify('inv')",
        "SELECT * FROM accum.register_verify('hw', true)",
        "SELECT * FROM accum.register_delta_status()",
        "SELECT count(*) FROM accum.inv_movements",
        "SELECT count(*) FROM accum.inv_totals_day",
        "SELECT count(*) FROM accum.hw_delta",
        "SELECT count(*) FROM accum.schema_migrations",
    ]:
        ok(r, query)
    assert ok(r, "SELECT count(*) FROM accum.register_verify('inv', true)") == [(0,)]
    for query in [
        f"SELECT accum.register_post('inv', '{MOVEMENT % 'r'}')",
        "SELECT accum.register_unpost('inv', 'a')",
        f"SELECT accum.register_repost('inv', 'a', '[{MOVEMENT % 'a'}]')",
        "SELECT * FROM accum.register_apply('[]')",
        "SELECT accum.register_merge()",
        "SELECT accum._force_delta_merge()",
        "SELECT accum.register_create_partitions('inv')",
        'SELECT accum.register_create(\'x\', \'{"d": "int"}\', \'{"q": "int"}\')',
        "INSERT INTO accum.inv_movements (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('r', now(), 1, 'p', 1, 1)",
        "UPDATE accum.inv_movements SET quantity = 0",
        "DELETE FROM accum.inv_movements",
        "DELETE FROM accum.inv_totals_day",
        "INSERT INTO accum.consumer_offsets (consumer_group, topic, partition, next_offset)"
        " VALUES ('g', 't', 0, 1)",
    ]:
        denied(r, query)


def test_nobody(roles: dict[str, Conn], db_dsn: str) -> None:
    n = roles["t_nobody"]
    for query in [
        "SELECT * FROM accum.register_list()",
        "SELECT accum.register_info('inv')",
        "SELECT accum.inv_balance()",
        "SELECT * FROM accum.inv_turnover()",
        f"SELECT accum.register_post('inv', '{MOVEMENT % 'n'}')",
        "SELECT * FROM accum.register_apply('[]')",
        'SELECT accum.register_create(\'x\', \'{"d": "int"}\', \'{"q": "int"}\')',
        "SELECT count(*) FROM accum.inv_movements",
        "SELECT count(*) FROM accum._registers",
    ]:
        denied(n, query)
    # not one function of the schema is executable by t_nobody, nor by PUBLIC
    with psycopg.connect(db_dsn, autocommit=True) as su:
        executable = su.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'accum'::regnamespace"
            " AND has_function_privilege('t_nobody', p.oid, 'EXECUTE')"
        ).fetchall()
        assert executable == []
        public = su.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'accum'::regnamespace"
            " AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))"
        ).fetchall()
        assert public == []
        tables = su.execute(
            "SELECT c.relname FROM pg_class c"
            " WHERE c.relnamespace = 'accum'::regnamespace AND c.relkind IN ('r', 'p')"
            " AND has_table_privilege('t_nobody', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')"
        ).fetchall()
        assert tables == []
