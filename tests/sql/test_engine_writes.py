"""Write API through SQL (SPEC §7): post / unpost / repost / apply, direct DML, dimension identity (§4.6)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import Conn, Movement, create_register, one, post_movements
from helpers import recorded_movement as mv
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads

DIMS = {"warehouse": "integer", "product": "text"}
RES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)"}


@pytest.fixture
def db(conn: Conn) -> Conn:
    """The test's superuser connection; JSON numbers come back as Decimal (exact, scale kept)."""
    set_json_loads(lambda s: json.loads(s, parse_float=Decimal), conn)
    set_json_dumps(lambda o: json.dumps(o, default=str), conn)  # Decimal travels as a decimal string
    return conn


def create(conn: Conn, name: str, dims: dict[str, str] = DIMS, res: dict[str, str] = RES, **opts: Any) -> str:
    return create_register(conn, name, dims, res, **opts)


def unpost(conn: Conn, register: str, recorder: str) -> int:
    n: int = one(conn, "SELECT accum.register_unpost(%s, %s)", (register, recorder))
    return n


def repost(conn: Conn, register: str, recorder: str, data: Any) -> int:
    n: int = one(conn, "SELECT accum.register_repost(%s, %s, %s)", (register, recorder, Jsonb(data)))
    return n


def apply(conn: Conn, commands: list[Any], mode: str = "abort") -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM accum.register_apply(%s, %s)", (Jsonb(commands), mode)).fetchall()


def movements(conn: Conn, register: str) -> list[dict[str, Any]]:
    """Movements as the read function renders them, without the volatile keys (id, recorded_at)."""
    rows = conn.execute(f"SELECT m FROM accum.{register}_movements() m").fetchall()
    return [{k: v for k, v in r[0].items() if k not in ("id", "recorded_at")} for r in rows]


def groups(conn: Conn, register: str) -> list[dict[str, Any]]:
    dims = list(one(conn, "SELECT accum.register_info(%s)", (register,))["dimensions"])
    rows = conn.execute(f"SELECT t FROM accum.{register}_turnover(NULL, NULL, NULL, %s) t", (Jsonb(dims),))
    return [r[0] for r in rows.fetchall()]


def assert_consistent(conn: Conn, register: str) -> None:
    """Derived tables equal the sums of the movements (verify) and group reads agree with raw sums."""
    assert conn.execute("SELECT * FROM accum.register_verify(%s, true)", (register,)).fetchall() == []
    info = one(conn, "SELECT accum.register_info(%s)", (register,))
    dims, res = sorted(info["dimensions"]), sorted(info["resources"])
    raw = conn.execute(
        f"SELECT {', '.join(dims)}, {', '.join(f'sum({r})' for r in res)} FROM accum.{register}_movements"
        f" GROUP BY {', '.join(dims)} HAVING NOT ({' AND '.join(f'sum({r}) = 0' for r in res)})"
        f" ORDER BY {', '.join(dims)}"
    ).fetchall()
    # dates render as YYYY-MM-DD; numbers compare by value (Decimal == int)
    expected = [
        {k: v.isoformat() if isinstance(v, date) else v for k, v in zip(dims + res, row, strict=True)}
        for row in raw
    ]
    assert groups(conn, register) == expected
    if info["kind"] == "balance":
        for g in expected:
            key = {d: g[d] for d in dims}
            got = one(conn, f"SELECT accum.{register}_balance(%s)", (Jsonb(key),))
            assert got == {r: g[r] for r in res}, key


# ---- post / unpost / repost -----------------------------------------------------------------------------


