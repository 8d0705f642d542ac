"""Register definitions: what SPEC §4.1-4.3 accepts, canonicalises and rejects, checked without a database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from registers.models import (
    ApplyResult,
    DeltaStatus,
    RegisterDefinition,
    RegisterInfo,
    RegisterStats,
    VerifyRow,
    canonical_type,
)


def defn(**overrides: Any) -> RegisterDefinition:
    data: dict[str, Any] = {
        "name": "inventory",
        "dimensions": {"warehouse": "integer", "product": "integer"},
        "resources": {"quantity": "numeric(18,3)"},
    }
    data.update(overrides)
    return RegisterDefinition.model_validate(data)


CANONICAL = [
    ("smallint", "smallint"),
    ("int2", "smallint"),
    ("integer", "integer"),
    ("int", "integer"),
    ("int4", "integer"),
    ("bigint", "bigint"),
    ("int8", "bigint"),
    ("  INT  ", "integer"),
    ("numeric(10,2)", "numeric(10,2)"),
    ("decimal(10,2)", "numeric(10,2)"),
    ("NUMERIC( 10 , 2 )", "numeric(10,2)"),
    ("numeric(12)", "numeric(12,0)"),
    ("decimal(12)", "numeric(12,0)"),
    ("numeric", "numeric"),
    ("decimal", "numeric"),
    ("numeric(1000,1000)", "numeric(1000,1000)"),
    ("numeric(1,0)", "numeric(1,0)"),
    ("text", "text"),
    ("varchar(20)", "varchar(20)"),
    ("character varying(20)", "varchar(20)"),
    ("Character  Varying(1024)", "varchar(1024)"),
    ("uuid", "uuid"),
    ("date", "date"),
    ("boolean", "boolean"),
    ("bool", "boolean"),
]


@pytest.mark.parametrize(("declared", "canonical"), CANONICAL)
def test_canonical_type(declared: str, canonical: str) -> None:
    assert canonical_type(declared).canonical == canonical


@pytest.mark.parametrize(
    "declared",
    [
        "float",
        "real",
        "double precision",
        "float8",
        "money",
        "varchar",
        "character varying",
        "varchar(0)",
        "varchar(1025)",
        "numeric(0)",
        "numeric(1001)",
        "numeric(10,11)",
        "numeric(10,-1)",
        "timestamptz",
        "text[]",
        "integer; drop table x",
        "",
        "serial",
        "char(3)",
    ],
)
def test_type_outside_allow_list(declared: str) -> None:
    with pytest.raises(ValueError, match=r"not allowed|precision|scale|length"):
        canonical_type(declared)


def test_definition_canonicalises_and_sorts() -> None:
    d = defn(
        dimensions={
            "wh": "int4",
            "amount_key": "decimal(10,2)",
            "flag": "bool",
            "label": "character varying(20)",
        },
        resources={"qty": "numeric(12)", "total": "NUMERIC", "n": "int8"},
    )
    assert d.dimensions == {
        "amount_key": "numeric(10,2)",
        "flag": "boolean",
        "label": "varchar(20)",
        "wh": "integer",
    }
    assert list(d.dimensions) == sorted(d.dimensions)
    assert d.resources == {"n": "bigint", "qty": "numeric(12,0)", "total": "numeric"}


def test_defaults() -> None:
    d = defn()
    assert (d.kind, d.totals_period, d.partition_by, d.high_write, d.time_zone, d.recorder_type) == (
        "balance",
        "day",
        "month",
        False,
        "UTC",
        "text",
    )


def test_frozen_and_extra_forbidden() -> None:
    d = defn()
    with pytest.raises(ValidationError):
        d.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        defn(colour="blue")


def test_ledger_is_not_supported_yet() -> None:
    with pytest.raises(ValidationError, match="ledger' is not supported yet"):
        defn(kind="ledger")


BAD = [
    pytest.param({"name": "Inventory"}, "register name", id="name-upper"),
    pytest.param({"name": "1inv"}, "register name", id="name-digit-first"),
    pytest.param({"name": "_inv"}, "register name", id="name-underscore-first"),
    pytest.param({"name": "in-v"}, "register name", id="name-dash"),
    pytest.param({"name": ""}, "register name", id="name-empty"),
    pytest.param({"name": "a" * 33}, "register name", id="name-33"),
    pytest.param({"dimensions": {"Warehouse": "integer"}}, "dimension name", id="dim-upper"),
    pytest.param({"dimensions": {"a" * 41: "integer"}}, "dimension name", id="dim-41"),
    pytest.param({"resources": {"q-ty": "integer"}}, "resource name", id="res-dash"),
    pytest.param({"dimensions": {"period": "integer"}}, "reserved", id="dim-reserved-period"),
    pytest.param({"resources": {"recorder": "integer"}}, "reserved", id="res-reserved-recorder"),
    pytest.param({"dimensions": {"dim_hash": "bigint"}}, "reserved", id="dim-reserved-dim-hash"),
    pytest.param({"resources": {"movement_type": "integer"}}, "reserved", id="res-reserved-movement-type"),
    pytest.param(
        {"dimensions": {"x": "integer"}, "resources": {"x": "integer"}},
        "both dimension and resource",
        id="dup",
    ),
    pytest.param({"dimensions": {}}, "1..16 dimensions", id="no-dims"),
    pytest.param({"dimensions": {f"d{i}": "integer" for i in range(17)}}, "1..16 dimensions", id="17-dims"),
    pytest.param({"resources": {}}, "1..32 resources", id="no-res"),
    pytest.param({"resources": {f"r{i}": "integer" for i in range(33)}}, "1..32 resources", id="33-res"),
    pytest.param({"dimensions": {"d": "numeric"}}, "resources only", id="dim-plain-numeric"),
    pytest.param({"dimensions": {"d": "numeric(12)"}}, "resources only", id="dim-numeric-p"),
    pytest.param({"resources": {"r": "text"}}, "dimensions only", id="res-text"),
    pytest.param({"resources": {"r": "varchar(3)"}}, "dimensions only", id="res-varchar"),
    pytest.param({"resources": {"r": "uuid"}}, "dimensions only", id="res-uuid"),
    pytest.param({"resources": {"r": "date"}}, "dimensions only", id="res-date"),
    pytest.param({"resources": {"r": "bool"}}, "dimensions only", id="res-bool"),
    pytest.param({"resources": {"r": "float8"}}, "not allowed", id="res-float"),
    pytest.param({"dimensions": {"d": 5}}, "valid string", id="type-not-string"),
    pytest.param({"kind": "ledgers"}, "balance", id="kind-unknown"),
    pytest.param({"totals_period": "week"}, "day", id="totals-week"),
    pytest.param({"partition_by": "week"}, "quarter", id="partition-week"),
    pytest.param({"recorder_type": "integer"}, "bigint", id="recorder-integer"),
    pytest.param({"high_write": "yes"}, "boolean", id="high-write-string"),
    pytest.param({"time_zone": ""}, "time_zone", id="zone-empty"),
    pytest.param({"time_zone": "localtime"}, "time_zone", id="zone-localtime"),
    pytest.param({"time_zone": "posixrules"}, "time_zone", id="zone-posixrules"),
    pytest.param({"time_zone": "Factory"}, "time_zone", id="zone-factory"),
    pytest.param({"time_zone": "posix/Europe/Berlin"}, "time_zone", id="zone-posix"),
]


@pytest.mark.parametrize(("overrides", "problem"), BAD)
def test_definition_rejected(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        defn(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "a"},
        {"name": "a" * 32},
        {"name": "r2_d2"},
        {"dimensions": {"a" * 40: "integer"}},
        {"dimensions": {f"d{i}": "integer" for i in range(16)}},
        {"resources": {f"r{i}": "integer" for i in range(32)}},
        {"dimensions": {"ok_id": "uuid", "day": "date", "flag": "boolean", "code": "text"}},
        {"kind": "turnover", "totals_period": "year", "partition_by": "quarter"},
        {"high_write": True, "time_zone": "Europe/Berlin", "recorder_type": "uuid"},
        {"recorder_type": "bigint", "partition_by": "day", "totals_period": "month"},
    ],
)
def test_definition_accepted(overrides: dict[str, Any]) -> None:
    defn(**overrides)


def test_same_as_ignores_zone_case_and_key_order() -> None:
    a = defn(time_zone="Europe/Berlin", dimensions={"b": "int", "a": "text"})
    b = defn(time_zone="europe/berlin", dimensions={"a": "text", "b": "integer"})
    assert a.same_as(b)
    assert not a.same_as(defn(time_zone="Europe/Berlin", dimensions={"a": "text", "b": "bigint"}))
    assert not a.same_as(defn(time_zone="Europe/Paris", dimensions={"a": "text", "b": "integer"}))


def test_from_file_yaml(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "name: inventory\n"
        "kind: balance\n"
        "dimensions:\n  warehouse: int\n  product: int4\n"
        "resources:\n  quantity: decimal(18,3)\n  amount: numeric(18)\n"
        "high_write: true\n"
        "time_zone: Europe/Berlin\n",
        encoding="utf-8",
    )
    d = RegisterDefinition.from_file(path)
    assert d.dimensions == {"product": "integer", "warehouse": "integer"}
    assert d.resources == {"amount": "numeric(18,0)", "quantity": "numeric(18,3)"}
    assert d.high_write is True
    assert d.time_zone == "Europe/Berlin"


def test_from_file_json(tmp_path: Path) -> None:
    path = tmp_path / "sales.json"
    path.write_text(
        json.dumps(
            {
                "name": "sales",
                "kind": "turnover",
                "dimensions": {"channel": "text", "sku": "varchar(40)"},
                "resources": {"qty": "integer"},
                "totals_period": "month",
            }
        ),
        encoding="utf-8",
    )
    d = RegisterDefinition.from_file(str(path))
    assert (d.kind, d.totals_period, d.dimensions["sku"]) == ("turnover", "month", "varchar(40)")


def test_from_file_rejects_non_mapping_and_bad_content(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        RegisterDefinition.from_file(path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "kind": "ledger", "dimensions": {"a": "int"}, "resources": {"b": "int"}}')
    with pytest.raises(ValidationError, match="not supported yet"):
        RegisterDefinition.from_file(bad)


def test_register_info_parses_engine_json() -> None:
    info = RegisterInfo.model_validate(
        {
            "name": "inventory",
            "kind": "balance",
            "dimensions": {"product": "integer", "warehouse": "integer"},
            "resources": {"quantity": "numeric(18,3)"},
            "totals_period": "day",
            "partition_by": "month",
            "high_write": False,
            "recorder_type": "text",
            "time_zone": "UTC",
            "created_at": "2026-04-18T10:15:00+00:00",
            "updated_at": None,
            "movements_count": 3,
            "tables": {"movements": "inventory_movements", "balance_cache": "inventory_balance_cache"},
            "partitions": [
                {"name": "inventory_movements_2026_04", "from": "2026-04-01T00:00:00+00:00",
                 "to": "2026-05-01T00:00:00+00:00", "is_default": False},
                {"name": "inventory_movements_default", "from": None, "to": None, "is_default": True},
            ],
            "future_field": 1,
        }
    )  # fmt: skip
    assert info.partitions[0].from_ == datetime(2026, 4, 1, tzinfo=UTC)
    assert info.partitions[1].is_default
    assert info.tables.totals_day is None
    assert info.definition() == defn(dimensions={"warehouse": "integer", "product": "integer"})


def test_result_models() -> None:
    row = VerifyRow.model_validate(
        {"check_type": "totals_day", "dim_hash": -5, "period": "2026-04-18",
         "expected": {"q": Decimal("1.5")}, "actual": None, "status": "MISSING_IN_TOTALS",
         "dimensions": {"warehouse": 1}}
    )  # fmt: skip
    assert row.period == date(2026, 4, 18)
    assert ApplyResult(ord=0, outcome="applied", affected=2).sqlstate is None
    assert (
        DeltaStatus.model_validate({"register": "x", "pending_rows": 0, "lag_seconds": 0}).register_name
        == "x"
    )
    stats = RegisterStats.model_validate(
        {
            "movements_count": 1,
            "partitions_count": 5,
            "default_partition_rows": 0,
            "table_sizes": {"movements": 8192},
        }
    )
    assert stats.cache_rows is None
