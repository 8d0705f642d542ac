"""The migrated schema, pinned (STYLE §2): a fresh database migrated twice (the second run applies nothing)
must match the reviewed tests/sql/expected_catalog.txt line for line. `make catalog` rewrites the file."""

from __future__ import annotations

import difflib
from pathlib import Path

import psycopg
import pytest
from helpers import Conn

from registers.migrate import migrate

EXPECTED = Path(__file__).with_name("expected_catalog.txt")
PINNED_SEARCH_PATH = "search_path=pg_catalog, accum, pg_temp"

# One query per catalog; every line starts with its catalog's name so a diff reads on its own.
QUERIES = {
    "class": """
        SELECT format('class %s %s', c.relname, c.relkind)
        FROM pg_class c WHERE c.relnamespace = 'accum'::regnamespace""",
    "attribute": """
        SELECT format('attribute %s.%s %s%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' ELSE '' END)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'accum'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'c') AND a.attnum > 0
          AND NOT a.attisdropped""",
    "constraint": """
        SELECT format('constraint %s.%s %s %s', c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid))
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE k.connamespace = 'accum'::regnamespace""",
    "index": """
        SELECT format('index %s', pg_get_indexdef(i.indexrelid))
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'accum'::regnamespace""",
    "proc": """
        SELECT format('proc %s -> %s %s%s%s', p.oid::regprocedure, pg_get_function_result(p.oid),
                      CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END,
                      CASE WHEN p.prosecdef THEN ' security definer' ELSE '' END,
                      coalesce(' ' || array_to_string(p.proconfig, ' | '), ''))
        FROM pg_proc p WHERE p.pronamespace = 'accum'::regnamespace""",
}


def catalog_lines(conn: Conn) -> list[str]:
    # The dump must not depend on the session: fix the settings that change how definitions print.
    conn.execute("SET search_path = pg_catalog")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.execute("SET TimeZone = 'UTC'")
    lines: list[str] = []
    for query in QUERIES.values():
        lines += [r[0] for r in conn.execute(query).fetchall()]
    return sorted(lines)


def test_catalog_matches_expected(empty_db_dsn: str, request: pytest.FixtureRequest) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        first = migrate(conn, owner="accum_owner", roles="require")
        assert first.applied, "the first run applies the bundled migrations"
        second = migrate(conn, owner="accum_owner", roles="require")
        assert second.applied == ()
        lines = catalog_lines(conn)

    if request.config.getoption("--update-catalog"):
        EXPECTED.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    expected = EXPECTED.read_text(encoding="utf-8").splitlines() if EXPECTED.exists() else []
    if lines != expected:
        diff = "\n".join(
            difflib.unified_diff(expected, lines, "expected_catalog.txt", "migrated", lineterm="", n=0)
        )
        pytest.fail(
            "the migrated schema differs from tests/sql/expected_catalog.txt;"
            " run `make catalog`, review the diff"
            f" and commit it with the migration:\n{diff}",
            pytrace=False,
        )


def test_security_definer_functions_pin_search_path(empty_db_dsn: str) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate(conn, owner="accum_owner", roles="require")
        conn.execute(
            'SELECT accum.register_create(\'inv\', \'{"d": "int"}\', \'{"q": "int"}\', high_write => true)'
        )
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
            " WHERE p.pronamespace = 'accum'::regnamespace AND p.prosecdef"
        ).fetchall()
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p"
            " WHERE p.pronamespace = 'accum'::regnamespace"
            " UNION SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE c.relnamespace = 'accum'::regnamespace"
        ).fetchall()
    assert rows, "writes and maintenance run as SECURITY DEFINER"
    unpinned = [sig for sig, config in rows if PINNED_SEARCH_PATH not in (config or [])]
    assert unpinned == [], f"SECURITY DEFINER without `SET {PINNED_SEARCH_PATH}`"
    # generated per-register functions (post, triggers, ...) are among them
    assert {"accum._inv_post(jsonb)", "accum._inv_ins()", "accum._inv_merge(integer,interval)"} <= {
        r[0] for r in rows
    }
    # everything belongs to the owner role, whoever ran the call
    assert owners == [("accum_owner",)]
