"""The client's JSON writer: Decimal digit for digit, never through float; dates and times per SPEC §5.2."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from registers.client import to_json
from registers.errors import InvalidCommand, InvalidQuery


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.50000"), "1.50000"),
        (Decimal("-0"), "-0"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.23E-7"), "0.000000123"),
        (Decimal("123456789012345678901234567890.123456789"), "123456789012345678901234567890.123456789"),
        (12345678901234567890123, "12345678901234567890123"),
        (0.1, "0.1"),
        (True, "true"),
        (None, "null"),
        ('ünï"code', '"ünï\\"code"'),
        (date(2026, 4, 18), '"2026-04-18"'),
        (datetime(2026, 4, 18, 10, 15), '"2026-04-18T10:15:00"'),
        (datetime(2026, 4, 18, 10, 15, 0, 500), '"2026-04-18T10:15:00.000500"'),
        (datetime(2026, 4, 18, 12, 15, tzinfo=timezone(timedelta(hours=2))), '"2026-04-18T10:15:00+00:00"'),
        (UUID("c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e"), '"c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e"'),
        ({"a": [1, Decimal("2.0")], "b": {}}, '{"a":[1,2.0],"b":{}}'),
    ],
)
def test_to_json(value: Any, text: str) -> None:
    assert to_json(value) == text


def test_decimal_survives_round_trip() -> None:
    value = Decimal("0.1000000000000000055511151231257827")
    assert json.loads(to_json({"q": value}), parse_float=Decimal)["q"] == value


@pytest.mark.parametrize(
    "bad", [Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN"), float("nan"), float("inf")]
)
def test_non_finite_rejected_with_path(bad: Any) -> None:
    with pytest.raises(InvalidCommand) as info:
        to_json([{"period": "2026-04-18", "qty": bad}], "movements", register="inventory")
    err = info.value
    assert (err.sqlstate, err.register, err.path) == ("22023", "inventory", "movements[0].qty")
    assert err.message.startswith("inventory: movements[0].qty: ")


def test_unknown_type_and_key_rejected() -> None:
    with pytest.raises(InvalidQuery, match="cannot send a value of type set"):
        to_json({"a": {1}}, "dimensions", register="r", error=InvalidQuery)
    with pytest.raises(InvalidCommand, match="not a string"):
        to_json({1: 2})
    with pytest.raises(InvalidCommand, match="lone surrogate") as surrogate:
        to_json({"t": "a\udc80"}, "dimensions")
    assert surrogate.value.path == "dimensions.t"


def test_aware_datetime_keeps_instant() -> None:
    moment = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert datetime.fromisoformat(json.loads(to_json(moment))) == moment
