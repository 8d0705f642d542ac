"""Registry API through SQL (SPEC §4, §6): register_create / alter / drop / list / info on a real database."""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import Conn, create_register, one, post_movements
from psycopg.types.json import Jsonb, set_json_loads

INFO_KEYS = {
    "name",
    "kind",
    "dimensions",
    "resources",
    "totals_period",
    "partition_by",
    "high_write",
    "recorder_type",
    "time_zone",
    "created_at",
    "updated_at",
    "movements_count",
    "tables",
    "partitions",
}


@pytest.fixture
def db(conn: Conn) -> Conn:
    """The test's superuser connection; JSON numbers come back as Decimal (exact, scale kept)."""
    set_json_loads(lambda s: json.loads(s, parse_float=Decimal), conn)
    return conn


def info(conn: Conn, name: str) -> dict[str, Any]:
    result: dict[str, Any] = one(conn, "SELECT accum.register_info(%s)", (name,))
    return result


def sqlstate_of(conn: Conn, query: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> tuple[str, str]:
    with pytest.raises(psycopg.Error) as exc:
        conn.execute(query, params or None)
    assert exc.value.sqlstate is not None
    return exc.value.sqlstate, exc.value.diag.message_primary or ""


def relations(conn: Conn, like: str) -> set[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'accum'::regnamespace AND relname LIKE %s", (like,)
    ).fetchall()
    return {r[0] for r in rows}


# ---- register_create ------------------------------------------------------------------------------------


def test_create_defaults_and_canonical_types(db: Conn) -> None:
    create_register(
        db,
        "inventory",
        {
            "warehouse": " INT ",
            "code": "int2",
            "big": "Int8",
            "lot": "Decimal( 10 , 2 )",
            "sku": "character varying(20)",
            "note": "TEXT",
            "uid": "uuid",
            "day": "date",
            "flag": "bool",
        },
        {
            "qty": "int4",
            "amount": "numeric(18,2)",
            "free": "numeric",
            "whole": "decimal(12)",
            "small": "smallint",
        },
    )
    got = info(db, "inventory")
    assert set(got) == INFO_KEYS
    assert got["dimensions"] == {
        "big": "bigint",
        "code": "smallint",
        "day": "date",
        "flag": "boolean",
        "lot": "numeric(10,2)",
        "note": "text",
        "sku": "varchar(20)",
        "uid": "uuid",
        "warehouse": "integer",
    }
    assert got["resources"] == {
        "amount": "numeric(18,2)",
        "free": "numeric",
        "qty": "integer",
        "small": "smallint",
        "whole": "numeric(12,0)",
    }
    assert (got["kind"], got["totals_period"], got["partition_by"]) == ("balance", "day", "month")
    assert (got["high_write"], got["recorder_type"], got["time_zone"]) == (False, "text", "UTC")
    assert got["movements_count"] == 0
    assert got["tables"] == {
        "movements": "inventory_movements",
        "totals_day": "inventory_totals_day",
        "totals_month": "inventory_totals_month",
        "totals_year": "inventory_totals_year",
        "balance_cache": "inventory_balance_cache",
    }
    # instants render in the register zone (UTC here)
    assert got["created_at"].endswith("+00:00")
    # current period and the next 3, then the default partition
    parts = got["partitions"]
    assert [p["is_default"] for p in parts] == [False] * 4 + [True]
    assert all(set(p) == {"name", "from", "to", "is_default"} for p in parts)
    assert [p["from"] for p in parts[:4]] == sorted(p["from"] for p in parts[:4])
    assert all(p["name"].startswith("inventory_movements_2") for p in parts[:4])
    assert parts[4] == {"name": "inventory_movements_default", "from": None, "to": None, "is_default": True}
    for a, b in itertools.pairwise(parts[:4]):
        assert a["to"] == b["from"]
        assert a["from"].endswith("-01T00:00:00+00:00")

    # columns ordered by name (bytewise), dimensions then resources
    cols = [
        r[0]
        for r in db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'accum.inventory_movements'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    ]
    assert cols == [
        "id",
        "recorded_at",
        "recorder",
        "period",
        "dim_hash",
        "big",
        "code",
        "day",
        "flag",
        "lot",
        "note",
        "sku",
        "uid",
        "warehouse",
        "amount",
        "free",
        "qty",
        "small",
        "whole",
    ]
    # derived resources are unconstrained numeric (SPEC §4.5)
    types: dict[str, str] = dict(
        db.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'accum.inventory_totals_day'::regclass AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    )
    assert types["qty"] == types["amount"] == types["small"] == "numeric"
    assert types["sku"] == "character varying(20)"


PARTITION_NAMES = {
    "day": r"^p_day_movements_\d{4}_\d{2}_\d{2}$",
    "month": r"^p_month_movements_\d{4}_\d{2}$",
    "quarter": r"^p_quarter_movements_\d{4}_q[1-4]$",
    "year": r"^p_year_movements_\d{4}$",
}


def test_create_partition_by(db: Conn) -> None:
    for partition_by, pattern in PARTITION_NAMES.items():
        name = f"p_{partition_by}"
        create_register(
            db, name, {"d": "int"}, {"q": "int"}, partition_by=partition_by, time_zone="Asia/Kathmandu"
        )
        got = info(db, name)
        assert got["partition_by"] == partition_by
        names = [p["name"] for p in got["partitions"] if not p["is_default"]]
        assert len(names) == 4
        assert all(re.match(pattern, n) for n in names), names
        assert names == sorted(names)
        # bounds are local period starts in the register zone (+05:45)
        assert all(p["from"].endswith("T00:00:00+05:45") for p in got["partitions"] if not p["is_default"])


def test_create_all_options(db: Conn) -> None:
    create_register(
        db,
        "sales",
        {"channel": "text"},
        {"qty": "integer"},
        kind=" Turnover ",
        totals_period="month",
        partition_by="year",
        high_write=True,
        recorder_type="uuid",
        time_zone="europe/berlin",
    )
    got = info(db, "sales")
    assert (got["kind"], got["totals_period"], got["partition_by"]) == ("turnover", "month", "year")
    assert (got["high_write"], got["recorder_type"], got["time_zone"]) == (True, "uuid", "Europe/Berlin")
    assert got["tables"] == {
        "movements": "sales_movements",
        "totals_month": "sales_totals_month",
        "totals_year": "sales_totals_year",
        "delta": "sales_delta",
    }
    assert relations(db, "sales_%") >= {
        "sales_movements",
        "sales_totals_month",
        "sales_totals_year",
        "sales_delta",
    }
    assert not relations(db, "sales_totals_day") | relations(db, "sales_balance_cache")

    create_register(db, "yearly", {"d": "int"}, {"q": "int"}, totals_period="year", recorder_type="bigint")
    got = info(db, "yearly")
    assert got["tables"] == {
        "movements": "yearly_movements",
        "totals_year": "yearly_totals_year",
        "balance_cache": "yearly_balance_cache",
    }
    assert got["recorder_type"] == "bigint"


def test_create_limits_fit_63_bytes(db: Conn) -> None:
    """A 32-character register with 40-character names and 16 dimensions: every generated name fits."""
    name = "r" * 32
    dims = {f"{'d' * 38}{i:02d}": "text" for i in range(16)}
    res = {f"{'q' * 38}{i:02d}": "numeric(10,2)" for i in range(30)}  # 32 after the alter below
    create_register(db, name, dims, res, partition_by="day")
    got = info(db, name)
    assert len(got["dimensions"]) == 16
    assert len(got["resources"]) == 30
    long_names = db.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'accum'::regnamespace AND length(relname) > 63"
    ).fetchall()
    assert long_names == []
    movement = (
        {"recorder": "r1", "period": "2026-01-01"} | dict.fromkeys(dims, "v") | dict.fromkeys(res, "1.25")
    )
    assert post_movements(db, name, movement) == 1
    assert one(db, f"SELECT accum.{name}_balance()")[f"{'q' * 38}07"] == Decimal("1.25")
    # two added resources whose names share their first 39 characters
    added = {"r" * 39 + "1": "numeric", "r" * 39 + "2": "numeric"}
    db.execute("SELECT accum.register_alter(%s, add_resources => %s)", (name, Jsonb(added)))
    assert set(info(db, name)["resources"]) >= set(added)
    assert post_movements(db, name, movement | dict.fromkeys(added, "1e-3")) == 1
    assert one(db, f"SELECT accum.{name}_balance()")["r" * 39 + "2"] == Decimal("0.001")