def test_post_counts_appends_and_unpost(db: Conn) -> None:
    create(db, "inv", time_zone="Europe/Berlin")
    assert post_movements(db, "inv", mv("d1", "2026-01-05", 1, "p", "1.5", "2")) == 1  # a single object
    assert (
        post_movements(db, "inv", [mv("d1", "2026-01-06", 1, "p", 2), mv("d2", "2026-01-06", 2, "q", "0.25")])
        == 2
    )
    assert post_movements(db, "inv", []) == 0
    # posting to an existing recorder appends
    assert [m["recorder"] for m in movements(db, "inv")] == ["d1", "d1", "d2"]
    assert one(db, "SELECT accum.inv_balance()") == {"quantity": Decimal("3.750"), "amount": Decimal("2.00")}
    assert_consistent(db, "inv")

    assert unpost(db, "inv", "d1") == 2
    assert unpost(db, "inv", "d1") == 0
    assert unpost(db, "inv", "unknown") == 0
    assert one(db, "SELECT accum.inv_balance()") == {"quantity": Decimal("0.250"), "amount": Decimal("0.00")}
    assert_consistent(db, "inv")
    assert unpost(db, "inv", "d2") == 1
    # zero rows are deleted, not kept (SPEC §4.5)
    for table in ("totals_day", "totals_month", "totals_year", "balance_cache"):
        assert one(db, f"SELECT count(*) FROM accum.inv_{table}") == 0, table
    assert db.execute("SELECT * FROM accum.register_verify('inv')").fetchall() == []


def test_offsetting_movements_leave_no_derived_row(db: Conn) -> None:
    create(db, "inv")
    post_movements(
        db,
        "inv",
        [
            mv("a", "2026-03-01T10:00:00Z", 1, "p", 5, "1.10"),
            mv("b", "2026-03-01T11:00:00Z", 1, "p", -5, "-1.1"),
        ],
    )
    for table in ("totals_day", "totals_month", "totals_year", "balance_cache"):
        assert one(db, f"SELECT count(*) FROM accum.inv_{table}") == 0, table
    assert one(db, "SELECT accum.inv_balance()") == {"quantity": 0, "amount": 0}
    assert groups(db, "inv") == []
    assert_consistent(db, "inv")


def test_repost(db: Conn) -> None:
    create(db, "inv")
    post_movements(
        db,
        "inv",
        [
            mv("d1", "2026-01-05", 1, "p", 1),
            mv("d1", "2026-01-06", 2, "p", 2),
            mv("d2", "2026-01-06", 1, "p", 4),
        ],
    )
    # items may omit the recorder, or repeat it
    new = [
        mv("d1", "2026-02-01", 3, "p", 7),
        {k: v for k, v in mv("", "2026-02-02", 1, "p", 1).items() if k != "recorder"},
    ]
    assert repost(db, "inv", "d1", new) == 2
    assert sorted((m["recorder"], m["warehouse"], m["quantity"]) for m in movements(db, "inv")) == [
        ("d1", 1, Decimal("1.000")),
        ("d1", 3, Decimal("7.000")),
        ("d2", 1, Decimal("4.000")),
    ]
    assert_consistent(db, "inv")
    # a single object works like an array of one
    assert repost(db, "inv", "d2", mv("d2", "2026-02-03", 1, "p", 9)) == 1
    # an unknown recorder: repost is a post
    assert repost(db, "inv", "d3", [mv("d3", "2026-02-03", 1, "p", 1)]) == 1
    # [] clears the document
    assert repost(db, "inv", "d1", []) == 0
    assert sorted(m["recorder"] for m in movements(db, "inv")) == ["d2", "d3"]
    assert one(db, "SELECT accum.inv_balance()") == {"quantity": Decimal("10.000"), "amount": Decimal("0.00")}
    assert_consistent(db, "inv")
    # mismatching recorder in an item: rejected, nothing changes
    with pytest.raises(psycopg.Error) as exc:
        repost(db, "inv", "d2", [mv("d2", "2026-02-03", 1, "p", 1), mv("other", "2026-02-03", 1, "p", 1)])
    assert exc.value.sqlstate == "22023"
    assert (exc.value.diag.message_primary or "").startswith("inv: movements[1].recorder: ")
    assert sorted(m["recorder"] for m in movements(db, "inv")) == ["d2", "d3"]


