"""Time: the register zone decides everything, session settings nothing (SPEC §5, §8, §10).

- The same write script, run from writer sessions with different TimeZone / DateStyle / extra_float_digits,
  and read back from reader sessions with other settings, gives byte-identical results.
- Buckets follow the register zone in both directions (Asia/Tokyo ahead of UTC, America/Adak behind it).
- Period strings with ``Z``, ``+14:00``, ``-12:00``, ``+05:45``, ``+05`` and fractional seconds denote the
  exact instant; local times in DST gaps and overlaps resolve like PostgreSQL.
- Turnover bounds that cut days in the middle are inclusive instants.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from helpers import Conn
from psycopg import sql

DIMENSIONS = '{"item": "text"}'
RESOURCES = '{"amount": "numeric(12,2)", "qty": "integer"}'

# Reader and writer sessions: every setting that changes how PostgreSQL reads or prints times and numbers.
SESSIONS: dict[str, dict[str, str]] = {
    "utc-iso": {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "extra_float_digits": "1"},
    "kiritimati-sql-dmy": {
        "TimeZone": "Pacific/Kiritimati",
        "DateStyle": "SQL, DMY",
        "extra_float_digits": "-15",
    },
    "adak-german": {"TimeZone": "America/Adak", "DateStyle": "German", "extra_float_digits": "3"},
    "kiritimati-german": {"TimeZone": "Pacific/Kiritimati", "DateStyle": "German", "extra_float_digits": "3"},
    "adak-sql-dmy": {"TimeZone": "America/Adak", "DateStyle": "SQL, DMY", "extra_float_digits": "-15"},
}
WRITER_SESSIONS = ("utc-iso", "kiritimati-sql-dmy", "adak-german")


@contextmanager
def session(dsn: str, name: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key, value in SESSIONS[name].items():
            conn.execute("SELECT set_config(%s, %s, false)", (key, value))
        yield conn


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Line:
    recorder: str
    period: str  # as sent
    item: str
    amount: str
    instant: datetime  # what the period string denotes (worked out by hand, SPEC §5.2)


# Amounts are distinct powers of two, so every sum names exactly the movements it contains.
TOKYO = (  # +09:00, no DST: local dates run ahead of UTC
    Line("d1", "2025-01-31T23:30", "a", "1.00", utc("2025-01-31T14:30:00Z")),  # 31 Jan in both
    Line("d1", "2025-02-01T00:30", "b", "2.00", utc("2025-01-31T15:30:00Z")),  # February here, 31 Jan in UTC
    Line("d2", "2024-12-31T15:00:00Z", "a", "4.00", utc("2024-12-31T15:00:00Z")),  # 2025 here, 2024 in UTC
    Line("d2", "2025-01-01T08:59:59.999999+09:00", "b", "8.00", utc("2024-12-31T23:59:59.999999Z")),
    Line("d3", "2025-03-10", "a", "16.00", utc("2025-03-09T15:00:00Z")),  # local midnight
    Line("d3", "2025-03-10T08:00+05:45", "a", "32.00", utc("2025-03-10T02:15:00Z")),  # 11:15 local
    Line("d3", "2025-03-10 12:00", "b", "64.00", utc("2025-03-10T03:00:00Z")),
    Line("d3", "2025-03-10T08:00+05", "a", "128.00", utc("2025-03-10T03:00:00Z")),  # 12:00 local as well
    Line(
        "d4", "2025-03-10T12:00:00.5+14:00", "b", "256.00", utc("2025-03-09T22:00:00.5Z")
    ),  # 07:00:00.5 local
    Line("d4", "2025-03-10T18:00-12:00", "a", "512.00", utc("2025-03-11T06:00:00Z")),  # 15:00 local, 11 March
    Line("d4", "2025-03-10T23:59:59.000001", "b", "1024.00", utc("2025-03-10T14:59:59.000001Z")),
    Line(
        "d5", "2025-02-28T23:59:59.123456Z", "a", "2048.00", utc("2025-02-28T23:59:59.123456Z")
    ),  # 1 March here
    Line("d5", "2025-03-10T18:00", "b", "4096.00", utc("2025-03-10T09:00:00Z")),
)
ADAK = (  # -10:00 / -09:00 (DST): local dates run behind UTC
    Line("e1", "2025-02-28T23:30", "a", "1.00", utc("2025-03-01T09:30:00Z")),  # February here, March in UTC
    Line("e1", "2025-03-01T05:00Z", "b", "2.00", utc("2025-03-01T05:00:00Z")),  # 28 Feb 19:00 here
    Line("e2", "2025-01-01T09:59:59Z", "a", "4.00", utc("2025-01-01T09:59:59Z")),  # 2024 here, 2025 in UTC
    Line("e2", "2025-01-01T10:00:00Z", "b", "8.00", utc("2025-01-01T10:00:00Z")),  # 2025-01-01 00:00 here
    Line("e3", "2025-03-09T02:30", "a", "16.00", utc("2025-03-09T12:30:00Z")),  # DST gap: offset before (-10)
    Line("e3", "2025-11-02T01:30", "b", "32.00", utc("2025-11-02T11:30:00Z")),  # overlap: offset after (-10)
    Line("e4", "2025-06-30T23:59:59.999999-12:00", "a", "64.00", utc("2025-07-01T11:59:59.999999Z")),
    Line("e4", "2025-07-01T00:00:00.000001+14:00", "b", "128.00", utc("2025-06-30T10:00:00.000001Z")),
)
SCRIPTS = {"Asia/Tokyo": TOKYO, "America/Adak": ADAK}


def _movement(line: Line, with_recorder: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"period": line.period, "item": line.item, "amount": line.amount, "qty": 1}
    return {"recorder": line.recorder, **out} if with_recorder else out


def run_script(conn: Conn, register: str, lines: Sequence[Line]) -> None:
    """Posts, reposts, unposts and one register_apply batch whose net result is exactly ``lines``."""
    docs: dict[str, list[Line]] = {}
    for line in lines:
        docs.setdefault(line.recorder, []).append(line)
    names = list(docs)
    first, second, rest = names[0], names[1], names[2:]
    dump = json.dumps
    conn.execute(
        "SELECT accum.register_post(%s, %s::jsonb)",
        (register, dump([_movement(x) for x in docs[first] + docs[second]])),
    )
    # a repost with the lines in reverse order and without the recorder key changes nothing
    conn.execute(
        "SELECT accum.register_repost(%s, %s, %s::jsonb)",
        (register, second, dump([_movement(x, False) for x in reversed(docs[second])])),
    )
    conn.execute(
        "SELECT accum.register_post(%s, %s::jsonb)",
        (register, dump([{**_movement(x), "recorder": "tmp"} for x in docs[first]])),
    )
    batch: list[dict[str, Any]] = [{"op": "unpost", "register": register, "recorder": "tmp"}]
    for name in rest:
        batch += [
            {
                "op": "post",
                "register": register,
                "recorder": name,
                "movements": [_movement(docs[first][0], False)],
            },
            {
                "op": "repost",
                "register": register,
                "recorder": name,
                "movements": [_movement(x, False) for x in docs[name]],
            },
        ]
    rows = conn.execute("SELECT outcome FROM accum.register_apply(%s::jsonb)", (dump(batch),)).fetchall()
    assert {r[0] for r in rows} == {"applied"}
    # partition maintenance moves the back-dated rows out of the default partition; reads must not change
    conn.execute("SELECT accum.register_create_partitions(%s)", (register,))


# ------------------------------------------------------------------------------------------------------------
# Reads
# ------------------------------------------------------------------------------------------------------------


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def month_bounds(zone: str, year: int, month: int) -> tuple[datetime, datetime]:
    """First and last microsecond of a local month, as instants."""
    z = ZoneInfo(zone)
    start = datetime(year, month, 1, tzinfo=z)
    nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=z)
    return start, nxt - timedelta(microseconds=1)


TURNOVER_RANGES: dict[str, list[tuple[datetime | None, datetime | None]]] = {
    "Asia/Tokyo": [
        (_t("2025-03-10T10:00+09:00"), _t("2025-03-10T18:00+09:00")),  # a day cut at both ends
        (_t("2025-03-10T12:00:00.000001+09:00"), _t("2025-03-11T15:00+09:00")),
        (_t("2025-01-15T12:00+09:00"), _t("2025-03-10T12:00+09:00")),  # partial days around whole months
        (None, _t("2025-03-10T07:00:00.5+09:00")),
        (_t("2025-03-10T07:00:00.500001+09:00"), None),
        (_t("2025-03-10T01:00Z"), _t("2025-03-10T03:00Z")),  # bounds in another offset
        (_t("2024-12-31T15:00Z"), _t("2024-12-31T23:59:59.999999Z")),  # 1 Jan 2025 here, 31 Dec in UTC
        (_t("2025-03-11T00:00+09:00"), _t("2025-03-10T00:00+09:00")),  # from > to: empty
    ],
    "America/Adak": [
        (_t("2025-02-28T12:00-10:00"), _t("2025-02-28T23:30-10:00")),
        (_t("2025-03-09T00:00-10:00"), _t("2025-03-09T02:30-10:00")),
        (_t("2025-11-02T01:30-09:00"), _t("2025-11-02T01:30-10:00")),  # both sides of the overlap
        (None, _t("2024-12-31T23:59:59-10:00")),
        (_t("2025-06-30T00:00:00.000001Z"), _t("2025-07-01T11:59:59.999999Z")),
    ],
}


@dataclass
class Read:
    label: str
    query: sql.Composable
    params: tuple[Any, ...] = ()
    cross_register: bool = True  # equal across registers made by different writer sessions


def catalog_reads(register: str) -> list[Read]:
    """register_info and register_partitions: partition bounds as the register zone and as epochs."""
    return [
        Read(
            "info",
            sql.SQL("(accum.register_info(%s) - 'name' - 'created_at' - 'updated_at' - 'tables')::text"),
            (register,),
            cross_register=False,
        ),
        Read(
            "info partitions",
            sql.SQL(
                "(SELECT jsonb_agg(p - 'name')::text "
                "FROM jsonb_array_elements(accum.register_info(%s)->'partitions') p)"
            ),
            (register,),
        ),
        Read(
            "partitions",
            sql.SQL(
                "(SELECT jsonb_agg(jsonb_build_array(extract(epoch FROM from_date), "
                "extract(epoch FROM to_date), is_default) ORDER BY is_default, from_date)::text "
                "FROM accum.register_partitions(%s))"
            ),
            (register,),
        ),
    ]


def reads(register: str, zone: str, high_write: bool) -> list[Read]:
    """Every read function, verify and the derived tables, each as one text value."""

    def fn(suffix: str) -> sql.Identifier:
        return sql.Identifier("accum", f"{register}_{suffix}")

    agg = "(SELECT coalesce(jsonb_agg(t.j ORDER BY t.n), '[]')::text FROM {} WITH ORDINALITY t(j, n))"
    out = [
        Read("balance", sql.SQL("{}()::text").format(fn("balance"))),
        Read("balance item=a", sql.SQL('{}(\'{{"item": "a"}}\')::text').format(fn("balance"))),
        Read(
            "turnover all by item",
            sql.SQL(agg).format(sql.SQL("{}(group_by => '[\"item\"]')").format(fn("turnover"))),
        ),
    ]
    instants = sorted({line.instant for line in SCRIPTS[zone]})
    for at in instants:
        for shift in (timedelta(microseconds=-1), timedelta(0)):
            out.append(
                Read(
                    f"balance at {at + shift}",
                    sql.SQL("{}(NULL, %s)::text").format(fn("balance")),
                    (at + shift,),
                )
            )
    for year, month in ((2024, 12), (2025, 1), (2025, 2), (2025, 3), (2025, 6), (2025, 7), (2025, 11)):
        out.append(
            Read(
                f"turnover {year}-{month:02d}",
                sql.SQL(agg).format(sql.SQL("{}(%s, %s)").format(fn("turnover"))),
                month_bounds(zone, year, month),
            )
        )
    for frm, to in TURNOVER_RANGES[zone]:
        out.append(
            Read(
                f"turnover {frm}..{to}",
                sql.SQL(agg).format(sql.SQL("{}(%s, %s, NULL, '[\"item\"]')").format(fn("turnover"))),
                (frm, to),
            )
        )
        out.append(
            Read(
                f"turnover total {frm}..{to}",
                sql.SQL(agg).format(sql.SQL("{}(%s, %s)").format(fn("turnover"))),
                (frm, to),
            )
        )
    out += [
        Read(
            "movements",
            sql.SQL(
                "(SELECT jsonb_agg(t.j - 'id' - 'recorded_at' ORDER BY t.j->>'period', t.j->>'amount')::text "
                "FROM {}() t(j))"
            ).format(fn("movements")),
        ),
        Read(
            "movements in range",
            sql.SQL(
                "(SELECT jsonb_agg(t.j->'amount' ORDER BY t.j->>'amount')::text FROM {}(NULL, %s, %s) t(j))"
            ).format(fn("movements")),
            TURNOVER_RANGES[zone][0],
        ),
        Read(
            "verify",
            sql.SQL(
                "(SELECT jsonb_agg(to_jsonb(v) ORDER BY v.check_type, v.period, v.dimensions::text)::text "
                "FROM accum.register_verify(%s) v)"
            ),
            (register,),
        ),
    ]
    if not high_write:  # a high-write register's totals wait in the delta buffer
        for level in ("day", "month", "year"):
            out.append(
                Read(
                    f"totals_{level}",
                    sql.SQL(
                        "(SELECT jsonb_agg(to_jsonb(t) ORDER BY t.period, t.item)::text FROM {} t)"
                    ).format(fn(f"totals_{level}")),
                )
            )
        out.append(
            Read(
                "balance_cache",
                sql.SQL(
                    "(SELECT jsonb_agg(to_jsonb(t) - 'last_movement_at' - 'version' ORDER BY t.item)::text "
                    "FROM {} t)"
                ).format(fn("balance_cache")),
            )
        )
    return out


def read_everywhere(dsn: str, register: str, todo: Sequence[Read]) -> dict[str, str]:
    """Runs every read in every reader session; all sessions must return identical text."""
    results: dict[str, dict[str, str]] = {}
    for name in SESSIONS:
        with session(dsn, name) as conn:
            got: dict[str, str] = {}
            for read in todo:
                try:
                    row = conn.execute(sql.SQL("SELECT {}").format(read.query), read.params).fetchone()
                    got[read.label] = "" if row is None else str(row[0])
                except psycopg.Error as exc:
                    got[read.label] = f"ERROR {exc.sqlstate}: {str(exc).splitlines()[0]}"
            results[name] = got
    base_name, base = next(iter(results.items()))
    problems = [
        f"{read_label}: {base_name} -> {base[read_label]!r}\n    {name} -> {got[read_label]!r}"
        for name, got in results.items()
        for read_label in base
        if got[read_label] != base[read_label]
    ]
    problems += [f"{label}: {text}" for label, text in base.items() if text.startswith("ERROR")]
    assert not problems, f"register {register}: reads depend on the session:\n" + "\n".join(problems)
    return base


# ------------------------------------------------------------------------------------------------------------
# Expected values, from the hand-worked instants
# ------------------------------------------------------------------------------------------------------------


def _sum(lines: Sequence[Line]) -> Decimal:
    return sum((Decimal(x.amount) for x in lines), Decimal(0))


def _local_date(line: Line, zone: str) -> datetime:
    return line.instant.astimezone(ZoneInfo(zone))


def check_expected(results: Mapping[str, str], zone: str, high_write: bool) -> None:
    lines = SCRIPTS[zone]
    problems: list[str] = []

    def expect(label: str, value: Any) -> None:
        actual = json.loads(results[label], parse_float=Decimal, parse_int=Decimal)
        if actual != value:
            problems.append(f"{label}: expected {value!r}, got {actual!r}")

    expect("balance", {"amount": _sum(lines), "qty": len(lines)})
    expect(
        "balance item=a",
        {
            "amount": _sum([x for x in lines if x.item == "a"]),
            "qty": len([x for x in lines if x.item == "a"]),
        },
    )
    for at in sorted({x.instant for x in lines}):
        for shift in (timedelta(microseconds=-1), timedelta(0)):
            chosen = [x for x in lines if x.instant <= at + shift]
            expect(f"balance at {at + shift}", {"amount": _sum(chosen), "qty": len(chosen)})
    for year, month in ((2024, 12), (2025, 1), (2025, 2), (2025, 3), (2025, 6), (2025, 7), (2025, 11)):
        chosen = [
            x for x in lines if (_local_date(x, zone).year, _local_date(x, zone).month) == (year, month)
        ]
        expect(f"turnover {year}-{month:02d}", [{"amount": _sum(chosen), "qty": len(chosen)}])
    for frm, to in TURNOVER_RANGES[zone]:
        chosen = [x for x in lines if (frm is None or frm <= x.instant) and (to is None or x.instant <= to)]
        expect(f"turnover total {frm}..{to}", [{"amount": _sum(chosen), "qty": len(chosen)}])
        groups = [
            {
                "item": i,
                "amount": _sum([x for x in chosen if x.item == i]),
                "qty": len([x for x in chosen if x.item == i]),
            }
            for i in ("a", "b")
        ]
        expect(f"turnover {frm}..{to}", [g for g in groups if g["qty"]])
    movements = json.loads(results["movements"], parse_float=Decimal)
    got = sorted((datetime.fromisoformat(m["period"]), m["amount"]) for m in movements)
    want = sorted((x.instant, Decimal(x.amount)) for x in lines)
    if [(p.astimezone(UTC), a) for p, a in got] != want:
        problems.append(f"movements: instants {got} != {want}")
    for period, _ in got:
        if period.utcoffset() != period.astimezone(ZoneInfo(zone)).utcoffset():
            problems.append(f"movements: {period.isoformat()} is not in the register zone's offset")
    if any(v["status"] != "OK" for v in json.loads(results["verify"])):
        problems.append(f"verify: {results['verify']}")
    if not high_write:
        for level, key in (("day", "%Y-%m-%d"), ("month", "%Y-%m-01"), ("year", "%Y-01-01")):
            buckets: dict[tuple[str, str], Decimal] = {}
            for x in lines:
                k = (_local_date(x, zone).strftime(key), x.item)
                buckets[k] = buckets.get(k, Decimal(0)) + Decimal(x.amount)
            rows = json.loads(results[f"totals_{level}"], parse_float=Decimal, parse_int=Decimal)
            got_buckets = {(r["period"], r["item"]): r["amount"] for r in rows}
            if got_buckets != buckets:
                problems.append(
                    f"totals_{level}: expected {sorted(buckets.items())}, got {sorted(got_buckets.items())}"
                )
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("high_write", [False, True], ids=["standard", "high_write"])
@pytest.mark.parametrize("zone", list(SCRIPTS))
def test_same_script_same_results_in_every_session(db_dsn: str, zone: str, high_write: bool) -> None:
    """Writers in three sessions, readers in five: identical text everywhere, equal to hand-worked values."""
    per_writer: dict[str, dict[str, str]] = {}
    for i, writer in enumerate(WRITER_SESSIONS):
        register = f"tz_{i}"
        with session(db_dsn, writer) as conn:
            conn.execute(
                "SELECT accum.register_create(%s, %s::jsonb, %s::jsonb, high_write => %s, time_zone => %s)",
                (register, DIMENSIONS, RESOURCES, high_write, zone),
            )
            run_script(conn, register, SCRIPTS[zone])
        per_writer[writer] = read_everywhere(db_dsn, register, reads(register, zone, high_write))
    first_writer, first = next(iter(per_writer.items()))
    cross = {r.label for r in reads("x", zone, high_write) if r.cross_register}
    problems = [
        f"{label}: written from {first_writer} -> {first[label]!r}\n    from {writer} -> {got[label]!r}"
        for writer, got in per_writer.items()
        for label in first
        if label in cross and got[label] != first[label]
    ]
    assert not problems, "results depend on the writer's session:\n" + "\n".join(problems)
    check_expected(first, zone, high_write)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Adak"])
def test_register_info_and_partitions_in_every_session(db_dsn: str, zone: str) -> None:
    """Partition bounds read the same in every session, including bounds that fall in the reader's DST.

    With TimeZone America/Adak and DateStyle SQL or German, PostgreSQL prints summer instants with the
    abbreviation HDT, which it cannot read back (not in the default timezone_abbreviations).
    """
    with session(db_dsn, "utc-iso") as conn:
        conn.execute(
            "SELECT accum.register_create('cat', %s::jsonb, %s::jsonb, time_zone => %s)",
            (DIMENSIONS, RESOURCES, zone),
        )
        run_script(conn, "cat", SCRIPTS[zone])  # moves rows into partitions of March (and July, November)
    results = read_everywhere(db_dsn, "cat", catalog_reads("cat"))
    bounds = [p for p in json.loads(results["info partitions"]) if not p["is_default"]]
    assert len(bounds) >= 7
    for p in bounds:  # local period starts: midnight on the first of a month in the register zone
        start = datetime.fromisoformat(p["from"])
        assert start.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == datetime(start.year, start.month, 1)


def test_buckets_follow_the_register_zone_both_ways(conn: Conn) -> None:
    """Month and year buckets are local to the register zone, whichever side of UTC it is."""
    conn.execute("SET TimeZone = 'UTC'")
    for name, zone in (("tokyo", "Asia/Tokyo"), ("adak", "America/Adak")):
        conn.execute(
            "SELECT accum.register_create(%s, %s::jsonb, %s::jsonb, time_zone => %s)",
            (name, DIMENSIONS, RESOURCES, zone),
        )
        conn.execute(
            "SELECT accum.register_post(%s, %s::jsonb)",
            (name, json.dumps([_movement(x) for x in SCRIPTS[zone]])),
        )

    def months(register: str) -> dict[str, str]:
        rows = conn.execute(
            f"SELECT to_char(period, 'YYYY-MM-DD'), sum(amount)::text FROM accum.{register}_totals_month "
            "GROUP BY period ORDER BY period"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def years(register: str) -> dict[str, str]:
        rows = conn.execute(
            f"SELECT to_char(period, 'YYYY'), sum(amount)::text FROM accum.{register}_totals_year "
            "GROUP BY period ORDER BY period"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    # Tokyo: 00:30 on 1 February local is still 31 January in UTC, yet counts in February; the two
    # movements of 31 December in UTC are 1 January 2025 here.
    assert months("tokyo") == {"2025-01-01": "13.00", "2025-02-01": "2.00", "2025-03-01": "8176.00"}
    assert years("tokyo") == {"2025": "8191.00"}
    # Adak: 23:30 on 28 February local is 1 March in UTC, yet counts in February; 09:59:59 UTC on
    # 1 January 2025 is 2024 here.
    assert months("adak") == {
        "2024-12-01": "4.00",
        "2025-01-01": "8.00",
        "2025-02-01": "3.00",
        "2025-03-01": "16.00",
        "2025-06-01": "128.00",
        "2025-07-01": "64.00",
        "2025-11-01": "32.00",
    }
    assert years("adak") == {"2024": "4.00", "2025": "251.00"}
    tokyo_feb = month_bounds("Asia/Tokyo", 2025, 2)
    row = conn.execute("SELECT accum.tokyo_turnover(%s, %s)::text", tokyo_feb).fetchone()
    assert row is not None
    assert json.loads(row[0]) == {"amount": 2.0, "qty": 1}
    for name in ("tokyo", "adak"):
        assert conn.execute("SELECT * FROM accum.register_verify(%s, true)", (name,)).fetchall() == []


DST_CASES = [
    # zone, local wall time in a gap or an overlap, the instant PostgreSQL gives it
    ("America/New_York", "2025-03-09T02:30", "2025-03-09T07:30:00Z"),  # gap: offset before (-05)
    ("America/New_York", "2025-11-02T01:30", "2025-11-02T06:30:00Z"),  # overlap: offset after (-05)
    ("Europe/Berlin", "2025-03-30T02:30", "2025-03-30T01:30:00Z"),
    ("Europe/Berlin", "2025-10-26T02:30", "2025-10-26T01:30:00Z"),
    ("Australia/Lord_Howe", "2025-10-05T02:15", "2025-10-04T15:45:00Z"),  # 30-minute DST shift
    ("Australia/Lord_Howe", "2025-04-06T01:45", "2025-04-05T15:15:00Z"),
    ("America/St_Johns", "2025-03-09T02:30", "2025-03-09T06:00:00Z"),
    ("America/St_Johns", "2025-11-02T01:30", "2025-11-02T05:00:00Z"),
]


@pytest.mark.parametrize(("zone", "local", "instant"), DST_CASES, ids=[f"{c[0]}-{c[1]}" for c in DST_CASES])
def test_dst_gap_and_overlap_resolve_like_postgresql(conn: Conn, zone: str, local: str, instant: str) -> None:
    conn.execute("SET TimeZone = 'Pacific/Kiritimati'")  # the session zone must play no part
    conn.execute(
        "SELECT accum.register_create('dst', %s::jsonb, %s::jsonb, time_zone => %s)",
        (DIMENSIONS, RESOURCES, zone),
    )
    conn.execute(
        "SELECT accum.register_post('dst', %s::jsonb)",
        (json.dumps({"recorder": "x", "period": local, "item": "a", "amount": "1", "qty": 1}),),
    )
    # PostgreSQL's own reading of the same wall time in a session of that zone
    conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    pg = conn.execute("SELECT extract(epoch FROM %s::timestamptz)", (local.replace("T", " "),)).fetchone()
    conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
    row = conn.execute(
        "SELECT extract(epoch FROM period), (period AT TIME ZONE %s)::date::text FROM accum.dst_movements",
        (zone,),
    ).fetchone()
    assert row is not None
    assert pg is not None
    assert row[0] == pg[0] == Decimal(int(utc(instant).timestamp()))
    [movement] = [r[0] for r in conn.execute("SELECT * FROM accum.dst_movements()").fetchall()]
    assert utc(movement["period"]) == utc(instant)
    assert conn.execute("SELECT * FROM accum.register_verify('dst', true)").fetchall() == []
    day_start = datetime.fromisoformat(local[:10]).replace(tzinfo=ZoneInfo(zone))
    day = (
        day_start,
        (day_start + timedelta(days=1)).replace(tzinfo=ZoneInfo(zone)) - timedelta(microseconds=1),
    )
    turnover = conn.execute("SELECT accum.dst_turnover(%s, %s)::text", day).fetchone()
    assert turnover is not None
    assert json.loads(turnover[0]) == {"amount": 1.0, "qty": 1}


@pytest.mark.parametrize(
    ("zone", "accepted", "rejected"),
    [
        (
            "Asia/Kathmandu",
            ["0001-01-01", "0001-01-01T00:00Z", "9999-12-31T23:59:59.999999"],
            ["9999-12-31T23:59:59Z", "0000-12-31T23:00-12:00"],
        ),
        (
            "America/St_Johns",
            ["0001-01-01", "9999-12-31T23:59:59.999999", "9999-12-31T23:59:59Z"],
            ["0001-01-01T00:00Z", "9999-12-31T23:00-12:00"],
        ),
    ],
)
def test_first_and_last_representable_instants(
    conn: Conn, zone: str, accepted: list[str], rejected: list[str]
) -> None:
    """Years 0001-9999 in the register zone (LMT offsets with seconds included); outside them 22008."""
    conn.execute(
        "SELECT accum.register_create('edge', %s::jsonb, %s::jsonb, time_zone => %s)",
        (DIMENSIONS, RESOURCES, zone),
    )
    for period in rejected:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(
                "SELECT accum.register_post('edge', %s::jsonb)",
                (json.dumps({"recorder": "x", "period": period, "item": "a", "amount": "1", "qty": 1}),),
            )
        assert info.value.sqlstate == "22008", (period, info.value.sqlstate, str(info.value))
    data = [
        {"recorder": "x", "period": p, "item": "a", "amount": str(2**i), "qty": 1}
        for i, p in enumerate(accepted)
    ]
    conn.execute("SELECT accum.register_post('edge', %s::jsonb)", (json.dumps(data),))
    total = {"amount": Decimal(2 ** len(accepted) - 1).quantize(Decimal("0.01")), "qty": len(accepted)}

    def one(query: str) -> Any:
        row = conn.execute(query).fetchone()
        assert row is not None
        return json.loads(row[0], parse_float=Decimal, parse_int=Decimal)

    assert one("SELECT accum.edge_balance()::text") == total
    assert one("SELECT accum.edge_balance(NULL, 'infinity')::text") == total
    assert one("SELECT accum.edge_balance(NULL, '-infinity')::text") == {"amount": 0, "qty": 0}
    assert one("SELECT accum.edge_turnover()::text") == total
    first, last = (
        "(SELECT min(period) FROM accum.edge_movements)",
        "(SELECT max(period) FROM accum.edge_movements)",
    )
    us = "interval '1 microsecond'"
    assert one(f"SELECT accum.edge_turnover({first}, {last})::text") == total
    assert one(f"SELECT accum.edge_balance(NULL, {last})::text") == total
    inner = one(f"SELECT accum.edge_turnover({first} + {us}, {last} - {us})::text")
    assert inner["qty"] == len(accepted) - 2
    periods = [r[0]["period"] for r in conn.execute("SELECT * FROM accum.edge_movements()").fetchall()]
    rendered = [
        r[0]
        for r in conn.execute(
            "SELECT accum._ts_text(period, %s) FROM accum.edge_movements ORDER BY period, id", (zone,)
        ).fetchall()
    ]
    assert periods == rendered
    assert periods[0].startswith("0001-01-01T")
    assert periods[-1].startswith("9999-12-31T")
    assert conn.execute("SELECT * FROM accum.register_verify('edge', true)").fetchall() == []


def test_naive_read_bounds_use_the_session_zone(conn: Conn) -> None:
    """SPEC §5.4: a bound literal without offset is read in the caller's TimeZone (PostgreSQL's rule)."""
    conn.execute(
        "SELECT accum.register_create('naive', %s::jsonb, %s::jsonb, time_zone => 'Asia/Tokyo')",
        (DIMENSIONS, RESOURCES),
    )
    conn.execute(
        "SELECT accum.register_post('naive', %s::jsonb)", (json.dumps([_movement(x) for x in TOKYO]),)
    )
    seen = {}
    for zone in ("Asia/Tokyo", "UTC"):
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
        row = conn.execute("SELECT accum.naive_balance(NULL, '2025-03-10 12:00')::text").fetchone()
        assert row is not None
        seen[zone] = json.loads(row[0], parse_float=Decimal)["amount"]
    at_tokyo_noon = _sum([x for x in TOKYO if x.instant <= utc("2025-03-10T03:00:00Z")])
    at_utc_noon = _sum([x for x in TOKYO if x.instant <= utc("2025-03-10T12:00:00Z")])
    assert seen == {"Asia/Tokyo": at_tokyo_noon, "UTC": at_utc_noon}


def test_date_dimension_renders_four_digit_years(conn: Conn) -> None:
    """SPEC §8: date dimension values render as YYYY-MM-DD, whatever the year and the DateStyle."""
    conn.execute("SET DateStyle = 'German'")
    conn.execute('SELECT accum.register_create(\'dates\', \'{"d": "date"}\', \'{"q": "integer"}\')')
    conn.execute(
        "SELECT accum.register_post('dates', %s::jsonb)",
        (
            json.dumps(
                [
                    {"recorder": "x", "period": "2025-01-01", "d": d, "q": 1}
                    for d in ("0001-01-01", "0999-12-31", "2025-02-28")
                ]
            ),
        ),
    )
    groups = [
        r[0]["d"]
        for r in conn.execute("SELECT * FROM accum.dates_turnover(group_by => '[\"d\"]')").fetchall()
    ]
    movements = sorted(r[0]["d"] for r in conn.execute("SELECT * FROM accum.dates_movements()").fetchall())
    assert groups == ["0001-01-01", "0999-12-31", "2025-02-28"]
    assert movements == ["0001-01-01", "0999-12-31", "2025-02-28"]