# ---- register_list / register_info / register_drop -----------------------------------------------------


def test_list_info_drop(db: Conn) -> None:
    create_register(db, "beta", {"d": "int"}, {"q": "int"}, kind="turnover")
    create_register(
        db,
        "alpha",
        {"d": "int", "e": "text"},
        {"q": "int", "r": "numeric"},
        high_write=True,
        time_zone="Europe/Berlin",
    )
    post_movements(
        db, "alpha", [{"recorder": "a", "period": "2026-01-01", "d": 1, "e": "x", "q": 1, "r": 1}] * 3
    )
    rows = db.execute("SELECT * FROM accum.register_list()").fetchall()
    cols = [c.name for c in db.execute("SELECT * FROM accum.register_list()").description or []]
    assert cols == [
        "name",
        "kind",
        "dimensions",
        "resources",
        "movements_count",
        "created_at",
        "high_write",
        "time_zone",
    ]
    assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows] == [
        ("alpha", "balance", 2, 2, 3, True, "Europe/Berlin"),
        ("beta", "turnover", 1, 1, 0, False, "UTC"),
    ]
    assert info(db, "alpha")["movements_count"] == 3

    # not empty: refused, nothing dropped
    state, msg = sqlstate_of(db, "SELECT accum.register_drop('alpha')")
    assert (state, msg.split(": ")[0]) == ("55000", "alpha")
    assert "alpha_movements" in relations(db, "alpha%")
    db.execute("SELECT accum.register_drop('alpha', force => true)")
    db.execute("SELECT accum.register_drop('beta')")  # empty: no force needed
    assert db.execute("SELECT * FROM accum.register_list()").fetchall() == []
    assert relations(db, "alpha%") | relations(db, "beta%") == set()
    leftovers = db.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'accum'::regnamespace"
        " AND (proname LIKE '%alpha%' OR proname LIKE '%beta%')"
    ).fetchall()
    assert leftovers == []
    assert one(db, "SELECT count(*) FROM pg_class WHERE relname LIKE 'alpha%' OR relname LIKE 'beta%'") == 0

    # the name is free again
    create_register(db, "alpha", {"d": "int"}, {"q": "int"})
    assert info(db, "alpha")["dimensions"] == {"d": "integer"}


