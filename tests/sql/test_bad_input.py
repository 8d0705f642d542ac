"""Bad input through the SQL API, as one table (SPEC §4.2-§4.4, §5.2, §6-§8, §11).

Each case states the SQLSTATE and the start of the message (``<register>: `` and the location where one
exists), and the database must be exactly unchanged afterwards. Write cases put the bad movement second, after
a good one, so a batch that is not atomic shows up as a changed database. All cases share one database (fresh
for the module), which also proves that no rejected call leaves anything behind for the next one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import Conn, dsn_for_db
from psycopg import sql


class Raw:
    """A JSON fragment sent digit for digit (numbers Python cannot hold as float, big integers kept exact)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(value: Any) -> str:
    raws: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"\u0001RAW{len(raws) - 1}\u0001"
        raise TypeError(type(o).__name__)

    text = json.dumps(value, default=default)
    for i, r in enumerate(raws):
        text = text.replace(json.dumps(f"\u0001RAW{i}\u0001"), r)
    return text


# ---- the registers every case runs against ---------------------------------------------------------------

REGISTERS: list[tuple[str, dict[str, str], dict[str, str], dict[str, Any]]] = [
    (
        "inventory",
        {"warehouse": "integer", "product": "text"},
        {
            "quantity": "numeric(20,4)",
            "amount": "numeric(10,2)",
            "pieces": "smallint",
            "units": "integer",
            "grams": "bigint",
            "free": "numeric",
        },
        {"time_zone": "Europe/Berlin"},
    ),
    (
        "typed",
        {
            "flag": "boolean",
            "day": "date",
            "lot": "numeric(6,2)",
            "uid": "uuid",
            "code": "varchar(4)",
            "note": "text",
            "size": "smallint",
        },
        {"q": "integer"},
        {},
    ),
    ("keys", {"k1": "text", "k2": "text", "k3": "integer"}, {"q": "integer"}, {}),
    ("sales", {"channel": "text"}, {"qty": "integer"}, {"kind": "turnover", "high_write": True}),
    ("docs", {"k": "integer"}, {"q": "integer"}, {"recorder_type": "bigint"}),
    ("uids", {"k": "integer"}, {"q": "integer"}, {"recorder_type": "uuid"}),
]

GOOD: dict[str, dict[str, Any]] = {
    "inventory": {
        "period": "2026-01-05T10:00",
        "warehouse": 1,
        "product": "p",
        "quantity": "1.5",
        "amount": 2,
        "pieces": 1,
        "units": 1,
        "grams": 1,
        "free": "0.125",
    },
    "typed": {
        "period": "2026-01-05",
        "flag": True,
        "day": "2026-01-05",
        "lot": "1.5",
        "uid": "c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e",
        "code": "ab",
        "note": "n",
        "size": 1,
        "q": 1,
    },
    "keys": {"period": "2026-01-05", "k1": "a", "k2": "b", "k3": 1, "q": 1},
    "sales": {"period": "2026-01-05", "channel": "web", "qty": 1},
    "docs": {"period": "2026-01-05", "k": 1, "q": 1},
    "uids": {"period": "2026-01-05", "k": 1, "q": 1},
}
RECORDER: dict[str, Any] = {"docs": 77, "uids": "0b2e8e5c-6a51-4c71-b1d8-5f5b8e1a7a10"}


def good(register: str, **changes: Any) -> dict[str, Any]:
    return {"recorder": RECORDER.get(register, "new-doc")} | GOOD[register] | changes


def without(register: str, key: str) -> dict[str, Any]:
    return {k: v for k, v in good(register).items() if k != key}


# ---- case builders ---------------------------------------------------------------------------------------

Case = Any  # a pytest.param


def case(id: str, query: str, params: tuple[Any, ...], state: str, prefix: str) -> Case:
    return pytest.param(query, params, state, prefix, id=id)


def post(id: str, bad: dict[str, Any], state: str, prefix: str, register: str = "inventory") -> Case:
    """register_post of [good, bad]: the good one would change the database if the batch were not atomic."""
    data = dumps([good(register), bad])
    return case(id, "SELECT accum.register_post(%s, %s::jsonb)", (register, data), state, prefix)


def value(id: str, key: str, v: Any, state: str, register: str = "inventory") -> Case:
    return post(id, good(register, **{key: v}), state, f"{register}: movements[1].{key}: ", register)