def test_bigint_recorder(db: Conn) -> None:
    create(db, "docs", recorder_type="bigint")
    assert (
        post_movements(
            db,
            "docs",
            [
                mv(42, "2026-01-01", 1, "p", 1),
                mv("42", "2026-01-02", 1, "p", 2),
                mv(7, "2026-01-01", 1, "p", 3),
            ],
        )
        == 3
    )
    assert [m["recorder"] for m in movements(db, "docs")] == [42, 7, 42]  # by period, then id
    assert repost(db, "docs", "42", [mv(42, "2026-01-03", 1, "p", 5), mv("42", "2026-01-03", 1, "p", 5)]) == 2
    assert unpost(db, "docs", "7") == 1
    assert one(db, "SELECT accum.docs_balance()")["quantity"] == Decimal("10.000")
    assert [
        r[0]["recorder"] for r in db.execute("SELECT m FROM accum.docs_movements('42') m").fetchall()
    ] == [42, 42]
    assert unpost(db, "docs", "42") == 2
    assert_consistent(db, "docs")


def test_uuid_recorder(db: Conn) -> None:
    create(db, "docs", recorder_type="uuid")
    upper = "C0F3E2A4-4C1E-4BB0-9D5B-1F2A3B4C5D6E"
    assert (
        post_movements(
            db, "docs", [mv(upper, "2026-01-01", 1, "p", 1), mv(upper.lower(), "2026-01-02", 1, "p", 2)]
        )
        == 2
    )
    assert {m["recorder"] for m in movements(db, "docs")} == {upper.lower()}
    assert repost(db, "docs", upper.lower(), [mv(upper, "2026-01-03", 1, "p", 5)]) == 1
    assert unpost(db, "docs", upper) == 1
    assert movements(db, "docs") == []
    assert_consistent(db, "docs")


# ---- register_apply --------------------------------------------------------------------------------------


def cmd(
    op: str, register: str, recorder: str, movements: list[Movement] | None = None, **extra: Any
) -> dict[str, Any]:
    c: dict[str, Any] = {"op": op, "register": register, "recorder": recorder, **extra}
    if movements is not None:
        c["movements"] = movements
    return c


def script(register: str) -> list[dict[str, Any]]:
    """post A, repost A, post A, unpost A, post A; B and C (with stored movements) interleaved."""

    def m(rec: str, day: int, wh: int, q: Any) -> Movement:
        return {k: v for k, v in mv(rec, f"2026-01-{day:02d}", wh, "p", q, "1.5").items() if k != "recorder"}

    return [
        cmd("post", register, "A", [m("A", 1, 1, 1), m("A", 2, 2, 2)]),
        cmd("unpost", register, "B"),
        cmd("repost", register, "A", [m("A", 3, 1, 10)]),
        cmd("post", register, "B", [m("B", 4, 1, 100)]),
        cmd(
            "post",
            register,
            "A",
            [m("A", 5, 2, 20), m("A", 5, 3, 30)],
            id="cmd-5",
            sent_at="2026-01-05T00:00:00Z",
        ),
        cmd("repost", register, "C", []),
        cmd("unpost", register, "A"),
        cmd("post", register, "C", [m("C", 6, 1, 1000)]),
        cmd("post", register, "A", [m("A", 7, 1, 7)]),
        cmd("unpost", register, "D"),
        cmd("repost", register, "B", [m("B", 8, 2, 200), m("B", 8, 3, 300)]),
        cmd("post", register, "B", [m("B", 9, 2, 1)]),
    ]


def one_by_one(conn: Conn, commands: list[dict[str, Any]]) -> list[int]:
    counts = []
    for c in commands:
        if c["op"] == "post":
            counts.append(
                post_movements(conn, c["register"], [dict(x, recorder=c["recorder"]) for x in c["movements"]])
            )
        elif c["op"] == "repost":
            counts.append(repost(conn, c["register"], c["recorder"], c["movements"]))
        else:
            counts.append(unpost(conn, c["register"], c["recorder"]))
    return counts