# ---- register_alter --------------------------------------------------------------------------------------


def balance(conn: Conn, register: str, dims: dict[str, Any] | None = None) -> dict[str, Decimal]:
    result: dict[str, Decimal] = one(
        conn, f"SELECT accum.{register}_balance(%s)", (Jsonb(dims) if dims is not None else None,)
    )
    return result


def problems(conn: Conn, register: str) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM accum.register_verify(%s, true)", (register,)).fetchall()


def test_alter_add_resource(db: Conn) -> None:
    create_register(db, "inv", {"wh": "int"}, {"qty": "int"}, time_zone="Europe/Berlin")
    post_movements(db, "inv", [{"recorder": "a", "period": "2026-01-01", "wh": 1, "qty": 5}])
    db.execute("SELECT accum.register_alter('inv', add_resources => '{\"amount\": \"numeric(10,2)\"}')")
    got = info(db, "inv")
    assert got["resources"] == {"amount": "numeric(10,2)", "qty": "integer"}
    assert got["updated_at"] >= got["created_at"]
    assert balance(db, "inv") == {"amount": Decimal("0.00"), "qty": 5}
    assert str(balance(db, "inv")["amount"]) == "0.00"
    # the old movement reads 0; a new one must carry the new resource
    mv = [json.loads(r[0]) for r in db.execute("SELECT m::text FROM accum.inv_movements() m").fetchall()]
    assert mv[0]["amount"] == 0
    state, _ = sqlstate_of(
        db, 'SELECT accum.register_post(\'inv\', \'{"recorder":"b","period":"2026-01-02","wh":1,"qty":1}\')'
    )
    assert state == "22023"
    post_movements(db, "inv", [{"recorder": "b", "period": "2026-01-02", "wh": 1, "qty": 1, "amount": "2.5"}])
    assert balance(db, "inv") == {"amount": Decimal("2.50"), "qty": 6}
    rows = list(
        db.execute("SELECT t::text FROM accum.inv_turnover(NULL, NULL, NULL, '[\"wh\"]') t").fetchall()
    )
    assert [json.loads(r[0], parse_float=Decimal) for r in rows] == [
        {"wh": 1, "qty": 6, "amount": Decimal("2.50")}
    ]
    assert problems(db, "inv") == []