def period(id: str, v: Any, state: str) -> Case:
    return value(f"period-{id}", "period", v, state)


def create(id: str, state: str, name: Any = "fresh", dims: Any = None, res: Any = None, **opts: Any) -> Case:
    args = "".join(f", {k} => %s" for k in opts)
    dims = {"d": "integer"} if dims is None else dims
    res = {"q": "integer"} if res is None else res
    params = (name, dumps(dims) if dims != "NULL" else None, dumps(res), *opts.values())
    prefix = (
        "(null): "
        if name is None
        else f"{name if name.isidentifier() and name.islower() else json.dumps(name)}: "
    )
    return case(
        f"create-{id}", f"SELECT accum.register_create(%s, %s::jsonb, %s::jsonb{args})", params, state, prefix
    )


def alter(id: str, state: str, **args: Any) -> Case:
    named = ", ".join(f"{k} => %s::{'jsonb' if k != 'high_write' else 'boolean'}" for k in args)
    params = ("inventory", *(dumps(v) if k != "high_write" else v for k, v in args.items()))
    return case(f"alter-{id}", f"SELECT accum.register_alter(%s, {named})", params, state, "inventory: ")


def read(id: str, query: str, params: tuple[Any, ...], state: str, prefix: str) -> Case:
    return case(f"read-{id}", query, params, state, prefix)


def apply(id: str, commands: Any, state: str, prefix: str, mode: str = "abort") -> Case:
    return case(
        f"apply-{id}",
        "SELECT * FROM accum.register_apply(%s::jsonb, %s)",
        (dumps(commands), mode),
        state,
        prefix,
    )