@pytest.mark.parametrize("high_write", [False, True], ids=["standard", "high_write"])
def test_apply_equals_one_by_one(db: Conn, high_write: bool) -> None:
    stored = [mv(r, "2025-12-31T23:30:00Z", 1, "p", n) for r, n in (("A", 1), ("B", 2), ("B", 3), ("C", 4))]
    for name in ("batch", "single"):
        create(db, name, high_write=high_write, time_zone="Europe/Berlin")
        post_movements(db, name, stored)

    rows = apply(db, script("batch"), "skip")
    counts = one_by_one(db, script("single"))
    assert [r[0] for r in rows] == list(range(len(counts)))
    assert [r[1] for r in rows] == ["applied"] * len(counts)
    assert [r[2] for r in rows] == counts
    assert [(r[3], r[4]) for r in rows] == [(None, None)] * len(counts)
    assert counts == [2, 2, 1, 1, 2, 0, 3, 1, 1, 0, 2, 1]

    def key(m: dict[str, Any]) -> str:
        return json.dumps(m, sort_keys=True, default=str)

    assert sorted(map(key, movements(db, "batch"))) == sorted(map(key, movements(db, "single")))
    assert [m["period"] for m in movements(db, "batch")] == [m["period"] for m in movements(db, "single")]
    assert groups(db, "batch") == groups(db, "single")
    assert one(db, "SELECT accum.batch_balance()") == one(db, "SELECT accum.single_balance()")
    assert_consistent(db, "batch")
    assert_consistent(db, "single")
    # the same script again in abort mode: still equal
    assert [r[2] for r in apply(db, script("batch"))] == one_by_one(db, script("single"))
    assert sorted(map(key, movements(db, "batch"))) == sorted(map(key, movements(db, "single")))
    assert_consistent(db, "batch")


def test_apply_skip_and_abort(db: Conn) -> None:
    create(db, "inv")
    create(db, "other", dims={"k": "text"}, res={"n": "integer"})
    good = {k: v for k, v in mv("", "2026-01-01", 1, "p", 1).items() if k != "recorder"}
    bad = dict(good, quantity="NaN")
    commands: list[Any] = [
        cmd("post", "inv", "A", [good]),
        cmd("post", "inv", "B", [good, bad]),
        5,
        cmd("post", "nope", "C", [good]),
        cmd("post", "other", "D", [{"period": "2026-01-01", "k": "x", "n": 3}]),
        cmd("unpost", "inv", "A", [good]),
        cmd("post", "inv", "E", [good]),
    ]
    before = movements(db, "inv"), movements(db, "other")
    with pytest.raises(psycopg.Error) as exc:
        apply(db, commands)
    assert exc.value.sqlstate == "22023"
    assert (exc.value.diag.message_primary or "").startswith("inv: commands[1].movements[1].quantity: ")
    assert (movements(db, "inv"), movements(db, "other")) == before

    rows = apply(db, commands, "skip")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (0, "applied", 1, None),
        (1, "rejected", None, "22023"),
        (2, "rejected", None, "22023"),
        (3, "rejected", None, "42704"),
        (4, "applied", 1, None),
        (5, "rejected", None, "22023"),
        (6, "applied", 1, None),
    ]
    assert rows[1][4].startswith("inv: commands[1].movements[1].quantity: ")
    assert "commands[2]" in rows[2][4]
    assert rows[3][4] == 'nope: commands[3].register: register "nope" does not exist'
    assert rows[5][4].startswith("inv: commands[5].movements: ")
    assert sorted(m["recorder"] for m in movements(db, "inv")) == ["A", "E"]
    assert [m["recorder"] for m in movements(db, "other")] == ["D"]
    assert_consistent(db, "inv")
    assert_consistent(db, "other")