def test_alter_add_dimension_with_backfill(db: Conn) -> None:
    create_register(db, "inv", {"wh": "int"}, {"qty": "int"}, time_zone="Europe/Berlin")
    post_movements(
        db,
        "inv",
        [
            {"recorder": "a", "period": "2026-01-01", "wh": 1, "qty": 5},
            {"recorder": "a", "period": "2025-06-01T10:00", "wh": 2, "qty": 7},
        ],
    )
    state, _ = sqlstate_of(db, "SELECT accum.register_alter('inv', add_dimensions => '{\"lot\": \"text\"}')")
    assert state == "22023"  # backfill required
    state, _ = sqlstate_of(
        db,
        "SELECT accum.register_alter('inv', add_dimensions => '{\"lot\": \"text\"}',"
        " backfill => '{\"lot\": 5}')",
    )
    assert state == "22023"  # invalid backfill
    state, _ = sqlstate_of(
        db,
        "SELECT accum.register_alter('inv', add_dimensions => '{\"lot\": \"text\"}',"
        ' backfill => \'{"lot": "x", "other": "y"}\')',
    )
    assert state == "22023"  # backfill for a dimension not added
    state, _ = sqlstate_of(
        db,
        "SELECT accum.register_alter('inv', add_dimensions => '{\"wh\": \"int\"}',"
        " backfill => '{\"wh\": 1}')",
    )
    assert state == "42701"
    assert info(db, "inv")["dimensions"] == {"wh": "integer"}

    db.execute(
        "SELECT accum.register_alter('inv', add_dimensions => '{\"lot\": \"text\"}',"
        ' backfill => \'{"lot": "L0"}\')'
    )
    assert info(db, "inv")["dimensions"] == {"lot": "text", "wh": "integer"}
    assert balance(db, "inv", {"lot": "L0"}) == {"qty": 12}
    assert balance(db, "inv", {"lot": "L0", "wh": 2}) == {"qty": 7}
    assert one(db, 'SELECT accum.inv_balance(\'{"lot": "L0", "wh": 2}\', \'2025-12-31\')') == {"qty": 7}
    post_movements(db, "inv", [{"recorder": "b", "period": "2026-01-02", "wh": 1, "lot": "L1", "qty": 1}])
    assert balance(db, "inv", {"wh": 1}) == {"qty": 6}
    assert balance(db, "inv", {"lot": "L1", "wh": 1}) == {"qty": 1}
    assert problems(db, "inv") == []
    assert one(db, "SELECT count(*) FROM accum.inv_balance_cache") == 3
    # every derived level was rebuilt with the new key
    assert one(db, "SELECT count(*) FROM accum.inv_totals_day WHERE lot = 'L0'") == 2


def test_alter_high_write_on_and_off(db: Conn) -> None:
    create_register(db, "inv", {"wh": "int"}, {"qty": "numeric(10,1)"}, time_zone="Europe/Berlin")
    data = [
        {"recorder": f"r{i}", "period": f"2026-0{1 + i % 3}-1{i}", "wh": i % 2, "qty": f"{i}.5"}
        for i in range(6)
    ]
    post_movements(db, "inv", data)
    before = (balance(db, "inv"), balance(db, "inv", {"wh": 1}))

    db.execute("SELECT accum.register_alter('inv', high_write => true)")
    got = info(db, "inv")
    assert got["high_write"] is True
    assert got["tables"]["delta"] == "inv_delta"
    assert (balance(db, "inv"), balance(db, "inv", {"wh": 1})) == before
    post_movements(db, "inv", [{"recorder": "x", "period": "2026-02-01", "wh": 1, "qty": "10"}])
    assert one(db, "SELECT count(*) FROM accum.inv_delta") >= 1
    pending = one(db, "SELECT pending_rows FROM accum.register_delta_status('inv')")
    assert pending >= 1
    assert balance(db, "inv", {"wh": 1})["qty"] == before[1]["qty"] + 10
    assert problems(db, "inv") == []
    after_post = (balance(db, "inv"), balance(db, "inv", {"wh": 1}))

    # a dimension added while deltas are pending: the derived tables are rebuilt from the movements
    db.execute(
        "SELECT accum.register_alter('inv', add_dimensions => '{\"lot\": \"date\"}',"
        ' backfill => \'{"lot": "2026-01-01"}\')'
    )
    assert (balance(db, "inv"), balance(db, "inv", {"wh": 1, "lot": "2026-01-01"})) == after_post
    assert problems(db, "inv") == []
    assert info(db, "inv")["high_write"] is True
    post_movements(
        db, "inv", [{"recorder": "z", "period": "2026-03-01", "wh": 1, "lot": "2026-02-01", "qty": "0.5"}]
    )
    after_post = (balance(db, "inv"), balance(db, "inv", {"wh": 1}))
    assert problems(db, "inv") == []

    # switching off merges every pending delta first, then drops the buffer
    db.execute("SELECT accum.register_alter('inv', high_write => false)")
    got = info(db, "inv")
    assert got["high_write"] is False
    assert "delta" not in got["tables"]
    assert relations(db, "inv_delta") == set()
    assert (balance(db, "inv"), balance(db, "inv", {"wh": 1})) == after_post
    assert problems(db, "inv") == []
    assert db.execute("SELECT * FROM accum.register_delta_status()").fetchall() == []
    # writes go to the derived tables directly again
    post_movements(
        db, "inv", [{"recorder": "y", "period": "2026-02-01", "wh": 1, "lot": "2026-01-01", "qty": "1"}]
    )
    assert one(db, "SELECT sum(qty) FROM accum.inv_balance_cache WHERE wh = 1") == after_post[1]["qty"] + 1