def cmd(op: str = "post", register: str = "inventory", recorder: Any = "c1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op, "register": register, "recorder": recorder}
    if op != "unpost":
        out["movements"] = [without(register if register in GOOD else "inventory", "recorder")]
    return out | extra


LONG_NAME = "x" * 41
NUMBER_STRINGS = [
    "NaN",
    "nan",
    "NAN",
    "Infinity",
    "-Infinity",
    "+Infinity",
    "infinity",
    "inf",
    "-inf",
    "+inf",
    "INF",
    " NaN",
    "NaN ",
]

CASES: list[Case] = [
    # -- numbers: NaN and Infinity in any spelling, on every numeric type and in filters
    *[value(f"nan-{i}-{s.strip()}", "quantity", s, "22023") for i, s in enumerate(NUMBER_STRINGS)],
    value("nan-free", "free", "NaN", "22023"),
    value("nan-smallint", "pieces", "Infinity", "22023"),
    value("nan-bigint", "grams", "-Infinity", "22023"),
    value("nan-numeric-dimension", "lot", "NaN", "22023", register="typed"),
    # -- numbers: grammar, scale, range
    value("plus-sign", "quantity", "+1", "22P02"),
    value("space-inside", "quantity", "1 ", "22P02"),
    value("comma-decimal", "quantity", "1,5", "22P02"),
    value("hex", "quantity", "0x10", "22P02"),
    value("empty-number-string", "quantity", "", "22P02"),
    value("word", "units", "ten", "22P02"),
    value("leading-zero", "units", "01", "22P02"),
    value("scale-exceeded", "quantity", "1.23456", "22023"),
    value("scale-exceeded-number", "quantity", Raw("1.23456"), "22023"),
    value("tiny-exponent", "quantity", "1e-30", "22023"),
    value("scale-exceeded-amount", "amount", Raw("0.001"), "22023"),
    value("too-many-digits", "amount", Raw("123456789"), "22003"),
    value("too-many-digits-string", "quantity", "1e16", "22003"),
    value("huge-exponent", "quantity", Raw("1e1000"), "22003"),
    value("smallint-overflow", "pieces", 32768, "22003"),
    value("smallint-underflow", "pieces", "-32769", "22003"),
    value("integer-overflow", "units", Raw("2147483648"), "22003"),
    value("bigint-overflow", "grams", Raw("9223372036854775808"), "22003"),
    value("bigint-overflow-string", "grams", "-9223372036854775809", "22003"),
    value("integer-fraction", "units", Raw("1.5"), "22023"),
    value("integer-fraction-string", "pieces", "0.5", "22023"),
    value("integer-dimension-fraction", "warehouse", Raw("1.25"), "22023"),
    value("integer-dimension-overflow", "warehouse", Raw("2147483648"), "22003"),
    value("smallint-dimension-overflow", "size", 40000, "22003", register="typed"),
    value("numeric-dimension-scale", "lot", "1.234", "22023", register="typed"),
    value("numeric-dimension-digits", "lot", 12345, "22003", register="typed"),
    # -- JSON types a column does not accept
    value("resource-boolean", "quantity", True, "22023"),
    value("resource-object", "quantity", {"v": 1}, "22023"),
    value("resource-array", "amount", [1], "22023"),
    value("dimension-array", "warehouse", [1], "22023"),
    value("dimension-object", "product", {"a": "b"}, "22023"),
    value("text-gets-number", "product", 5, "22023"),
    value("text-gets-boolean", "product", False, "22023"),
    value("integer-gets-boolean", "warehouse", True, "22023"),
    value("integer-unreadable", "warehouse", "one", "22P02"),
    value("boolean-gets-string", "flag", "true", "22023", register="typed"),
    value("boolean-gets-number", "flag", 1, "22023", register="typed"),
    value("date-gets-number", "day", 20260105, "22023", register="typed"),
    value("date-format", "day", "2026/01/05", "22P02", register="typed"),
    value("date-with-time", "day", "2026-01-05T00:00", "22P02", register="typed"),
    value("date-special", "day", "infinity", "22P02", register="typed"),
    value("date-impossible", "day", "2026-02-30", "22008", register="typed"),
    value("uuid-gets-number", "uid", 12, "22023", register="typed"),
    value("uuid-unreadable", "uid", "not-a-uuid", "22P02", register="typed"),
    value("uuid-no-hyphens", "uid", "c0f3e2a44c1e4bb09d5b1f2a3b4c5d6e", "22P02", register="typed"),
    value("uuid-braces", "uid", "{c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e}", "22P02", register="typed"),
    # -- missing, null, misspelt, extra keys
    post("missing-resource", without("inventory", "quantity"), "22023", "inventory: movements[1]: "),
    post("missing-dimension", without("inventory", "warehouse"), "22023", "inventory: movements[1]: "),
    post("missing-period", without("inventory", "period"), "22023", "inventory: movements[1]: "),
    post("missing-recorder", without("inventory", "recorder"), "22023", "inventory: movements[1]: "),
    value("null-resource", "quantity", None, "22004"),
    value("null-dimension", "product", None, "22004"),
    value("null-period", "period", None, "22004"),
    value("null-recorder", "recorder", None, "22004"),
    post(
        "misspelt-key",
        without("inventory", "quantity") | {"quantiy": 1},
        "42703",
        "inventory: movements[1].quantiy: ",
    ),
    post("extra-key", good("inventory", colour="red"), "42703", "inventory: movements[1].colour: "),
    post("generated-column-key", good("inventory", id=5), "42703", "inventory: movements[1].id: "),
    post(
        "recorded-at-key",
        good("inventory", recorded_at="2026-01-01"),
        "42703",
        "inventory: movements[1].recorded_at: ",
    ),
    # -- text limits and the key limit
    value("text-over-1024-bytes", "product", "x" * 1025, "22001"),
    value("text-over-1024-bytes-multibyte", "product", "é" * 513, "22001"),
    value("varchar-over-n", "code", "abcde", "22001", register="typed"),
    value("varchar-over-n-multibyte", "code", "ééééé", "22001", register="typed"),
    post(
        "key-over-2048-bytes",
        good("keys", k1="a" * 1024, k2="b" * 1021),
        "54000",
        "keys: movements[1]: ",
        "keys",
    ),
    # -- recorders
    value("recorder-empty", "recorder", "", "22023"),
    value("recorder-number-on-text", "recorder", 5, "22023"),
    value("recorder-array", "recorder", ["a"], "22023"),
    value("recorder-over-1024-bytes", "recorder", "r" * 1025, "22001"),
    value("recorder-bigint-unreadable", "recorder", "abc", "22P02", register="docs"),
    value("recorder-bigint-fraction", "recorder", Raw("1.5"), "22023", register="docs"),
    value("recorder-bigint-overflow", "recorder", "9223372036854775808", "22003", register="docs"),
    value("recorder-uuid-unreadable", "recorder", "doc-1", "22P02", register="uids"),
    # -- period forms (§5.2): other forms 22007, impossible values 22008
    period("slashes", "2026/01/05", "22007"),
    period("compact", "20260105", "22007"),
    period("hour-only", "2026-01-05T10", "22007"),
    period("lowercase-t", "2026-01-05t10:00", "22007"),
    period("seven-fraction-digits", "2026-01-05T10:00:00.1234567", "22007"),
    period("comma-fraction", "2026-01-05T10:00:00,5", "22007"),
    period("space-before-offset", "2026-01-05T10:00 +01:00", "22007"),
    period("offset-without-colon", "2026-01-05T10:00+0100", "22007"),
    period("offset-one-digit", "2026-01-05T10:00+1", "22007"),
    period("zone-name", "2026-01-05 10:00 Europe/Berlin", "22007"),
    period("abbreviation", "2026-01-05 10:00 CET", "22007"),
    period("five-digit-year", "10000-01-01", "22007"),
    period("bc", "2026-01-05 BC", "22007"),
    period("now", "now", "22007"),
    period("today", "today", "22007"),
    period("epoch", "epoch", "22007"),
    period("infinity", "infinity", "22007"),
    period("minus-infinity", "-infinity", "22007"),
    period("empty", "", "22007"),
    period("number", 20260105, "22007"),
    period("boolean", True, "22007"),
    period("object", {"y": 2026}, "22007"),
    period("day-30-february", "2026-02-30", "22008"),
    period("day-29-february-2025", "2025-02-29", "22008"),
    period("month-13", "2026-13-01", "22008"),
    period("day-0", "2026-01-00", "22008"),
    period("hour-25", "2026-01-05T25:00", "22008"),
    period("minute-60", "2026-01-05T10:60", "22008"),
    period("second-60", "2026-01-05T10:00:60", "22008"),
    period("offset-16", "2026-01-05T10:00+16:00", "22008"),
    period("offset-minutes-60", "2026-01-05T10:00+01:60", "22008"),
    period("year-0", "0000-12-31", "22008"),
    period("after-9999-in-zone", "9999-12-31T23:30:00Z", "22008"),
    # -- data shape
    case("post-null-data", "SELECT accum.register_post('inventory', NULL)", (), "22004", "inventory: "),
    case("post-string-data", "SELECT accum.register_post('inventory', '\"x\"')", (), "22023", "inventory: "),
    case("post-number-data", "SELECT accum.register_post('inventory', '5')", (), "22023", "inventory: "),
    case(
        "post-single-object",
        "SELECT accum.register_post('inventory', %s::jsonb)",
        (dumps(good("inventory", quantity="1.00001")),),
        "22023",
        "inventory: movements[0].quantity: ",
    ),
    post("post-element-number", 1, "22023", "inventory: movements[1]: "),  # type: ignore[arg-type]
    post("post-element-array", [good("inventory")], "22023", "inventory: movements[1]: "),  # type: ignore[arg-type]
    # -- unpost / repost
    case("unpost-null", "SELECT accum.register_unpost('inventory', NULL)", (), "22004", "inventory: "),
    case("unpost-empty", "SELECT accum.register_unpost('inventory', '')", (), "22023", "inventory: "),
    case(
        "unpost-too-long",
        "SELECT accum.register_unpost('inventory', %s)",
        ("r" * 1025,),
        "22001",
        "inventory: ",
    ),
    case("unpost-bigint-unreadable", "SELECT accum.register_unpost('docs', 'abc')", (), "22P02", "docs: "),
    case("unpost-uuid-unreadable", "SELECT accum.register_unpost('uids', 'abc')", (), "22P02", "uids: "),
    case(
        "repost-null-recorder",
        "SELECT accum.register_repost('inventory', NULL, '[]')",
        (),
        "22004",
        "inventory: ",
    ),
    case(
        "repost-empty-recorder",
        "SELECT accum.register_repost('inventory', '', '[]')",
        (),
        "22023",
        "inventory: ",
    ),
    case(
        "repost-null-data",
        "SELECT accum.register_repost('inventory', 'old', NULL)",
        (),
        "22004",
        "inventory: ",
    ),
    case(
        "repost-recorder-mismatch",
        "SELECT accum.register_repost('inventory', 'old', %s::jsonb)",
        (dumps([good("inventory", recorder="old"), good("inventory", recorder="other")]),),
        "22023",
        "inventory: movements[1].recorder: ",
    ),
    case(
        "repost-bad-movement",
        "SELECT accum.register_repost('inventory', 'old', %s::jsonb)",
        (dumps([good("inventory", recorder="old"), good("inventory", recorder="old", quantity="NaN")]),),
        "22023",
        "inventory: movements[1].quantity: ",
    ),
    # -- unknown registers
    case(
        "post-unknown-register",
        "SELECT accum.register_post('nope', '[]')",
        (),
        "42704",
        'nope: register "nope" does not exist',
    ),
    case(
        "post-unknown-register-odd-name",
        "SELECT accum.register_post('No pe', '[]')",
        (),
        "42704",
        '"No pe": register "No pe" does not exist',
    ),
    case("post-null-register", "SELECT accum.register_post(NULL, '[]')", (), "22004", "(null): "),
    *[
        case(
            f"unknown-register-{q.split('(')[0].split('.')[-1]}",
            q,
            (),
            "42704",
            'nope: register "nope" does not exist',
        )
        for q in [
            "SELECT accum.register_info('nope')",
            "SELECT accum.register_drop('nope')",
            "SELECT accum.register_alter('nope', add_resources => '{\"x\": \"int\"}')",
            "SELECT accum.register_unpost('nope', 'r')",
            "SELECT accum.register_repost('nope', 'r', '[]')",
            "SELECT * FROM accum.register_verify('nope')",
            "SELECT accum.register_rebuild_totals('nope')",
            "SELECT accum.register_rebuild_cache('nope')",
            "SELECT accum.register_stats('nope')",
            "SELECT * FROM accum.register_partitions('nope')",
            "SELECT accum.register_create_partitions('nope')",
            "SELECT accum.register_merge('nope')",
            "SELECT * FROM accum.register_delta_status('nope')",
        ]
    ],
    # -- register_create: names (42602, 42939, 42701), types and options (22023), kind (0A000), exists (42P07)
    create("name-uppercase", "42602", name="Fresh"),
    create("name-digit-first", "42602", name="1fresh"),
    create("name-dash", "42602", name="fresh-one"),
    create("name-empty", "42602", name=""),
    create("name-33-chars", "42602", name="f" * 33),
    create("name-null", "22004", name=None),
    create("exists", "42P07", name="inventory"),
    create("dimension-uppercase", "42602", dims={"Warehouse": "integer"}),
    create("dimension-41-chars", "42602", dims={LONG_NAME: "integer"}),
    create("dimension-space", "42602", dims={"ware house": "integer"}),
    create("dimension-keyword", "42602", dims={"select": "integer"}),
    create("resource-keyword", "42602", res={"order": "integer"}),
    *[
        create(f"reserved-dimension-{n}", "42939", dims={n: "integer"})
        for n in (
            "id",
            "recorder",
            "period",
            "recorded_at",
            "dim_hash",
            "bucket",
            "version",
            "last_movement_at",
            "created_at",
            "movement_type",
        )
    ],
    create("reserved-resource-period", "42939", res={"period": "integer"}),
    create("duplicate-name", "42701", dims={"d": "integer"}, res={"d": "integer"}),
    create("type-float", "22023", res={"q": "float8"}),
    create("type-double", "22023", res={"q": "double precision"}),
    create("type-real", "22023", res={"q": "real"}),
    create("type-money", "22023", res={"q": "money"}),
    create("type-text-resource", "22023", res={"q": "text"}),
    create("type-numeric-dimension", "22023", dims={"d": "numeric"}),
    create("type-numeric-p-dimension", "22023", dims={"d": "numeric(10)"}),
    create("type-numeric-1001", "22023", res={"q": "numeric(1001,0)"}),
    create("type-numeric-scale-over-precision", "22023", res={"q": "numeric(5,6)"}),
    create("type-numeric-negative-scale", "22023", res={"q": "numeric(5,-1)"}),
    create("type-varchar-bare", "22023", dims={"d": "varchar"}),
    create("type-varchar-0", "22023", dims={"d": "varchar(0)"}),
    create("type-varchar-1025", "22023", dims={"d": "varchar(1025)"}),
    create("type-timestamp", "22023", dims={"d": "timestamptz"}),
    create("type-json", "22023", dims={"d": "jsonb"}),
    create("type-array", "22023", dims={"d": "integer[]"}),
    create("type-injection", "22023", dims={"d": "integer); DROP TABLE accum._registers; --"}),
    create("type-not-string", "22023", dims={"d": 5}),
    create("dimensions-array", "22023", dims=["d"]),
    create("dimensions-empty", "22023", dims={}),
    create("dimensions-17", "22023", dims={f"d{i}": "integer" for i in range(17)}),
    create("resources-33", "22023", res={f"r{i}": "integer" for i in range(33)}),
    create("dimensions-null", "22004", dims="NULL"),
    create("kind-ledger", "0A000", kind="ledger"),
    create("kind-ledger-uppercase", "0A000", kind="LEDGER"),
    create("kind-null", "22004", kind=None),
    create("kind-unknown", "22023", kind="stock"),
    create("totals-period-week", "22023", totals_period="week"),
    create("partition-by-hour", "22023", partition_by="hour"),
    create("recorder-type-int", "22023", recorder_type="int"),
    create("recorder-type-varchar", "22023", recorder_type="varchar(10)"),
    *[
        create(f"time-zone-{z.replace('/', '-').replace('+', 'plus')}", "22023", time_zone=z)
        for z in (
            "PST",
            "UTC+3",
            "localtime",
            "posixrules",
            "Factory",
            "posix/Europe/Berlin",
            "Mars/Olympus",
            "",
        )
    ],
    # -- register_alter
    alter("dimension-without-backfill", "22023", add_dimensions={"lot": "text"}),
    alter("backfill-wrong-type", "22023", add_dimensions={"lot": "integer"}, backfill={"lot": "x"}),
    alter("backfill-null", "22023", add_dimensions={"lot": "integer"}, backfill={"lot": None}),
    alter("backfill-unknown-key", "22023", add_dimensions={"lot": "text"}, backfill={"lot": "a", "bin": "b"}),
    alter("backfill-too-long", "22023", add_dimensions={"lot": "varchar(2)"}, backfill={"lot": "abc"}),
    alter(
        "add-existing-dimension", "42701", add_dimensions={"warehouse": "integer"}, backfill={"warehouse": 1}
    ),
    alter("add-existing-resource", "42701", add_resources={"amount": "integer"}),
    alter(
        "add-dimension-named-like-resource",
        "42701",
        add_dimensions={"amount": "integer"},
        backfill={"amount": 1},
    ),
    alter("add-reserved", "42939", add_resources={"version": "integer"}),
    alter("add-bad-name", "42602", add_resources={"Bad": "integer"}),
    alter("add-bad-type", "22023", add_resources={"x": "float4"}),
    alter("add-text-resource", "22023", add_resources={"x": "text"}),
    alter("add-not-object", "22023", add_resources=["x"]),
    alter(
        "too-many-dimensions",
        "22023",
        add_dimensions={f"n{i}": "integer" for i in range(15)},
        backfill={f"n{i}": 0 for i in range(15)},
    ),
    # -- register_drop, rebuilds, maintenance arguments
    case("drop-not-empty", "SELECT accum.register_drop('inventory')", (), "55000", "inventory: "),
    case("rebuild-cache-turnover", "SELECT accum.register_rebuild_cache('sales')", (), "42809", "sales: "),
    case("merge-max-rows-0", "SELECT accum.register_merge('sales', 0)", (), "22023", "sales: "),
    case(
        "merge-negative-age",
        "SELECT accum.register_merge('sales', 10, interval '-1 second')",
        (),
        "22023",
        "sales: ",
    ),
    case(
        "create-partitions-negative",
        "SELECT accum.register_create_partitions('inventory', NULL, -1)",
        (),
        "22023",
        "inventory: ",
    ),
    # -- reads: filters, group_by, kind
    read(
        "balance-unknown-filter-key",
        'SELECT accum.inventory_balance(\'{"colour": "red"}\')',
        (),
        "42703",
        "inventory: dimensions.colour: ",
    ),
    read(
        "balance-null-filter-value",
        "SELECT accum.inventory_balance('{\"warehouse\": null}')",
        (),
        "22004",
        "inventory: dimensions.warehouse: ",
    ),
    read("balance-filter-not-object", "SELECT accum.inventory_balance('[1]')", (), "22023", "inventory: "),
    read(
        "balance-filter-object-value",
        'SELECT accum.inventory_balance(\'{"warehouse": {"a": 1}}\')',
        (),
        "22023",
        "inventory: dimensions.warehouse: ",
    ),
    read(
        "balance-filter-wrong-type",
        "SELECT accum.inventory_balance('{\"product\": 5}')",
        (),
        "22023",
        "inventory: dimensions.product: ",
    ),
    read(
        "balance-filter-unreadable",
        'SELECT accum.inventory_balance(\'{"warehouse": "one"}\')',
        (),
        "22P02",
        "inventory: dimensions.warehouse: ",
    ),
    read(
        "balance-filter-nan",
        'SELECT accum.typed_balance(\'{"lot": "NaN"}\')',
        (),
        "22023",
        "typed: dimensions.lot: ",
    ),
    read(
        "balance-filter-fraction",
        "SELECT accum.inventory_balance('{\"warehouse\": 1.5}')",
        (),
        "22023",
        "inventory: dimensions.warehouse: ",
    ),
    read("balance-turnover-register", "SELECT accum.sales_balance()", (), "42809", "sales: "),
    read(
        "turnover-unknown-filter-key",
        "SELECT * FROM accum.inventory_turnover(NULL, NULL, '{\"colour\": 1}')",
        (),
        "42703",
        "inventory: dimensions.colour: ",
    ),
    read(
        "turnover-unknown-group",
        "SELECT * FROM accum.inventory_turnover(NULL, NULL, NULL, '[\"colour\"]')",
        (),
        "42703",
        "inventory: group_by: ",
    ),
    read(
        "turnover-group-not-array",
        "SELECT * FROM accum.inventory_turnover(NULL, NULL, NULL, '\"product\"')",
        (),
        "22023",
        "inventory: group_by: ",
    ),
    read(
        "turnover-group-not-strings",
        "SELECT * FROM accum.inventory_turnover(NULL, NULL, NULL, '[1]')",
        (),
        "22023",
        "inventory: group_by: ",
    ),
    read(
        "turnover-group-duplicates",
        'SELECT * FROM accum.inventory_turnover(NULL, NULL, NULL, \'["product", "product"]\')',
        (),
        "22023",
        "inventory: group_by: ",
    ),
    read(
        "movements-unknown-filter-key",
        "SELECT * FROM accum.inventory_movements(NULL, NULL, NULL, '{\"x\": 1}')",
        (),
        "42703",
        "inventory: dimensions.x: ",
    ),
    read("movements-recorder-bigint", "SELECT * FROM accum.docs_movements('abc')", (), "22P02", "docs: "),
    read(
        "movements-recorder-empty", "SELECT * FROM accum.inventory_movements('')", (), "22023", "inventory: "
    ),
    # -- register_apply
    apply("not-array", {"op": "post"}, "22023", "(null): "),
    apply("mode-unknown", [], "22023", "(null): ", mode="retry"),
    apply(
        "bad-movement",
        [cmd(), cmd(movements=[without("inventory", "recorder") | {"quantity": "NaN"}])],
        "22023",
        "inventory: commands[1].movements[0].quantity: ",
    ),
    apply("unknown-register", [cmd(), cmd(register="nope")], "42704", "nope: commands[1].register: "),
    apply(
        "missing-op",
        [cmd(), {k: v for k, v in cmd().items() if k != "op"}],
        "22023",
        "inventory: commands[1]: ",
    ),
    apply("unknown-op", [cmd(), cmd(op="delete")], "22023", "inventory: commands[1].op: "),
    apply("unknown-command-key", [cmd(), cmd(extra=1)], "42703", "inventory: commands[1].extra: "),
    apply(
        "unpost-with-movements",
        [cmd(), cmd(op="unpost") | {"movements": []}],
        "22023",
        "inventory: commands[1].movements: ",
    ),
    apply(
        "post-without-movements",
        [cmd(), {k: v for k, v in cmd().items() if k != "movements"}],
        "22023",
        "inventory: commands[1]: ",
    ),
    apply("empty-recorder", [cmd(), cmd(recorder="")], "22023", "inventory: commands[1].recorder: "),
    apply(
        "recorder-mismatch",
        [cmd(), cmd(movements=[good("inventory")])],
        "22023",
        "inventory: commands[1].movements[0].recorder: ",
    ),
    apply("element-not-object", [cmd(), 5], "22023", "(null): commands[1]: "),
]


# ---- the database and its snapshot -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_db(pg_dsn: str, template_db: str) -> Iterator[Conn]:
    name = f"t_bad_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER accum_owner").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        with psycopg.connect(dsn_for_db(pg_dsn, name), autocommit=True) as conn:
            for reg, dims, res, opts in REGISTERS:
                args = "".join(f", {k} => %s" for k in opts)
                conn.execute(
                    f"SELECT accum.register_create(%s, %s::jsonb, %s::jsonb{args})",
                    (reg, json.dumps(dims), json.dumps(res), *opts.values()),
                )
                existing = [
                    good(reg, recorder=RECORDER.get(reg, "old")),
                    good(reg, recorder=RECORDER.get(reg, "old"), period="2025-12-31T23:59:59Z"),
                ]
                conn.execute("SELECT accum.register_post(%s, %s::jsonb)", (reg, dumps(existing)))
            yield conn
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def snapshot(conn: Conn) -> dict[str, Any]:
    """Everything a rejected call could have touched: objects, row counts, registry, derived state, reads."""
    objects = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'accum'::regnamespace"
        " UNION ALL SELECT p.oid::regprocedure::text, 'f' FROM pg_proc p"
        " WHERE p.pronamespace = 'accum'::regnamespace"
        " ORDER BY 1"
    ).fetchall()
    tables = [r[0] for r in objects if r[1] in ("r", "p")]
    counts = conn.execute(
        sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*) FROM accum.{}").format(sql.Literal(t), sql.Identifier(t))
            for t in tables
        )
    ).fetchall()
    out: dict[str, Any] = {
        "objects": objects,
        "counts": sorted(counts),
        "registry": conn.execute("SELECT to_jsonb(r)::text FROM accum._registers r ORDER BY name").fetchall(),
        "movements": conn.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {}, to_jsonb(m)::text FROM accum.{} m").format(
                    sql.Literal(r), sql.Identifier(f"{r}_movements")
                )
                for r, *_ in REGISTERS
            )
            + sql.SQL(" ORDER BY 1, 2")
        ).fetchall(),
    }
    for reg, _dims, _res, opts in REGISTERS:
        out[f"verify {reg}"] = conn.execute(
            "SELECT check_type, dim_hash, period, expected::text, actual::text, status, dimensions::text"
            " FROM accum.register_verify(%s)",
            (reg,),
        ).fetchall()
        out[f"turnover {reg}"] = conn.execute(
            sql.SQL("SELECT t::text FROM accum.{}() t").format(sql.Identifier(f"{reg}_turnover"))
        ).fetchall()
        if opts.get("kind") != "turnover":
            out[f"balance {reg}"] = conn.execute(
                sql.SQL("SELECT accum.{}()::text").format(sql.Identifier(f"{reg}_balance"))
            ).fetchall()
    return out


@pytest.mark.parametrize(("query", "params", "sqlstate", "prefix"), CASES)
def test_bad_input(bad_db: Conn, query: str, params: tuple[Any, ...], sqlstate: str, prefix: str) -> None:
    before = snapshot(bad_db)
    with pytest.raises(psycopg.Error) as exc:
        bad_db.execute(query, params or None)
    got = (exc.value.sqlstate, exc.value.diag.message_primary or "")
    assert got[0] == sqlstate, got
    assert got[1].startswith(prefix), got
    assert snapshot(bad_db) == before


def test_cases_are_distinct() -> None:
    """Guards the table itself: every case id is unique and every SQLSTATE class of §11 is covered."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    covered = {c.values[2] for c in CASES}
    assert covered >= {
        "22001",
        "22003",
        "22004",
        "22007",
        "22008",
        "22023",
        "22P02",
        "42602",
        "42701",
        "42703",
        "42704",
        "42809",
        "42939",
        "42P07",
        "0A000",
        "54000",
        "55000",
    }