def test_apply_shapes(db: Conn) -> None:
    create(db, "inv")
    assert apply(db, []) == []
    good = {k: v for k, v in mv("", "2026-01-01", 1, "p", 1).items() if k != "recorder"}
    rows = apply(
        db, [cmd("post", "inv", "A", [good]), cmd("post", "inv", "A", [dict(good, recorder="B")])], "skip"
    )
    # movements take the command's recorder; a different one in an item is a data error
    assert [(r[1], r[3]) for r in rows] == [("applied", None), ("rejected", "22023")]
    rows = apply(
        db, [cmd("post", "inv", "A", [dict(good, recorder="A")]), cmd("repost", "inv", "A", [])], "skip"
    )
    assert [(r[1], r[2]) for r in rows] == [("applied", 1), ("applied", 0)]
    assert movements(db, "inv") == []


# ---- direct DML ------------------------------------------------------------------------------------------


def test_direct_dml_keeps_derived_tables(db: Conn) -> None:
    create(db, "inv", time_zone="Europe/Berlin")
    post_movements(
        db, "inv", [mv("d1", "2020-01-05T10:00", 1, "p", 1, "1"), mv("d2", "2020-02-05", 2, "q", 2, "2")]
    )
    db.execute(
        "INSERT INTO accum.inv_movements (recorder, period, warehouse, product, quantity, amount)"
        " VALUES ('x1', '2020-01-31 23:30:00+00', 1, 'p', 3, 3), ('x1', now(), 3, 'r', 4, 4)"
    )
    assert_consistent(db, "inv")
    # UPDATE moving a row from the default partition into the current period's partition
    db.execute("UPDATE accum.inv_movements SET period = now(), quantity = quantity + 1 WHERE recorder = 'd1'")
    assert one(db, "SELECT count(*) FROM accum.inv_movements_default WHERE recorder = 'd1'") == 0
    assert one(db, "SELECT count(*) FROM accum.inv_movements WHERE recorder = 'd1'") == 1
    assert_consistent(db, "inv")
    # UPDATE of a dimension: the old combination loses, the new one gains
    db.execute("UPDATE accum.inv_movements SET warehouse = 9, product = 'z' WHERE recorder = 'd2'")
    assert one(db, "SELECT accum.inv_balance('{\"warehouse\": 2}')") == {"quantity": 0, "amount": 0}
    assert one(db, 'SELECT accum.inv_balance(\'{"warehouse": 9, "product": "z"}\')')["quantity"] == Decimal(
        "2.000"
    )
    assert_consistent(db, "inv")
    # a no-op UPDATE and a mixed one in one statement
    db.execute("UPDATE accum.inv_movements SET amount = amount")
    db.execute("UPDATE accum.inv_movements SET period = period - interval '1 year', amount = amount * 2")
    assert_consistent(db, "inv")
    db.execute("DELETE FROM accum.inv_movements WHERE recorder = 'x1'")
    assert_consistent(db, "inv")
    db.execute("DELETE FROM accum.inv_movements")
    for table in ("totals_day", "totals_month", "totals_year", "balance_cache"):
        assert one(db, f"SELECT count(*) FROM accum.inv_{table}") == 0, table
    assert db.execute("SELECT * FROM accum.register_verify('inv')").fetchall() == []


INSERT_INV = (
    "INSERT INTO accum.inv_movements (recorder, period, warehouse, product, quantity, amount) VALUES "
)
DML_ERRORS = [
    (INSERT_INV + "('r', now(), 1, 'p', 'NaN', 0)", "23514"),
    (INSERT_INV + "('r', now(), 1, 'p', 'Infinity', 0)", "22003"),  # numeric(18,3) cannot hold it
    (INSERT_INV + "('r', now(), 1, NULL, 1, 0)", "23502"),
    (INSERT_INV + "('', now(), 1, 'p', 1, 0)", "23514"),
    (INSERT_INV + "('r', now(), 1, repeat('x', 1025), 1, 0)", "23514"),
    (INSERT_INV + "('r', '10000-01-01 00:00:00+00', 1, 'p', 1, 0)", "23514"),
    (INSERT_INV + "('r', '0001-01-01 00:00:00+00 BC', 1, 'p', 1, 0)", "23514"),
    ("UPDATE accum.inv_movements SET product = NULL", "23502"),
    ("UPDATE accum.inv_movements SET dim_hash = 1", "428C9"),
]


