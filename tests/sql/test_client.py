"""RegisterClient against a real, freshly migrated database: every method of SPEC §19, errors by SQLSTATE."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from helpers import Conn, connect_as
from helpers import movement as mv
from psycopg_pool import ConnectionPool

from registers.client import RegisterClient
from registers.errors import (
    InvalidCommand,
    InvalidDefinition,
    InvalidQuery,
    PermissionDenied,
    RegisterExists,
    RegisterNotEmpty,
    RegisterNotFound,
)
from registers.models import RegisterDefinition

BERLIN = "Europe/Berlin"

INVENTORY = RegisterDefinition(
    name="inventory",
    dimensions={"warehouse": "int", "product": "integer"},
    resources={"quantity": "decimal(18,3)", "amount": "numeric(18,2)"},
    time_zone=BERLIN,
)
SALES = RegisterDefinition(
    name="sales",
    kind="turnover",
    dimensions={"channel": "text", "day": "date", "sku": "varchar(20)"},
    resources={"qty": "int"},
    totals_period="month",
)


@pytest.fixture
def client(conn: Conn) -> RegisterClient:
    return RegisterClient(conn)


@pytest.fixture
def inventory(client: RegisterClient) -> str:
    assert client.create_register(INVENTORY) is True
    return INVENTORY.name


@pytest.fixture
def sales(client: RegisterClient) -> str:
    client.create_register(SALES)
    return SALES.name


# ---- registry -------------------------------------------------------------------------------------------


def test_create_info_list(client: RegisterClient, inventory: str) -> None:
    info = client.register_info(inventory)
    assert info.definition() == INVENTORY
    assert info.dimensions == {"product": "integer", "warehouse": "integer"}
    assert info.resources == {"amount": "numeric(18,2)", "quantity": "numeric(18,3)"}
    assert (info.kind, info.totals_period, info.partition_by, info.time_zone) == (
        "balance",
        "day",
        "month",
        BERLIN,
    )
    assert info.movements_count == 0
    assert info.tables.movements == "inventory_movements"
    assert info.tables.balance_cache == "inventory_balance_cache"
    assert info.tables.totals_day
    assert info.tables.totals_month
    assert info.tables.totals_year
    assert info.tables.delta is None
    regular = [p for p in info.partitions if not p.is_default]
    assert len(regular) >= 4  # the current period and the next 3 (SPEC §5.3)
    assert info.partitions[-1].is_default
    assert [p.from_ for p in regular] == sorted(p.from_ for p in regular if p.from_ is not None)

    (row,) = client.list_registers()
    assert (row.name, row.kind, row.dimensions, row.resources, row.movements_count, row.high_write) == (
        "inventory",
        "balance",
        2,
        2,
        0,
        False,
    )
    assert row.time_zone == BERLIN


def test_create_if_not_exists(client: RegisterClient, inventory: str) -> None:
    same = INVENTORY.model_copy(update={"time_zone": "europe/berlin"})
    assert client.create_register(same, if_not_exists=True) is False
    with pytest.raises(RegisterExists) as plain:
        client.create_register(INVENTORY)
    assert plain.value.sqlstate == "42P07"
    other = RegisterDefinition.model_validate(
        {**INVENTORY.model_dump(), "resources": {"quantity": "integer"}}
    )
    with pytest.raises(RegisterExists, match="another definition"):
        client.create_register(other, if_not_exists=True)


@pytest.mark.parametrize(
    ("overrides", "sqlstate"),
    [
        ({"dimensions": {"select": "integer"}}, "42602"),  # reserved keyword: only the engine knows them
        ({"time_zone": "PST"}, "22023"),
        ({"time_zone": "UTC+3"}, "22023"),
        ({"time_zone": "Mars/Olympus"}, "22023"),
    ],
)
def test_create_rejected_by_engine(client: RegisterClient, overrides: dict[str, Any], sqlstate: str) -> None:
    defn = RegisterDefinition.model_validate({**INVENTORY.model_dump(), **overrides})
    with pytest.raises(InvalidDefinition) as info:
        client.create_register(defn)
    assert info.value.sqlstate == sqlstate
    assert info.value.register == "inventory"
    assert client.list_registers() == []


def test_time_zone_matched_case_insensitively(client: RegisterClient) -> None:
    client.create_register(INVENTORY.model_copy(update={"time_zone": "europe/BERLIN"}))
    assert client.register_info("inventory").time_zone == BERLIN


def test_alter(client: RegisterClient, inventory: str) -> None:
    client.post(inventory, "r1", [mv("2026-04-18", 1, 10, "1.5", "10")])
    client.alter_register(inventory, add_resources={"weight": "numeric(10,1)"})
    assert client.balance(inventory) == {
        "amount": Decimal("10.00"),
        "quantity": Decimal("1.500"),
        "weight": 0,
    }
    client.alter_register(inventory, add_dimensions={"lot": "text"}, backfill={"lot": "none"})
    info = client.register_info(inventory)
    assert info.dimensions["lot"] == "text"
    assert info.resources["weight"] == "numeric(10,1)"
    (row,) = client.movements(inventory)
    assert row.dimensions == {"lot": "none", "product": 10, "warehouse": 1}
    assert client.balance(inventory, {"lot": "none"})["quantity"] == Decimal("1.5")
    assert client.verify(inventory) == []

    with pytest.raises(InvalidDefinition) as missing:
        client.alter_register(inventory, add_dimensions={"batch": "integer"})
    assert missing.value.sqlstate == "22023"
    with pytest.raises(InvalidDefinition) as dup:
        client.alter_register(inventory, add_resources={"quantity": "integer"})
    assert dup.value.sqlstate == "42701"
    with pytest.raises(RegisterNotFound):
        client.alter_register("nope", add_resources={"x": "integer"})


def test_alter_high_write(client: RegisterClient, inventory: str) -> None:
    client.alter_register(inventory, high_write=True)
    info = client.register_info(inventory)
    assert info.high_write is True
    assert info.tables.delta
    client.post(inventory, "r1", [mv("2026-04-18", 1, 10, 2)])
    client.alter_register(inventory, high_write=False)  # merges pending deltas first
    assert client.register_info(inventory).high_write is False
    assert client.balance(inventory)["quantity"] == 2
    assert client.verify(inventory) == []


def test_drop(client: RegisterClient, inventory: str, sales: str) -> None:
    client.post(inventory, "r1", [mv("2026-04-18", 1, 10, 1)])
    with pytest.raises(RegisterNotEmpty) as info:
        client.drop_register(inventory)
    assert info.value.sqlstate == "55000"
    client.drop_register(inventory, force=True)
    client.drop_register(sales)  # empty: no force needed
    assert client.list_registers() == []
    with pytest.raises(RegisterNotFound) as gone:
        client.drop_register(inventory)
    assert gone.value.sqlstate == "42704"
    with pytest.raises(RegisterNotFound):
        client.balance(inventory)  # the cached zone went with the drop


def test_unknown_register(client: RegisterClient) -> None:
    for call in (
        lambda: client.register_info("nope"),
        lambda: client.balance("nope"),
        lambda: client.turnover("nope"),
        lambda: client.movements("nope"),
        lambda: client.post("nope", "r", [{"period": "2026-01-01"}]),
        lambda: client.unpost("nope", "r"),
        lambda: client.verify("nope"),
        lambda: client.stats("nope"),
        lambda: client.partitions("nope"),
        lambda: client.rebuild("nope"),
    ):
        with pytest.raises(RegisterNotFound) as info:
            call()
        assert info.value.register == "nope"
        assert info.value.message.startswith("nope: ")
    with pytest.raises(InvalidQuery) as bad:
        client.balance("Not A Name")
    assert bad.value.sqlstate == "42602"


# ---- writes ---------------------------------------------------------------------------------------------


def test_post_balance_exact_decimals(client: RegisterClient, inventory: str) -> None:
    n = client.post(
        inventory,
        "receipt:1",
        [mv("2026-04-18", 1, 10, Decimal("100.500"), "5000"), mv("2026-04-18T10:15:00", 1, 11, "0.001", 1)],
    )
    assert n == 2
    assert client.post(inventory, "receipt:1", []) == 0
    assert client.balance(inventory) == {"amount": Decimal("5001.00"), "quantity": Decimal("100.501")}
    assert str(client.balance(inventory)["amount"]) == "5001.00"  # numeric(18,2): exactly 2 decimals (§8)
    assert client.balance(inventory, {"product": 10}) == {
        "amount": Decimal("5000"),
        "quantity": Decimal("100.5"),
    }
    assert client.balance(inventory, {"warehouse": 2}) == {"amount": 0, "quantity": 0}
    big = Decimal("999999999999999.999")
    client.post(inventory, "receipt:2", [mv("2026-04-18", 3, 1, big, "0.10")])
    assert client.balance(inventory, {"warehouse": 3})["quantity"] == big


def test_post_rejections(client: RegisterClient, inventory: str) -> None:
    with pytest.raises(InvalidCommand) as nan:
        client.post(inventory, "r", [mv("2026-04-18", 1, 1, Decimal("NaN"))])
    assert (nan.value.sqlstate, nan.value.path) == ("22023", "movements[0].quantity")
    with pytest.raises(InvalidCommand) as scale:
        client.post(inventory, "r", [mv("2026-04-18", 1, 1, "1"), mv("2026-04-18", 1, 1, "1.2345")])
    assert scale.value.sqlstate == "22023"
    assert scale.value.path is not None
    assert scale.value.path.endswith("[1].quantity")
    with pytest.raises(InvalidCommand) as unknown:
        client.post(inventory, "r", [{**mv("2026-04-18", 1, 1, 1), "colour": "red"}])
    assert unknown.value.sqlstate == "42703"
    with pytest.raises(InvalidCommand) as period:
        client.post(inventory, "r", [mv("now", 1, 1, 1)])
    assert period.value.sqlstate == "22007"
    with pytest.raises(InvalidCommand) as other:
        client.post(inventory, "r", [{**mv("2026-04-18", 1, 1, 1), "recorder": "x"}])
    assert other.value.path == "movements[0].recorder"
    assert client.movements(inventory) == []


def test_post_periods_from_python_values(client: RegisterClient, inventory: str) -> None:
    berlin_noon = datetime(2026, 4, 18, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    client.post(
        inventory,
        "r1",
        [
            mv(date(2026, 4, 18), 1, 1, 1),  # local midnight in Berlin
            mv(datetime(2026, 4, 18, 12, 0), 1, 1, 1),  # naive: Berlin wall time
            mv(berlin_noon, 1, 1, 1),
        ],
    )
    periods = [m.period for m in client.movements(inventory)]
    assert periods == [
        datetime(2026, 4, 17, 22, 0, tzinfo=UTC),
        datetime(2026, 4, 18, 10, 0, tzinfo=UTC),
        datetime(2026, 4, 18, 10, 0, tzinfo=UTC),
    ]
    assert periods[0].utcoffset() == timedelta(hours=2)  # rendered with the register zone's offset


def test_write_is_savepoint_in_caller_transaction(client: RegisterClient, conn: Conn, inventory: str) -> None:
    with conn.transaction():
        client.post(inventory, "r1", [mv("2026-04-18", 1, 1, 1)])
        with pytest.raises(InvalidCommand):
            client.post(inventory, "r2", [mv("2026-04-18", 1, 1, "x")])
        client.post(inventory, "r3", [mv("2026-04-18", 1, 1, 2)])
    assert [m.recorder for m in client.movements(inventory)] == ["r1", "r3"]


def test_non_autocommit_connection_commits_writes(db_dsn: str, conn: Conn, inventory: str) -> None:
    idle = psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(db_dsn) as other:
        mine = RegisterClient(other)
        assert mine.balance(inventory)["quantity"] == 0
        assert other.info.transaction_status == idle  # a read leaves no transaction open
        mine.post(inventory, "r1", [mv("2026-04-18", 1, 1, 1)])
        assert other.info.transaction_status == idle
    assert RegisterClient(conn).balance(inventory)["quantity"] == 1


def test_repost_unpost(client: RegisterClient, inventory: str) -> None:
    client.post(inventory, "doc", [mv("2026-04-18", 1, 1, 5), mv("2026-04-18", 1, 2, 5)])
    assert client.repost(inventory, "doc", [mv("2026-04-19", 1, 1, 7)]) == 1
    assert client.balance(inventory)["quantity"] == 7
    assert client.repost(inventory, "doc", [{**mv("2026-04-19", 1, 1, 3), "recorder": "doc"}]) == 1
    with pytest.raises(InvalidCommand) as mismatch:
        client.repost(inventory, "doc", [{**mv("2026-04-19", 1, 1, 3), "recorder": "other"}])
    assert mismatch.value.sqlstate == "22023"
    assert client.repost(inventory, "doc", []) == 0
    assert client.movements(inventory) == []
    client.post(inventory, "doc", [mv("2026-04-18", 1, 1, 5)])
    assert client.unpost(inventory, "doc") == 1
    assert client.unpost(inventory, "doc") == 0
    assert client.balance(inventory)["quantity"] == 0
    assert client.verify(inventory) == []


def test_recorder_types(client: RegisterClient) -> None:
    dims, res = {"k": "integer"}, {"v": "integer"}
    client.create_register(
        RegisterDefinition(name="by_id", dimensions=dims, resources=res, recorder_type="bigint")
    )
    client.create_register(
        RegisterDefinition(name="by_uuid", dimensions=dims, resources=res, recorder_type="uuid")
    )
    assert client.post("by_id", 42, [{"period": "2026-04-18", "k": 1, "v": 1}]) == 1
    (row,) = client.movements("by_id", recorder=42)
    assert row.recorder == 42
    assert client.unpost("by_id", 42) == 1
    doc = UUID("c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e")
    assert client.post("by_uuid", doc, [{"period": "2026-04-18", "k": 1, "v": 1}]) == 1
    assert client.repost("by_uuid", str(doc).upper(), [{"period": "2026-04-18", "k": 1, "v": 2}]) == 1
    assert client.balance("by_uuid") == {"v": 2}
    with pytest.raises(InvalidCommand) as bad:
        client.unpost("by_uuid", "not-a-uuid")
    assert bad.value.sqlstate in ("22023", "22P02")


def test_apply(client: RegisterClient, inventory: str) -> None:
    commands: list[dict[str, Any]] = [
        {"op": "post", "register": inventory, "recorder": "a", "movements": [mv("2026-04-18", 1, 1, "1.5")]},
        {"op": "repost", "register": inventory, "recorder": "b", "movements": [mv("2026-04-18", 1, 1, 2)]},
        {"op": "post", "register": "nope", "recorder": "c", "movements": [mv("2026-04-18", 1, 1, 2)]},
        {
            "op": "post",
            "register": inventory,
            "recorder": "d",
            "movements": [mv("2026-04-18", 1, 1, "0.0001")],
        },
        {"op": "unpost", "register": inventory, "recorder": "a"},
    ]
    with pytest.raises(RegisterNotFound) as abort:
        client.apply(commands)
    assert abort.value.path is not None
    assert abort.value.path.startswith("commands[2]")
    assert client.movements(inventory) == []

    results = client.apply(commands, on_error="skip")
    assert [(r.ord, r.outcome, r.affected) for r in results] == [
        (0, "applied", 1),
        (1, "applied", 1),
        (2, "rejected", None),
        (3, "rejected", None),
        (4, "applied", 1),
    ]
    assert (results[2].sqlstate, results[3].sqlstate) == ("42704", "22023")
    assert results[3].message is not None
    assert "commands[3]." in results[3].message
    assert results[0].sqlstate is None
    assert results[0].message is None
    assert client.balance(inventory)["quantity"] == 2
    with pytest.raises(InvalidCommand) as bad:
        client.apply(
            [{"op": "post", "register": inventory, "recorder": "x", "movements": [{"q": float("inf")}]}]
        )
    assert bad.value.path == "commands[0].movements[0].q"


# ---- reads ----------------------------------------------------------------------------------------------


def test_read_bounds_in_register_zone(client: RegisterClient, conn: Conn, inventory: str) -> None:
    conn.execute("SET TimeZone = 'America/New_York'")  # the session zone must play no part
    client.post(inventory, "r", [mv("2026-04-18", 1, 1, 1)])  # 2026-04-17T22:00Z
    q = "quantity"
    assert client.balance(inventory, at=date(2026, 4, 18))[q] == 1  # period <= at, both Berlin midnight
    assert client.balance(inventory, at=date(2026, 4, 17))[q] == 0
    assert client.balance(inventory, at=datetime(2026, 4, 17, 23, 59))[q] == 0  # naive = Berlin wall time
    assert client.balance(inventory, at=datetime(2026, 4, 17, 22, 0, tzinfo=UTC))[q] == 1
    assert client.balance(inventory, at=datetime(2026, 4, 17, 21, 59, 59, 999999, tzinfo=UTC))[q] == 0
    assert client.balance(inventory, at="2026-04-17T23:59")[q] == 0
    assert client.balance(inventory, at="2026-04-17T23:59Z")[q] == 1
    assert client.balance(inventory, at="2026-04-18T00:00+02:00")[q] == 1
    assert client.balance(inventory, at="2026-04-18 00:00:00.000001+02")[q] == 1
    with pytest.raises(InvalidQuery) as bad:
        client.balance(inventory, at="yesterday")
    assert bad.value.sqlstate == "22007"
    with pytest.raises(InvalidQuery) as impossible:
        client.balance(inventory, at="2026-02-30")
    assert impossible.value.sqlstate == "22008"


def test_balance_filters(client: RegisterClient, inventory: str) -> None:
    client.post(
        inventory, "r", [mv("2026-04-18", 1, 1, 1), mv("2026-04-18", 2, 1, 2), mv("2026-04-18", 2, 2, 4)]
    )
    assert client.balance(inventory, {"warehouse": 2})["quantity"] == 6
    assert client.balance(inventory, {"warehouse": "2", "product": 2})["quantity"] == 4
    assert client.balance(inventory, {})["quantity"] == 7
    with pytest.raises(InvalidQuery) as unknown:
        client.balance(inventory, {"colour": 1})
    assert unknown.value.sqlstate == "42703"
    with pytest.raises(InvalidQuery) as null:
        client.balance(inventory, {"warehouse": None})
    assert null.value.sqlstate == "22004"
    with pytest.raises(InvalidQuery) as nan:
        client.balance(inventory, {"warehouse": Decimal("NaN")})
    assert (nan.value.sqlstate, nan.value.path) == ("22023", "dimensions.warehouse")


def test_turnover(client: RegisterClient, sales: str) -> None:
    client.post(
        sales,
        "s1",
        [
            {"period": "2026-03-31T23:59:59", "channel": "web", "day": "2026-03-31", "sku": "a", "qty": 1},
            {"period": "2026-04-01", "channel": "web", "day": "2026-04-01", "sku": "a", "qty": 2},
            {"period": "2026-04-15T12:00", "channel": "shop", "day": date(2026, 4, 15), "sku": "b", "qty": 4},
            {"period": "2026-05-01", "channel": "shop", "day": "2026-05-01", "sku": "b", "qty": -4},
        ],
    )
    (all_rows,) = client.turnover(sales)
    assert all_rows.group == {}
    assert all_rows.resources == {"qty": Decimal(3)}
    (april,) = client.turnover(sales, date(2026, 4, 1), datetime(2026, 4, 30, 23, 59, 59, 999999))
    assert april.resources == {"qty": 6}
    (inclusive,) = client.turnover(sales, "2026-04-01", "2026-05-01")
    assert inclusive.resources == {"qty": 2}  # both bounds inclusive: 2 + 4 - 4
    (empty,) = client.turnover(sales, "2027-01-01", "2026-01-01")
    assert empty.resources == {"qty": 0}
    by_channel = client.turnover(sales, group_by=["channel"])
    assert [(r.group, r.resources["qty"]) for r in by_channel] == [
        ({"channel": "web"}, Decimal(3))
    ]  # shop nets to 0
    by_day = client.turnover(sales, end="2026-04-30", group_by=["day", "channel"])
    # SPEC §8 orders groups "by group values"; which key leads is not fixed, so compare as a set.
    assert sorted((r.group["day"], r.group["channel"], r.resources["qty"]) for r in by_day) == [
        (date(2026, 3, 31), "web", Decimal(1)),
        (date(2026, 4, 1), "web", Decimal(2)),
        (date(2026, 4, 15), "shop", Decimal(4)),
    ]
    assert all(list(r.group) == ["day", "channel"] for r in by_day)  # keys in group_by order
    (filtered,) = client.turnover(sales, dimensions={"sku": "b"}, end=date(2026, 4, 30))
    assert filtered.resources == {"qty": 4}
    assert len(client.turnover(sales, group_by=[])) == 1
    with pytest.raises(InvalidQuery) as unknown:
        client.turnover(sales, group_by=["colour"])
    assert unknown.value.sqlstate == "42703"
    with pytest.raises(InvalidQuery) as dup:
        client.turnover(sales, group_by=["sku", "sku"])
    assert dup.value.sqlstate == "22023"
    with pytest.raises(InvalidQuery) as turnover_balance:
        client.balance(sales)
    assert turnover_balance.value.sqlstate == "42809"


def test_movements(client: RegisterClient, inventory: str) -> None:
    client.post(inventory, "a", [mv("2026-04-18T10:00", 1, 1, "1.25", "3.5")])
    client.post(inventory, "b", [mv("2026-04-19", 2, 1, 2), mv("2026-04-17", 1, 2, 3)])
    rows = client.movements(inventory)
    assert [(r.recorder, r.period.date()) for r in rows] == [
        ("b", date(2026, 4, 17)),  # rendered with Berlin's offset, so the local date is kept
        ("a", date(2026, 4, 18)),
        ("b", date(2026, 4, 19)),
    ]
    first_a = rows[1]
    assert first_a.dimensions == {"product": 1, "warehouse": 1}
    assert first_a.resources == {"amount": Decimal("3.50"), "quantity": Decimal("1.250")}
    assert str(first_a.resources["quantity"]) == "1.250"
    assert first_a.id > 0
    assert first_a.dim_hash != 0
    assert first_a.recorded_at.tzinfo is not None
    assert [r.recorder for r in client.movements(inventory, recorder="b")] == ["b", "b"]
    assert [r.dimensions["warehouse"] for r in client.movements(inventory, dimensions={"warehouse": 2})] == [
        2
    ]
    ranged = client.movements(inventory, start=date(2026, 4, 18), end="2026-04-19")
    assert [r.recorder for r in ranged] == ["a", "b"]


def test_result_json_keeps_caller_adapters(client: RegisterClient, conn: Conn, inventory: str) -> None:
    client.post(inventory, "r", [mv("2026-04-18", 1, 1, "1.5")])
    assert client.balance(inventory)["quantity"] == Decimal("1.5")
    row = conn.execute("SELECT '{\"x\": 1.5}'::jsonb").fetchone()
    assert row is not None
    assert isinstance(row[0]["x"], float)


# ---- merging and maintenance ----------------------------------------------------------------------------


def test_verify_and_rebuild(client: RegisterClient, conn: Conn, inventory: str) -> None:
    client.post(inventory, "r", [mv("2026-04-18", 1, 1, 1), mv("2026-05-02", 1, 2, 2)])
    assert client.verify(inventory) == []
    ok = client.verify(inventory, problems_only=False)
    assert ok
    assert {r.status for r in ok} == {"OK"}
    assert {r.check_type for r in ok} >= {"balance_cache", "totals_day", "totals_month", "totals_year"}
    # Damage the derived tables as the owner would by mistake (the test connects as superuser).
    conn.execute("DELETE FROM accum.inventory_balance_cache WHERE product = 1")
    conn.execute("UPDATE accum.inventory_totals_month SET quantity = quantity + 1 WHERE product = 2")
    problems = client.verify(inventory)
    statuses = {(r.check_type, r.status) for r in problems}
    assert ("balance_cache", "MISSING_IN_CACHE") in statuses
    assert ("totals_month", "MISMATCH") in statuses
    missing = next(r for r in problems if r.status == "MISSING_IN_CACHE")
    assert missing.dimensions == {"product": 1, "warehouse": 1}
    assert missing.expected == {"amount": 0, "quantity": 1} or missing.expected == {"quantity": 1}
    mismatch = next(r for r in problems if r.status == "MISMATCH")
    assert mismatch.period == date(2026, 5, 1)
    assert mismatch.actual is not None
    assert mismatch.actual["quantity"] == 3
    assert client.rebuild(inventory, totals=False) >= 1
    assert client.rebuild(inventory) >= 2
    assert client.verify(inventory) == []


def test_rebuild_turnover_skips_cache(client: RegisterClient, sales: str) -> None:
    client.post(
        sales, "s", [{"period": "2026-04-18", "channel": "web", "day": "2026-04-18", "sku": "a", "qty": 1}]
    )
    assert client.rebuild(sales) >= 1
    assert client.rebuild(sales, totals=False) == 0


def test_high_write_merge_and_delta_status(client: RegisterClient) -> None:
    client.create_register(
        RegisterDefinition(
            name="accounts",
            dimensions={"account": "text", "currency": "text"},
            resources={"amount": "numeric(18,2)"},
            high_write=True,
        )
    )
    assert client.merge("accounts") == 0
    client.post(
        "accounts", "t1", [{"period": "2026-04-18", "account": "a", "currency": "EUR", "amount": "10.00"}]
    )
    client.post(
        "accounts", "t2", [{"period": "2026-04-18", "account": "a", "currency": "EUR", "amount": "-2.50"}]
    )
    (status,) = client.delta_status("accounts")
    assert status.register_name == "accounts"
    assert status.pending_rows >= 1
    assert status.oldest_created_at is not None
    assert status.lag_seconds >= 0
    assert [s.register_name for s in client.delta_status()] == ["accounts"]
    assert client.balance("accounts") == {"amount": Decimal("7.50")}  # pending deltas included
    assert client.stats("accounts").delta_pending_rows == status.pending_rows
    assert client.merge("accounts", min_age=timedelta(hours=1)) == 0
    assert client.merge("accounts", max_rows=1) == 1
    assert client.merge() == status.pending_rows - 1
    (after,) = client.delta_status("accounts")
    assert (after.pending_rows, after.oldest_created_at, after.lag_seconds) == (0, None, 0)
    assert client.balance("accounts") == {"amount": Decimal("7.50")}
    assert client.verify("accounts") == []
    with pytest.raises(InvalidCommand) as bad:
        client.merge("accounts", max_rows=0)
    assert bad.value.sqlstate == "22023"


def test_stats_partitions(client: RegisterClient, inventory: str) -> None:
    client.post(inventory, "old", [mv("2001-01-15", 1, 1, 1)])  # no partition that far back: default
    stats = client.stats(inventory)
    assert (stats.movements_count, stats.default_partition_rows, stats.cache_rows) == (1, 1, 1)
    assert (stats.totals_day_rows, stats.totals_month_rows, stats.totals_year_rows) == (1, 1, 1)
    assert stats.table_sizes.get("movements", 0) > 0
    parts = client.partitions(inventory)
    assert parts[-1].is_default
    assert parts[-1].partition_name == "inventory_movements_default"
    assert stats.partitions_count in (len(parts), len(parts) - 1)
    regular = [p for p in parts if not p.is_default]
    assert all(p.from_date is not None and p.to_date is not None and p.from_date < p.to_date for p in regular)
    made = client.create_partitions(inventory, periods=6)
    assert made >= 3  # 3 more ahead, and one for January 2001 with the default partition's row
    assert client.create_partitions(inventory, periods=6) == 0
    names = [p.partition_name for p in client.partitions(inventory)]
    assert "inventory_movements_2001_01" in names
    assert client.stats(inventory).default_partition_rows == 0
    assert client.balance(inventory)["quantity"] == 1
    assert client.create_partitions(inventory, ahead=timedelta(days=400)) >= 1


# ---- pool -----------------------------------------------------------------------------------------------


@pytest.fixture
def pool(db_dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(db_dsn, min_size=1, max_size=1, open=True) as p:
        yield p


def test_pool(pool: ConnectionPool[Any]) -> None:
    client = RegisterClient(pool)
    client.create_register(INVENTORY)
    assert client.post("inventory", "r", [mv("2026-04-18", 1, 1, "2.5")]) == 1
    assert client.balance("inventory", at=date(2026, 4, 18)) == {"amount": 0, "quantity": Decimal("2.5")}
    (turnover,) = client.turnover("inventory", start=date(2026, 4, 1))
    assert turnover.resources["quantity"] == Decimal("2.5")
    with pytest.raises(InvalidCommand):
        client.post("inventory", "r", [mv("2026-04-18", 1, 1, "x")])
    assert client.unpost("inventory", "r") == 1  # the pool's single connection is usable again


# ---- group roles ----------------------------------------------------------------------------------------


def test_writer_and_reader_roles(client: RegisterClient, db_dsn: str, inventory: str) -> None:
    with connect_as(db_dsn, "t_writer") as writer_conn, connect_as(db_dsn, "t_reader") as reader_conn:
        writer, reader = RegisterClient(writer_conn), RegisterClient(reader_conn)
        assert writer.post(inventory, "w", [mv("2026-04-18", 1, 1, "1.5")]) == 1
        assert reader.balance(inventory, at=date(2026, 4, 18))["quantity"] == Decimal("1.5")
        assert [r.name for r in reader.list_registers()] == ["inventory"]
        assert reader.verify(inventory) == []
        with pytest.raises(PermissionDenied) as denied:
            reader.post(inventory, "r", [mv("2026-04-18", 1, 1, 1)])
        assert denied.value.sqlstate == "42501"
        with pytest.raises(PermissionDenied):
            writer.drop_register(inventory, force=True)


@pytest.mark.parametrize("name", ["b", "d", "fresh", "qty"])
@pytest.mark.parametrize("role", ["dimension", "resource"])
def test_column_names_do_not_clash_with_engine_internals(
    client: RegisterClient, name: str, role: str
) -> None:
    """Any valid column name works (SPEC §4.2), also short ones the engine's SQL might use as aliases."""
    dims, res = (
        ({name: "integer"}, {"zz_res": "integer"})
        if role == "dimension"
        else ({"zz_dim": "integer"}, {name: "integer"})
    )
    client.create_register(RegisterDefinition(name="names", dimensions=dims, resources=res, high_write=True))
    movement = {"period": "2026-04-18", **dict.fromkeys(dims, 1), **dict.fromkeys(res, 1)}
    client.post("names", "a", [movement, movement])
    assert client.verify("names") == []
    assert client.merge("names") >= 1
    client.alter_register("names", high_write=False)
    assert client.verify("names") == []
    assert client.balance("names") == {k: 2 for k in res}
