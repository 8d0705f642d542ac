"""Maintenance and diagnostics through SQL (SPEC §5.3, §9, §10).

register_verify, the rebuilds, stats, partitions and their maintenance, merging the delta buffer."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import Conn, create_register, one, post_movements
from helpers import recorded_movement as mv
from psycopg.types.json import Jsonb, set_json_loads

DIMS = {"warehouse": "integer", "product": "text"}
RES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)"}


def create(conn: Conn, name: str, **opts: Any) -> str:
    set_json_loads(lambda s: json.loads(s, parse_float=Decimal), conn)
    return create_register(conn, name, DIMS, RES, **opts)


def verify(conn: Conn, register: str, problems_only: bool = True) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT check_type, period, expected, actual, status, dimensions FROM accum.register_verify(%s, %s)",
        (register, problems_only),
    ).fetchall()


def reads(conn: Conn, register: str) -> list[Any]:
    return [
        one(conn, f"SELECT accum.{register}_balance()::text"),
        one(conn, f"SELECT accum.{register}_balance('{{\"warehouse\": 1}}', '2025-06-30 12:00:00+00')::text"),
        [
            r[0]
            for r in conn.execute(
                f"SELECT t::text FROM accum.{register}_turnover(NULL, NULL, NULL, %s) t",
                (Jsonb(["product", "warehouse"]),),
            )
        ],
        [
            r[0]
            for r in conn.execute(
                f"SELECT t::text FROM accum.{register}_turnover('2025-01-10 10:00:00+00',"
                " '2025-03-01 00:00:00+00') t"
            )
        ],
        [r[0] for r in conn.execute(f"SELECT m::text FROM accum.{register}_movements() m")],
    ]


DATA = [
    mv("d1", "2025-01-05T10:00", 1, "p", "1.5", "10"),
    mv("d1", "2025-01-05T11:00", 1, "p", "2", "1.25"),
    mv("d2", "2025-02-28T23:59", 2, "q", "3", "3"),
    mv("d3", "2025-03-01", 1, "q", "-1", "-1"),
    mv("d4", "2024-12-31T23:00", 1, "p", "4", "4"),
]


# ---- register_verify and the rebuilds ----------------------------------------------------------------------


def test_verify_clean_after_writes(conn: Conn) -> None:
    create(conn, "inv", time_zone="Europe/Berlin")
    post_movements(conn, "inv", DATA)
    conn.execute("SELECT accum.register_unpost('inv', 'd2')")
    conn.execute(
        "SELECT accum.register_repost('inv', 'd1', %s)",
        (Jsonb([mv("d1", "2025-01-06", 1, "p", "1.5", "10")]),),
    )
    conn.execute(
        "SELECT accum.register_post('inv', %s)", (Jsonb([mv("d5", "2025-01-05T10:00", 1, "p", "-3", "-10")]),)
    )
    assert verify(conn, "inv") == []
    rows = verify(conn, "inv", problems_only=False)
    assert {r[4] for r in rows} == {"OK"}
    cols = [c.name for c in conn.execute("SELECT * FROM accum.register_verify('inv')").description or []]
    assert cols == ["check_type", "dim_hash", "period", "expected", "actual", "status", "dimensions"]
    # one cache row per non-zero combination, one totals row per level and non-zero bucket
    assert sorted({r[0] for r in rows}) == ["balance_cache", "totals_day", "totals_month", "totals_year"]
    cache = [r for r in rows if r[0] == "balance_cache"]
    assert {json.dumps(r[5], sort_keys=True) for r in cache} == {
        '{"product": "p", "warehouse": 1}',
        '{"product": "q", "warehouse": 1}',
    }
    # expected = recomputed, actual = stored, rendered like the reads
    p1 = next(r for r in cache if r[5] == {"product": "p", "warehouse": 1})
    assert p1[2] == p1[3] == {"quantity": Decimal("2.500"), "amount": Decimal("4.00")}
    assert (str(p1[2]["quantity"]), str(p1[3]["amount"])) == ("2.500", "4.00")
    # every movement gone: no row anywhere, no false ORPHAN
    for recorder in ("d1", "d3", "d4", "d5"):
        conn.execute("SELECT accum.register_unpost('inv', %s)", (recorder,))
    assert verify(conn, "inv", problems_only=False) == []


def test_verify_finds_corruption_and_rebuilds_repair_it(conn: Conn) -> None:
    create(conn, "inv", time_zone="Europe/Berlin")
    post_movements(conn, "inv", DATA)
    before = reads(conn, "inv")
    # the owner (here the superuser) bypasses grants and can damage the derived tables
    conn.execute("UPDATE accum.inv_balance_cache SET quantity = quantity + 1 WHERE warehouse = 2")
    conn.execute(
        "DELETE FROM accum.inv_totals_month WHERE warehouse = 1 AND product = 'p' AND period = '2025-01-01'"
    )
    conn.execute(
        "INSERT INTO accum.inv_totals_day (dim_hash, period, product, warehouse, amount, quantity)"
        " SELECT dim_hash, '2025-01-07', product, warehouse, 1, 1 FROM accum.inv_totals_day LIMIT 1"
    )
    conn.execute("DELETE FROM accum.inv_balance_cache WHERE warehouse = 1 AND product = 'q'")
    conn.execute(
        "INSERT INTO accum.inv_balance_cache (dim_hash, product, warehouse, amount, quantity)"
        " VALUES (1, 'ghost', 7, 1, 0)"
    )
    problems = verify(conn, "inv")
    by_status = {(r[0], r[4]): r for r in problems}
    assert set(by_status) == {
        ("balance_cache", "MISMATCH"),
        ("balance_cache", "MISSING_IN_CACHE"),
        ("balance_cache", "ORPHAN_IN_CACHE"),
        ("totals_month", "MISSING_IN_TOTALS"),
        ("totals_day", "ORPHAN_IN_TOTALS"),
        ("dim_hash", "MISMATCH"),  # the ghost row's stored hash is not the hash of its values
    }, problems
    mismatch = by_status[("balance_cache", "MISMATCH")]
    assert (mismatch[2]["quantity"], mismatch[3]["quantity"]) == (Decimal("3.000"), Decimal("4.000"))
    assert mismatch[5] == {"product": "q", "warehouse": 2}
    missing = by_status[("totals_month", "MISSING_IN_TOTALS")]
    assert missing[1:4] == (
        date(2025, 1, 1),
        {"quantity": Decimal("3.500"), "amount": Decimal("11.25")},
        None,
    )
    orphan = by_status[("totals_day", "ORPHAN_IN_TOTALS")]
    assert (orphan[1], orphan[2]) == (date(2025, 1, 7), None)
    assert by_status[("balance_cache", "ORPHAN_IN_CACHE")][5] == {"product": "ghost", "warehouse": 7}

    written = one(conn, "SELECT accum.register_rebuild_totals('inv')")
    assert written == one(
        conn,
        "SELECT (SELECT count(*) FROM accum.inv_totals_day) + (SELECT count(*) FROM"
        " accum.inv_totals_month) + (SELECT count(*) FROM accum.inv_totals_year)",
    )
    assert {(r[0], r[4]) for r in verify(conn, "inv")} == {
        ("balance_cache", "MISMATCH"),
        ("balance_cache", "MISSING_IN_CACHE"),
        ("balance_cache", "ORPHAN_IN_CACHE"),
        ("dim_hash", "MISMATCH"),
    }
    # a rebuild of one combination repairs that combination only
    h = one(conn, "SELECT dim_hash FROM accum.inv_movements WHERE warehouse = 2 LIMIT 1")
    assert one(conn, "SELECT accum.register_rebuild_cache('inv', %s)", (h,)) == 1
    assert ("balance_cache", "MISMATCH") not in {(r[0], r[4]) for r in verify(conn, "inv")}
    assert one(conn, "SELECT accum.register_rebuild_cache('inv')") == 3
    assert verify(conn, "inv") == []
    assert reads(conn, "inv") == before


def test_rebuild_on_turnover_and_high_write(conn: Conn) -> None:
    create(conn, "sales", kind="turnover", high_write=True, totals_period="month")
    post_movements(conn, "sales", DATA)
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT accum.register_rebuild_cache('sales')")
    assert exc.value.sqlstate == "42809"
    assert (exc.value.diag.message_primary or "").startswith("sales: ")
    assert one(conn, "SELECT accum.register_merge('sales')") > 0
    post_movements(conn, "sales", [*DATA[:2], mv("d9", "2025-02-01", 3, "z", 1, 1)])
    before = reads_turnover(conn)
    assert one(conn, "SELECT pending_rows FROM accum.register_delta_status('sales')") > 0
    conn.execute("DELETE FROM accum.sales_totals_year")  # damage (owner only), with deltas pending
    found = {(r[0], r[4]) for r in verify(conn, "sales")}
    # groups with a pending delta read as that delta alone (MISMATCH), the others are missing
    assert found == {("totals_year", "MISSING_IN_TOTALS"), ("totals_year", "MISMATCH")}
    # rebuilds merge pending deltas first
    assert one(conn, "SELECT accum.register_rebuild_totals('sales')") > 0
    assert one(conn, "SELECT pending_rows FROM accum.register_delta_status('sales')") == 0
    assert verify(conn, "sales") == []
    assert reads_turnover(conn) == before


def reads_turnover(conn: Conn) -> list[Any]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT t::text FROM accum.sales_turnover('2025-01-05 10:30:00+00', NULL, NULL,"
            " '[\"warehouse\"]') t"
        )
    ]


# ---- register_stats / register_partitions / register_create_partitions ------------------------------------


def test_stats(conn: Conn) -> None:
    create(conn, "inv", time_zone="Europe/Berlin")
    create(conn, "hw", high_write=True, totals_period="year")
    post_movements(conn, "inv", DATA)
    post_movements(conn, "hw", DATA)
    conn.execute(
        "INSERT INTO accum.inv_movements (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('now', now(), 5, 'z', 1, 1)"
    )
    stats = one(conn, "SELECT accum.register_stats('inv')")
    assert set(stats) == {
        "movements_count",
        "partitions_count",
        "default_partition_rows",
        "cache_rows",
        "totals_day_rows",
        "totals_month_rows",
        "totals_year_rows",
        "delta_pending_rows",
        "delta_oldest_at",
        "table_sizes",
    }
    assert {k: v for k, v in stats.items() if k != "table_sizes"} == {
        "movements_count": 6,
        "partitions_count": 5,
        "default_partition_rows": 5,
        "cache_rows": 4,
        "totals_day_rows": 5,
        "totals_month_rows": 5,
        "totals_year_rows": 5,
        "delta_pending_rows": 0,
        "delta_oldest_at": None,
    }
    assert set(stats["table_sizes"]) == {
        "movements",
        "totals_day",
        "totals_month",
        "totals_year",
        "balance_cache",
    }
    assert all(isinstance(v, int) and v > 0 for v in stats["table_sizes"].values())

    stats = one(conn, "SELECT accum.register_stats('hw')")
    assert stats["delta_pending_rows"] > 0
    assert isinstance(stats["delta_oldest_at"], str)
    assert stats["delta_oldest_at"].endswith("+00:00")
    assert (stats["totals_day_rows"], stats["totals_month_rows"], stats["totals_year_rows"]) == (
        None,
        None,
        0,
    )
    assert set(stats["table_sizes"]) == {"movements", "totals_year", "balance_cache", "delta"}


def test_partitions_and_create_partitions(conn: Conn) -> None:
    create(conn, "inv", time_zone="Europe/Berlin")
    rows = conn.execute("SELECT * FROM accum.register_partitions('inv')").fetchall()
    cols = [c.name for c in conn.execute("SELECT * FROM accum.register_partitions('inv')").description or []]
    assert cols == ["partition_name", "from_date", "to_date", "row_count", "total_size", "is_default"]
    assert [r[5] for r in rows] == [False] * 4 + [True]
    assert rows[-1][:3] == ("inv_movements_default", None, None)
    assert [r[1] for r in rows[:4]] == sorted(r[1] for r in rows[:4])
    assert all(a[2] == b[1] for a, b in itertools.pairwise(rows[:4]))
    now = one(conn, "SELECT now()")
    assert rows[0][1] <= now < rows[0][2]
    assert rows[0][1].astimezone(UTC).hour in (22, 23)  # local midnight in Berlin

    # back-dated movements land in the default partition; writes never run DDL
    post_movements(conn, "inv", DATA)
    assert one(conn, "SELECT count(*) FROM accum.inv_movements_default") == len(DATA)
    before = reads(conn, "inv")
    assert one(conn, "SELECT accum.register_create_partitions('inv')") == 4  # 2024-12, 2025-01, -02, -03
    names = [r[0] for r in conn.execute("SELECT * FROM accum.register_partitions('inv')").fetchall()]
    assert names[:4] == [
        "inv_movements_2024_12",
        "inv_movements_2025_01",
        "inv_movements_2025_02",
        "inv_movements_2025_03",
    ]
    assert names[-1] == "inv_movements_default"
    assert one(conn, "SELECT count(*) FROM accum.inv_movements_default") == 0
    assert one(conn, "SELECT count(*) FROM accum.inv_movements_2025_01") == 2
    assert reads(conn, "inv") == before
    assert verify(conn, "inv") == []
    assert one(conn, "SELECT accum.register_create_partitions('inv')") == 0  # idempotent
    info_parts = one(conn, "SELECT accum.register_info('inv')")["partitions"]
    assert [p["name"] for p in info_parts] == names
    assert info_parts[0]["from"] == "2024-12-01T00:00:00+01:00"
    assert info_parts[0]["to"] == "2025-01-01T00:00:00+01:00"
    # later movements of a new partition's range go straight into it
    post_movements(conn, "inv", [mv("d9", "2025-01-20", 3, "p", 1)])
    assert one(conn, "SELECT count(*) FROM accum.inv_movements_2025_01") == 3
    # p_ahead: partitions up to now() + interval
    created = one(conn, "SELECT accum.register_create_partitions('inv', interval '6 months')")
    assert created == 3  # the current month and the next 3 existed already
    assert verify(conn, "inv") == []


# ---- register_merge / register_delta_status ---------------------------------------------------------------


def test_merge_and_delta_status(conn: Conn) -> None:
    create(conn, "hw1", high_write=True)
    create(conn, "hw2", high_write=True, kind="turnover")
    create(conn, "std")
    for name in ("hw1", "hw2", "std"):
        post_movements(conn, name, DATA)
    status = conn.execute("SELECT * FROM accum.register_delta_status()").fetchall()
    assert [r[0] for r in status] == ["hw1", "hw2"]
    assert all(r[1] > 0 and r[2] is not None and r[3] >= 0 for r in status)
    assert conn.execute("SELECT * FROM accum.register_delta_status('std')").fetchall() == []
    assert one(conn, "SELECT accum.register_merge('std')") == 0
    # rows younger than min_age stay
    assert one(conn, "SELECT accum.register_merge('hw1', 10000, interval '1 hour')") == 0
    pending1, pending2 = status[0][1], status[1][1]
    assert one(conn, "SELECT accum.register_merge('hw1', 1)") == 1
    assert one(conn, "SELECT accum.register_merge(NULL)") == pending1 - 1 + pending2
    assert one(conn, "SELECT accum.register_merge()") == 0
    assert conn.execute(
        "SELECT pending_rows, oldest_created_at, lag_seconds FROM accum.register_delta_status()"
    ).fetchall() == [(0, None, 0.0), (0, None, 0.0)]
    post_movements(conn, "hw1", DATA[:1])
    post_movements(conn, "std", DATA[:1])
    assert one(conn, "SELECT accum._force_delta_merge(interval '0 seconds', 5)") == 1
    for name in ("hw1", "hw2", "std"):
        assert verify(conn, name) == []
    assert one(conn, "SELECT accum.hw1_balance()::text") == one(conn, "SELECT accum.std_balance()::text")
    for query, state in [
        ("SELECT accum.register_merge('hw1', 0)", "22023"),
        ("SELECT accum.register_merge('hw1', 10, interval '-1 second')", "22023"),
        ("SELECT accum._force_delta_merge(interval '-1 second')", "22023"),
        ("SELECT accum.register_merge('nope')", "42704"),
    ]:
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(query)
        assert exc.value.sqlstate == state, query