def test_direct_dml_constraints(db: Conn) -> None:
    """Direct DML is checked by column types and constraints (SPEC §4.4); a rejected one leaves no trace."""
    create(db, "inv")
    post_movements(db, "inv", [mv("d1", "2026-01-05", 1, "p", 1)])
    for statement, sqlstate in DML_ERRORS:
        with pytest.raises(psycopg.Error) as exc:
            db.execute(statement)
        assert exc.value.sqlstate == sqlstate, statement
    assert len(movements(db, "inv")) == 1
    assert_consistent(db, "inv")


# ---- dimension identity ----------------------------------------------------------------------------------


def test_pipe_in_text_values_keeps_combinations_apart(db: Conn) -> None:
    create(db, "pipes", dims={"x": "text", "y": "text"}, res={"n": "integer"})
    post_movements(
        db,
        "pipes",
        [
            {"recorder": "r", "period": "2026-01-01", "x": "a|b", "y": "c", "n": 1},
            {"recorder": "r", "period": "2026-01-01", "x": "a", "y": "b|c", "n": 10},
        ],
    )
    assert one(db, "SELECT count(*) FROM accum.pipes_balance_cache") == 2
    assert one(db, 'SELECT accum.pipes_balance(\'{"x": "a|b", "y": "c"}\')') == {"n": 1}
    assert one(db, 'SELECT accum.pipes_balance(\'{"x": "a", "y": "b|c"}\')') == {"n": 10}
    assert one(db, 'SELECT accum.pipes_balance(\'{"x": "a"}\')') == {"n": 10}
    assert groups(db, "pipes") == [{"x": "a", "y": "b|c", "n": 10}, {"x": "a|b", "y": "c", "n": 1}]
    assert_consistent(db, "pipes")


def test_numeric_dimension_identity_ignores_display_scale(db: Conn) -> None:
    create(db, "nums", dims={"lot": "numeric(6,2)"}, res={"n": "integer"})
    post_movements(
        db,
        "nums",
        [
            {"recorder": "r", "period": "2026-01-01", "lot": 1, "n": 1},
            {"recorder": "r", "period": "2026-01-01", "lot": "1.0", "n": 2},
            {"recorder": "r", "period": "2026-01-01", "lot": 1.50, "n": 4},
        ],
    )
    assert one(db, "SELECT count(*) FROM accum.nums_balance_cache") == 2
    assert one(db, 'SELECT accum.nums_balance(\'{"lot": "1.00"}\')') == {"n": 3}
    assert one(db, "SELECT accum.nums_balance('{\"lot\": 1.5}')") == {"n": 4}
    assert Counter(m["lot"] for m in movements(db, "nums")) == Counter(
        {Decimal("1.00"): 2, Decimal("1.50"): 1}
    )
    assert_consistent(db, "nums")


# ---- field names vs generated SQL ------------------------------------------------------------------------

# Legal names (§4.2) that equal aliases, CTE names or columns a generator might use internally.
SHADOW_DIMS = {
    "b": "integer",
    "e": "text",
    "s": "text",
    "x": "date",
    "k": "boolean",
    "c": "text",
    "mv": "integer",
    "a": "integer",
    "u": "integer",
    "q": "integer",
    "d": "integer",
    "g": "integer",
    "rec": "integer",
    "op": "integer",
    "v": "integer",
    "w": "integer",
}
SHADOW_RES = {
    "n": "integer",
    "z": "numeric(10,2)",
    "fresh": "integer",
    "t": "bigint",
    "m": "smallint",
    "i": "integer",
    "cum": "integer",
    "prev": "integer",
    "affected": "integer",
    "up": "integer",
    "ins": "integer",
    "l": "integer",
    "r": "integer",
    "y": "integer",
    "o": "integer",
    "h": "integer",
    "f": "integer",
    "j": "integer",
    "p": "integer",
    "gmax": "integer",
    "outcome": "integer",
    "ord": "integer",
}


@pytest.mark.parametrize("high_write", [False, True], ids=["standard", "high_write"])
def test_field_names_never_clash_with_generated_sql(db: Conn, high_write: bool) -> None:
    # A register this wide makes PostgreSQL JIT-compile register_apply's statements (~1 s per call with the
    # default jit settings; reported to the engine owner). This test is about names, so keep it fast.
    db.execute("SET jit = off")
    create(db, "shadow", dims=SHADOW_DIMS, res=SHADOW_RES, high_write=high_write, time_zone="Europe/Berlin")

    def m(day: int, b: int, q: int) -> Movement:
        base = {
            "period": f"2026-01-{day:02d}T12:00",
            "b": b,
            "e": "e",
            "s": "s",
            "x": "2026-01-01",
            "k": True,
            "c": "c",
            "mv": 1,
            "n": q,
            "z": "1.25",
            "fresh": q,
            "t": q,
            "m": q,
            "i": q,
        }
        return (
            base
            | dict.fromkeys(set(SHADOW_DIMS) - set(base), 0)
            | dict.fromkeys(set(SHADOW_RES) - set(base), q)
        )

    assert (
        post_movements(db, "shadow", [dict(m(1, 1, 1), recorder="r1"), dict(m(2, 2, 2), recorder="r2")]) == 2
    )
    assert repost(db, "shadow", "r1", [m(3, 1, 5)]) == 1
    rows = apply(
        db,
        [
            cmd("post", "shadow", "r3", [m(4, 3, 7)]),
            cmd("unpost", "shadow", "r2"),
            cmd("repost", "shadow", "r3", [m(5, 3, 8)]),
        ],
        "skip",
    )
    assert [(r[1], r[2]) for r in rows] == [("applied", 1), ("applied", 1), ("applied", 1)]
    db.execute("UPDATE accum.shadow_movements SET n = n + 1 WHERE recorder = 'r1'")
    assert one(db, "SELECT accum.shadow_balance('{\"b\": 1}')")["n"] == 6
    assert one(db, "SELECT accum.shadow_balance('{\"b\": 3}', '2026-01-31')")["i"] == 8
    assert len(movements(db, "shadow")) == 2
    assert_consistent(db, "shadow")
    if high_write:
        assert one(db, "SELECT accum.register_merge('shadow')") > 0
    assert one(db, "SELECT accum.register_rebuild_totals('shadow')") > 0
    assert one(db, "SELECT accum.register_rebuild_cache('shadow')") == 2
    assert one(db, "SELECT accum.register_stats('shadow')")["movements_count"] == 2
    assert unpost(db, "shadow", "r1") == 1
    assert_consistent(db, "shadow")


def test_wide_register_apply_stays_fast(db: Conn) -> None:
    """register_apply on a register with 8 dimensions and 8 resources, with the server's default jit settings.

    Its generated statements are large; if PostgreSQL JIT-compiles them, one call costs seconds instead of
    milliseconds (measured: ~9 s vs ~30 ms). The bound is ~100x the healthy time, and statement_timeout caps
    the wait, so this fails fast rather than slowly.
    """
    dims = {f"d{i}": "integer" for i in range(8)}
    res = {f"r{i}": "integer" for i in range(8)}
    create(db, "wide", dims=dims, res=res)
    movement = {"period": "2026-01-01"} | dict.fromkeys(dims, 1) | dict.fromkeys(res, 1)
    db.execute("SET statement_timeout = '3s'")
    for i in range(2):  # the second call runs with cached plans
        rows = apply(db, [cmd("post", "wide", f"r{i}", [movement]), cmd("repost", "wide", "r0", [movement])])
        assert [r[1] for r in rows] == ["applied", "applied"]
    assert_consistent(db, "wide")
