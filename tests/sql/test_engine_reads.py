"""Read API through SQL (SPEC §5.4, §8, §9): balance, turnover, movements against a Python model of the
movements, rendering rules, and independence from session settings."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from helpers import Conn, create_register, one, post_movements
from psycopg.types.json import Jsonb

DIMS = {"warehouse": "integer", "product": "text"}
RES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)", "cnt": "integer"}
SCALES = {"quantity": 3, "amount": 2, "cnt": 0}


def raw(text: str) -> Any:
    """JSON with every number kept as its exact text, to check rendering digit for digit."""
    return json.loads(text, parse_float=str, parse_int=str)


def create(conn: Conn, name: str, dims: dict[str, str] = DIMS, res: dict[str, str] = RES, **opts: Any) -> str:
    return create_register(conn, name, dims, res, **opts)


# ---- a model of the movements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mv:
    at: datetime  # the instant
    warehouse: int
    product: str
    res: dict[str, Decimal]


def render(name: str, value: Decimal) -> str:
    scale = SCALES[name]
    return str(int(value)) if scale == 0 else str(value.quantize(Decimal(1).scaleb(-scale)))


def rendered(sums: dict[str, Decimal]) -> dict[str, str]:
    return {k: render(k, sums.get(k, Decimal(0))) for k in RES}


def total(mvs: list[Mv]) -> dict[str, Decimal]:
    out = dict.fromkeys(RES, Decimal(0))
    for m in mvs:
        for k, v in m.res.items():
            out[k] += v
    return out


def period_text(rng: random.Random, local: datetime, zone: ZoneInfo) -> tuple[str, datetime]:
    """A §5.2 period string for a local wall time, in one of the accepted forms, and its instant."""
    form = rng.randrange(6)
    aware = local.replace(tzinfo=zone)
    if form == 0:
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight.strftime("%Y-%m-%d"), midnight.replace(tzinfo=zone)
    if form == 1:
        return local.strftime("%Y-%m-%dT%H:%M"), aware.replace(second=0, microsecond=0)
    if form == 2:
        return local.strftime("%Y-%m-%d %H:%M:%S.%f"), aware
    if form == 3:
        utc = aware.astimezone(UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", utc.replace(
            microsecond=utc.microsecond // 1000 * 1000
        )
    if form == 4:
        other = aware.astimezone(timezone(timedelta(hours=5, minutes=30))).replace(microsecond=0)
        return other.strftime("%Y-%m-%dT%H:%M:%S+05:30"), other
    other = aware.astimezone(timezone(timedelta(hours=-7))).replace(second=0, microsecond=0)
    return other.strftime("%Y-%m-%d %H:%M-07"), other


def local_starts(zone: ZoneInfo) -> list[datetime]:
    """Local day, month and year starts around the data: the edges where a read switches source."""
    out = []
    for y in (2024, 2025, 2026):
        out.append(datetime(y, 1, 1, tzinfo=zone))
        for mo in range(1, 13):
            out.append(datetime(y, mo, 1, tzinfo=zone))
            out.append(datetime(y, mo, 15, tzinfo=zone))
    out.append(datetime(2025, 3, 30, tzinfo=zone))  # DST start in Europe
    out.append(datetime(2025, 10, 26, tzinfo=zone))  # DST end in Europe
    return out


def make_movements(rng: random.Random, zone: ZoneInfo, n: int) -> tuple[list[dict[str, Any]], list[Mv]]:
    payload, model = [], []
    start = datetime(2023, 12, 20)
    edges = [e.replace(tzinfo=None) for e in local_starts(zone)]
    for i in range(n):
        if i % 5 == 0:
            local = rng.choice(edges)  # exactly on a bucket edge
        else:
            local = start + timedelta(
                seconds=rng.randrange(int(timedelta(days=830).total_seconds())),
                microseconds=rng.randrange(1_000_000),
            )
            if (
                local.hour < 4
            ):  # keep clear of DST gaps and overlaps (PostgreSQL's rule differs from Python's)
                local = local.replace(hour=local.hour + 6)
        text, at = period_text(rng, local, zone)
        res = {
            "quantity": Decimal(rng.randrange(-50_000, 100_000)).scaleb(-3),
            "amount": Decimal(rng.randrange(-5_000, 10_000)).scaleb(-2),
            "cnt": Decimal(rng.randrange(-3, 10)),
        }
        wh, product = rng.randrange(1, 4), rng.choice(["p", "q"])
        payload.append(
            {"recorder": f"doc{i % 17}", "period": text, "warehouse": wh, "product": product}
            | {k: str(v) for k, v in res.items()}
        )
        model.append(Mv(at, wh, product, res))
    # one movement far in the future: part of the current balance, not of the balance at now()
    payload.append(
        {
            "recorder": "future",
            "period": "2031-06-01T10:00:00Z",
            "warehouse": 1,
            "product": "p",
            "quantity": "1",
            "amount": "1",
            "cnt": 1,
        }
    )
    model.append(
        Mv(
            datetime(2031, 6, 1, 10, tzinfo=UTC),
            1,
            "p",
            {"quantity": Decimal(1), "amount": Decimal(1), "cnt": Decimal(1)},
        )
    )
    return payload, model


def matches(m: Mv, flt: dict[str, Any]) -> bool:
    return all(getattr(m, k) == v for k, v in flt.items())


FILTERS: list[dict[str, Any]] = [{}, {"warehouse": 2}, {"product": "q"}, {"warehouse": 1, "product": "p"}]


def check_reads(
    conn: Conn, register: str, model: list[Mv], zone: ZoneInfo, rng: random.Random, kind: str
) -> None:
    """Balance and turnover equal the model for boundary and random instants, every filter and grouping."""
    edges = local_starts(zone)
    points: list[datetime | None] = [None]
    points += edges[:: max(1, len(edges) // 12)]
    points += [e - timedelta(microseconds=1) for e in edges[3::9]]
    points += [m.at for m in rng.sample(model, 6)]  # inclusive bounds: exactly a movement's instant
    points += [
        datetime(2023, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(75_000_000)) for _ in range(8)
    ]

    if kind == "balance":
        for at in points:
            flt = rng.choice(FILTERS)
            expected = rendered(total([m for m in model if matches(m, flt) and (at is None or m.at <= at)]))
            got = raw(one(conn, f"SELECT accum.{register}_balance(%s, %s)::text", (Jsonb(flt), at)))
            assert got == expected, (at, flt)
        for special, keep in (("infinity", True), ("-infinity", False)):
            got = raw(one(conn, f"SELECT accum.{register}_balance(NULL, %s::timestamptz)::text", (special,)))
            assert got == rendered(total(model if keep else [])), special
        now = one(conn, "SELECT now()")
        got = raw(one(conn, f"SELECT accum.{register}_balance(NULL, now())::text"))
        assert got == rendered(total([m for m in model if m.at <= now]))
        assert got != raw(one(conn, f"SELECT accum.{register}_balance()::text"))  # the future movement

    for _ in range(30):
        lo, hi = rng.choice(points), rng.choice(points)
        flt = rng.choice(FILTERS)
        sel = [
            m for m in model if matches(m, flt) and (lo is None or m.at >= lo) and (hi is None or m.at <= hi)
        ]
        got = [
            raw(r[0])
            for r in conn.execute(
                f"SELECT t::text FROM accum.{register}_turnover(%s, %s, %s) t", (lo, hi, Jsonb(flt))
            ).fetchall()
        ]
        assert got == [rendered(total(sel))], (lo, hi, flt)
        for group_by in (["product"], ["product", "warehouse"]):
            groups: list[dict[str, str]] = []
            for key in sorted({tuple(getattr(m, g) for g in group_by) for m in sel}):
                sums = total([m for m in sel if tuple(getattr(m, g) for g in group_by) == key])
                if any(v != 0 for v in sums.values()):
                    groups.append(dict(zip(group_by, (str(k) for k in key), strict=True)) | rendered(sums))
            got = [
                raw(r[0])
                for r in conn.execute(
                    f"SELECT t::text FROM accum.{register}_turnover(%s, %s, %s, %s) t",
                    (lo, hi, Jsonb(flt), Jsonb(group_by)),
                ).fetchall()
            ]
            assert got == groups, (lo, hi, flt, group_by)


CONFIGS = [
    pytest.param({"time_zone": "Europe/Berlin"}, id="berlin-day"),
    pytest.param(
        {"time_zone": "America/St_Johns", "totals_period": "month", "partition_by": "quarter"},
        id="st-johns-month",
    ),
    pytest.param(
        {"time_zone": "Asia/Kathmandu", "totals_period": "year", "partition_by": "day"}, id="kathmandu-year"
    ),
    pytest.param({"time_zone": "Europe/Berlin", "kind": "turnover"}, id="turnover-register"),
]


@pytest.mark.parametrize("opts", CONFIGS)
def test_reads_equal_model(conn: Conn, opts: dict[str, Any]) -> None:
    rng = random.Random(20260418)
    zone = ZoneInfo(opts["time_zone"])
    create(conn, "reg", **opts)
    payload, model = make_movements(rng, zone, 160)
    assert post_movements(conn, "reg", payload) == len(payload)
    check_reads(conn, "reg", model, zone, rng, opts.get("kind", "balance"))
    assert conn.execute("SELECT * FROM accum.register_verify('reg', true)").fetchall() == []


@pytest.mark.parametrize("opts", [CONFIGS[0], CONFIGS[2], CONFIGS[3]])
def test_high_write_reads_include_pending_deltas(conn: Conn, opts: dict[str, Any]) -> None:
    """Results never depend on merge timing: before, during and after register_merge (SPEC §9)."""
    rng = random.Random(7)
    zone = ZoneInfo(opts["time_zone"])
    create(conn, "hw", high_write=True, **opts)
    payload, model = make_movements(rng, zone, 120)
    post_movements(conn, "hw", payload[:60])
    post_movements(conn, "hw", payload[60:])
    status = conn.execute("SELECT * FROM accum.register_delta_status('hw')").fetchall()
    assert [(s[0], s[1] > 0, s[2] is not None, s[3] >= 0) for s in status] == [("hw", True, True, True)]
    pending = status[0][1]
    for table in ("totals_day", "totals_month", "totals_year", "balance_cache"):
        if conn.execute("SELECT to_regclass(%s)", (f"accum.hw_{table}",)).fetchone() != (None,):
            assert one(conn, f"SELECT count(*) FROM accum.hw_{table}") == 0, table  # all still pending
    check_reads(conn, "hw", model, zone, rng, opts.get("kind", "balance"))
    assert conn.execute("SELECT * FROM accum.register_verify('hw', true)").fetchall() == []

    assert one(conn, "SELECT accum.register_merge('hw', 7)") == 7
    assert one(conn, "SELECT pending_rows FROM accum.register_delta_status('hw')") == pending - 7
    check_reads(conn, "hw", model, zone, rng, opts.get("kind", "balance"))
    assert conn.execute("SELECT * FROM accum.register_verify('hw', true)").fetchall() == []

    assert one(conn, "SELECT accum._force_delta_merge()") == pending - 7
    assert conn.execute(
        "SELECT register, pending_rows, oldest_created_at, lag_seconds FROM accum.register_delta_status('hw')"
    ).fetchall() == [("hw", 0, None, 0.0)]
    check_reads(conn, "hw", model, zone, rng, opts.get("kind", "balance"))
    assert conn.execute("SELECT * FROM accum.register_verify('hw', true)").fetchall() == []


# ---- turnover and balance details ------------------------------------------------------------------------


@pytest.fixture
def small(conn: Conn) -> Conn:
    create(conn, "inv", time_zone="Europe/Berlin")
    post_movements(
        conn,
        "inv",
        [
            {
                "recorder": "a",
                "period": "2026-01-10T08:00",
                "warehouse": 2,
                "product": "p",
                "quantity": 1,
                "amount": 1,
                "cnt": 1,
            },
            {
                "recorder": "a",
                "period": "2026-01-31T23:59:59.999999",
                "warehouse": 1,
                "product": "q",
                "quantity": 2,
                "amount": 2,
                "cnt": 1,
            },
            {
                "recorder": "b",
                "period": "2026-02-01",
                "warehouse": 1,
                "product": "p",
                "quantity": 4,
                "amount": 4,
                "cnt": 1,
            },
            {
                "recorder": "c",
                "period": "2026-02-01",
                "warehouse": 3,
                "product": "p",
                "quantity": 5,
                "amount": 5,
                "cnt": 1,
            },
            {
                "recorder": "c",
                "period": "2026-02-02",
                "warehouse": 3,
                "product": "p",
                "quantity": -5,
                "amount": -5,
                "cnt": -1,
            },
        ],
    )
    return conn


def turnover(conn: Conn, *args: Any) -> list[Any]:
    params = tuple(Jsonb(a) if isinstance(a, dict | list) else a for a in args)
    marks = ", ".join(["%s"] * len(args))
    return [
        raw(r[0])
        for r in conn.execute(f"SELECT t::text FROM accum.inv_turnover({marks}) t", params).fetchall()
    ]


BERLIN = ZoneInfo("Europe/Berlin")


def test_turnover_bounds(small: Conn) -> None:
    jan = datetime(2026, 1, 1, tzinfo=BERLIN)
    feb = datetime(2026, 2, 1, tzinfo=BERLIN)
    last_jan = datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=BERLIN)
    q = "quantity"
    assert [r[q] for r in turnover(small, jan, last_jan)] == ["3.000"]
    assert [r[q] for r in turnover(small, jan, feb)] == ["12.000"]  # both bounds inclusive
    assert [r[q] for r in turnover(small, last_jan, last_jan)] == ["2.000"]
    assert [r[q] for r in turnover(small, feb, None)] == ["4.000"]  # NULL bound: unbounded
    assert [r[q] for r in turnover(small, None, jan)] == ["0.000"]
    assert [r[q] for r in turnover(small, None, None)] == ["7.000"]
    assert [r[q] for r in turnover(small)] == ["7.000"]
    # from > to selects nothing: one all-zero row, or no group
    assert turnover(small, feb, jan) == [{"amount": "0.00", "cnt": "0", "quantity": "0.000"}]
    assert turnover(small, feb, jan, None, ["product"]) == []
    # [] counts as no group_by; {} and NULL filter nothing
    assert turnover(small, None, None, {}, []) == turnover(small)
    # all-zero groups are omitted, groups come ordered by their values
    assert turnover(small, None, None, None, ["warehouse"]) == [
        {"warehouse": "1", "quantity": "6.000", "amount": "6.00", "cnt": "2"},
        {"warehouse": "2", "quantity": "1.000", "amount": "1.00", "cnt": "1"},
    ]
    assert turnover(small, None, None, {"product": "p"}, ["product", "warehouse"]) == [
        {"product": "p", "warehouse": "1", "quantity": "4.000", "amount": "4.00", "cnt": "1"},
        {"product": "p", "warehouse": "2", "quantity": "1.000", "amount": "1.00", "cnt": "1"},
    ]


def test_balance_modes(small: Conn) -> None:
    def bal(flt: Any = None, at: Any = None) -> Any:
        return raw(
            one(
                small, "SELECT accum.inv_balance(%s, %s)::text", (Jsonb(flt) if flt is not None else None, at)
            )
        )

    assert bal() == {"quantity": "7.000", "amount": "7.00", "cnt": "3"}
    assert bal({}) == bal()
    assert bal({"warehouse": 3}) == {"quantity": "0.000", "amount": "0.00", "cnt": "0"}
    assert bal({"warehouse": 1, "product": "q"}) == {"quantity": "2.000", "amount": "2.00", "cnt": "1"}
    assert bal({"warehouse": "1", "product": "q"}) == bal(
        {"warehouse": 1, "product": "q"}
    )  # integer as string
    assert bal({"warehouse": 9, "product": "q"}) == {"quantity": "0.000", "amount": "0.00", "cnt": "0"}
    assert bal(None, datetime(2026, 2, 1, tzinfo=BERLIN) - timedelta(microseconds=1)) == {
        "quantity": "3.000",
        "amount": "3.00",
        "cnt": "2",
    }
    assert bal({"warehouse": 3}, datetime(2026, 2, 1, 12, tzinfo=BERLIN)) == {
        "quantity": "5.000",
        "amount": "5.00",
        "cnt": "1",
    }


def test_movements_read(small: Conn) -> None:
    rows = [raw(r[0]) for r in small.execute("SELECT m::text FROM accum.inv_movements() m").fetchall()]
    assert all(
        set(r)
        == {
            "id",
            "recorded_at",
            "recorder",
            "period",
            "dim_hash",
            "warehouse",
            "product",
            "quantity",
            "amount",
            "cnt",
        }
        for r in rows
    )
    assert [r["period"] for r in rows] == [
        "2026-01-10T08:00:00+01:00",
        "2026-01-31T23:59:59.999999+01:00",
        "2026-02-01T00:00:00+01:00",
        "2026-02-01T00:00:00+01:00",
        "2026-02-02T00:00:00+01:00",
    ]
    # ordered by period, then id
    assert [int(r["id"]) for r in rows[2:4]] == sorted(int(r["id"]) for r in rows[2:4])
    assert rows[0]["recorded_at"].endswith("+01:00")
    assert (rows[0]["quantity"], rows[0]["amount"], rows[0]["cnt"], rows[0]["warehouse"]) == (
        "1.000",
        "1.00",
        "1",
        "2",
    )
    feb = datetime(2026, 2, 1, tzinfo=BERLIN)

    def read(*args: Any) -> list[str]:
        params = tuple(Jsonb(a) if isinstance(a, dict) else a for a in args)
        marks = ", ".join(["%s"] * len(args))
        return [
            raw(r[0])["recorder"] + ":" + raw(r[0])["warehouse"]
            for r in small.execute(f"SELECT m::text FROM accum.inv_movements({marks}) m", params).fetchall()
        ]

    assert read("c") == ["c:3", "c:3"]
    assert read("zzz") == []
    assert read(None, feb, feb) == ["b:1", "c:3"]  # inclusive bounds
    assert read(None, feb, None) == ["b:1", "c:3", "c:3"]
    assert read(None, None, feb - timedelta(microseconds=1)) == ["a:2", "a:1"]
    assert read(None, None, None, {"warehouse": 1}) == ["a:1", "b:1"]
    assert read("a", None, None, {"warehouse": 1, "product": "q"}) == ["a:1"]
    assert read(None, feb, datetime(2026, 1, 1, tzinfo=BERLIN)) == []


def test_turnover_register_has_no_balance(conn: Conn) -> None:
    create(conn, "sales", kind="turnover")
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT accum.sales_balance()")
    assert exc.value.sqlstate == "42809"
    assert (exc.value.diag.message_primary or "").startswith("sales: ")


# ---- rendering (SPEC §8) ---------------------------------------------------------------------------------


def test_rendering(conn: Conn) -> None:
    create(
        conn,
        "typed",
        dims={
            "d": "date",
            "u": "uuid",
            "f": "boolean",
            "n": "numeric(6,2)",
            "v": "varchar(5)",
            "s": "smallint",
        },
        res={"p2": "numeric(10,2)", "p0": "numeric(8)", "free": "numeric", "i": "integer", "big": "bigint"},
        time_zone="America/St_Johns",
    )
    base = {
        "d": "2026-01-05",
        "u": "C0F3E2A4-4C1E-4BB0-9D5B-1F2A3B4C5D6E",
        "f": True,
        "n": "1.5",
        "v": "ab",
        "s": 7,
    }
    post_movements(
        conn,
        "typed",
        [
            base
            | {
                "recorder": "r",
                "period": "2026-01-05T10:00",
                "p2": 1.5,
                "p0": "3",
                "free": "1.50",
                "i": 2,
                "big": "9223372036854775807",
            },
            base
            | {
                "recorder": "r",
                "period": "2026-07-05T10:00:00.5",
                "p2": "0.25",
                "p0": 4,
                "free": 1.5,
                "i": -2,
                "big": -1,
            },
            base
            | {"recorder": "r", "period": "2026-07-05", "p2": 0, "p0": 0, "free": "1e-30", "i": 0, "big": 0},
        ],
    )
    bal = one(conn, "SELECT accum.typed_balance()::text")
    assert raw(bal) == {
        "p2": "1.75",
        "p0": "7",
        "free": "3.000000000000000000000000000001",
        "i": "0",
        "big": "9223372036854775806",
    }
    rows = [raw(r[0]) for r in conn.execute("SELECT m::text FROM accum.typed_movements() m").fetchall()]
    assert rows[0]["period"] == "2026-01-05T10:00:00-03:30"
    assert rows[1]["period"] == "2026-07-05T00:00:00-02:30"
    assert rows[2]["period"] == "2026-07-05T10:00:00.5-02:30"
    assert {k: rows[0][k] for k in base} == {
        "d": "2026-01-05",
        "u": "c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e",
        "f": True,
        "n": "1.50",
        "v": "ab",
        "s": "7",
    }
    assert [r["p2"] for r in rows] == ["1.50", "0.00", "0.25"]
    assert [r["p0"] for r in rows] == ["3", "0", "4"]
    assert [r["free"] for r in rows] == [
        "1.5",
        "0.000000000000000000000000000001",
        "1.5",
    ]  # shortest, no exponent
    groups = [
        raw(r[0])
        for r in conn.execute(
            'SELECT t::text FROM accum.typed_turnover(NULL, NULL, NULL, \'["d", "f", "n", "s", "u", "v"]\') t'
        )
    ]
    assert groups == [{k: rows[0][k] for k in base} | raw(bal)]
    verify = conn.execute(
        "SELECT dimensions::text, expected::text FROM accum.register_verify('typed')"
    ).fetchall()
    assert raw(verify[0][0]) == {k: rows[0][k] for k in base}
    assert raw(verify[0][1]) == raw(bal)
    # filters take any accepted spelling of a value; a full filter finds the combination by its hash
    full = {"d": "2026-01-05", "u": base["u"], "f": True, "n": "1.50", "v": "ab", "s": "7"}
    assert one(conn, "SELECT accum.typed_balance(%s)::text", (Jsonb(full),)) == bal
    assert one(conn, "SELECT accum.typed_balance(%s)::text", (Jsonb(full | {"n": 1.5, "s": 7.0}),)) == bal
    found = conn.execute("SELECT * FROM accum.typed_movements(NULL, NULL, NULL, %s)", (Jsonb(full),))
    assert len(found.fetchall()) == 3
    assert raw(one(conn, "SELECT accum.typed_balance(%s)::text", (Jsonb(full | {"f": False}),)))["i"] == "0"
    lower = {"u": str(base["u"]).lower()}
    assert raw(one(conn, "SELECT accum.typed_balance(%s)::text", (Jsonb(lower),))) == raw(bal)


def test_dst_local_times_resolve_as_postgresql(conn: Conn) -> None:
    """Local times in a DST gap or overlap resolve as PostgreSQL's timestamp conversion does (SPEC §5.2)."""
    create(conn, "dst", time_zone="Europe/Berlin")
    local = [
        "2026-03-29T02:30",
        "2026-03-29T02:00",
        "2026-10-25T02:30",
        "2026-10-25T02:00:00",
        "2026-10-25T03:00",
    ]
    post_movements(
        conn,
        "dst",
        [
            {
                "recorder": "r",
                "period": p,
                "warehouse": i,
                "product": "p",
                "quantity": 1,
                "amount": 1,
                "cnt": 1,
            }
            for i, p in enumerate(local)
        ],
    )
    got = {
        int(raw(r[0])["warehouse"]): raw(r[0])["period"]
        for r in conn.execute("SELECT m::text FROM accum.dst_movements() m").fetchall()
    }
    for i, p in enumerate(local):
        instant = one(conn, "SELECT (%s::timestamp AT TIME ZONE 'Europe/Berlin')", (p,))
        assert got[i] == instant.astimezone(BERLIN).isoformat(), p


# ---- session settings play no part (SPEC §5) ---------------------------------------------------------------

ODD_SESSION = (
    "SET TimeZone = 'Pacific/Kiritimati'",
    "SET DateStyle = 'SQL, DMY'",
    "SET extra_float_digits = -15",
    "SET IntervalStyle = 'sql_standard'",
    "SET lc_monetary = 'C'",
)


def snapshot_reads(conn: Conn, register: str) -> list[Any]:
    at = datetime(2026, 2, 1, tzinfo=BERLIN)
    out: list[Any] = [
        one(conn, f"SELECT accum.{register}_balance()::text"),
        one(conn, f"SELECT accum.{register}_balance('{{\"warehouse\": 1}}', %s)::text", (at,)),
        one(conn, f"SELECT accum.{register}_balance(NULL, '2026-03-01 00:00:00+01')::text"),
        [
            r[0]
            for r in conn.execute(
                f"SELECT t::text FROM accum.{register}_turnover(%s, NULL, NULL, '[\"product\"]') t", (at,)
            )
        ],
        [
            r[0]
            for r in conn.execute(
                f"SELECT t::text FROM accum.{register}_turnover('2026-01-15 12:00:00+01',"
                " '2026-02-10 00:00:00+01') t"
            )
        ],
        [
            {k: v for k, v in raw(r[0]).items() if k not in ("id", "recorded_at")}
            for r in conn.execute(f"SELECT m::text FROM accum.{register}_movements() m")
        ],
        [
            tuple(r)
            for r in conn.execute(
                f"SELECT check_type, dim_hash, to_char(period, 'YYYY-MM-DD'), expected::text, actual::text,"
                f" status, dimensions::text FROM accum.register_verify('{register}')"
            )
        ],
        # epoch text: psycopg cannot parse timestamptz output in every DateStyle
        [
            tuple(r)
            for r in conn.execute(
                "SELECT extract(epoch FROM from_date)::text, extract(epoch FROM to_date)::text,"
                f" is_default FROM accum.register_partitions('{register}')"
            )
        ],
    ]
    info = one(conn, "SELECT accum.register_info(%s)::text", (register,))
    out.append(
        {k: v for k, v in raw(info).items() if k not in ("name", "tables", "created_at", "updated_at")}
        | {"partitions": [p | {"name": p["name"].split("_movements")[1]} for p in raw(info)["partitions"]]}
    )
    return out


def test_results_ignore_session_settings(conn: Conn, db_dsn: str) -> None:
    data = [
        {
            "recorder": "a",
            "period": "2026-01-31T23:30",
            "warehouse": 1,
            "product": "p",
            "quantity": "1.5",
            "amount": 2,
            "cnt": 1,
        },
        {
            "recorder": "a",
            "period": "2026-02-01T00:30:00+01:00",
            "warehouse": 2,
            "product": "q",
            "quantity": 3,
            "amount": "2.5",
            "cnt": 2,
        },
        {
            "recorder": "b",
            "period": "2026-02-28",
            "warehouse": 1,
            "product": "q",
            "quantity": "0.001",
            "amount": "0.01",
            "cnt": 3,
        },
        {
            "recorder": "b",
            "period": "2026-06-30 22:00:00.25",
            "warehouse": 1,
            "product": "p",
            "quantity": 7,
            "amount": 8,
            "cnt": 4,
        },
    ]
    create(conn, "plain", time_zone="Europe/Berlin")
    post_movements(conn, "plain", data)
    with psycopg.connect(db_dsn, autocommit=True) as odd:
        for statement in ODD_SESSION:
            odd.execute(statement)
        # a register created and written in the odd session is the same as one made in a plain session
        create(odd, "odd", time_zone="Europe/Berlin")
        post_movements(odd, "odd", data)
        assert snapshot_reads(odd, "plain") == snapshot_reads(conn, "plain")
        assert snapshot_reads(odd, "odd") == snapshot_reads(conn, "plain")
        assert snapshot_reads(conn, "odd") == snapshot_reads(conn, "plain")
    assert conn.execute("SELECT * FROM accum.register_verify('odd', true)").fetchall() == []
    # local bucket days are the register zone's, whatever the session said
    assert [r[0] for r in conn.execute("SELECT period FROM accum.odd_totals_day ORDER BY 1")] == [
        date(2026, 1, 31),
        date(2026, 2, 1),
        date(2026, 2, 28),
        date(2026, 6, 30),
    ]


def test_extreme_periods(conn: Conn) -> None:
    """Years 0001 and 9999 of the register zone are writable, readable, partitionable (SPEC §4.2)."""
    create(conn, "edge", time_zone="Europe/Berlin")
    m = {"warehouse": 1, "product": "p", "amount": 0, "cnt": 0}
    post_movements(conn, "edge", [
        m | {"recorder": "a", "period": "0001-01-01", "quantity": 1},
        m | {"recorder": "a", "period": "9999-12-31T23:59:59.999999", "quantity": 10},
        m | {"recorder": "a", "period": "2026-06-01", "quantity": 100},
    ])  # fmt: skip
    # bounds stay in SQL: year 0001 in Berlin is 0001 BC in UTC, which Python's datetime cannot hold
    first = "(SELECT min(period) FROM accum.edge_movements)"
    last = "(SELECT max(period) FROM accum.edge_movements)"

    def q(query: str) -> str:
        return str(raw(one(conn, query))["quantity"])

    assert q(f"SELECT accum.edge_balance(NULL, {first})::text") == "1.000"
    assert q(f"SELECT accum.edge_balance(NULL, {first} - interval '1 microsecond')::text") == "0.000"
    assert q(f"SELECT accum.edge_balance(NULL, {last} - interval '1 microsecond')::text") == "101.000"
    assert q("SELECT accum.edge_balance(NULL, 'infinity')::text") == "111.000"
    assert q("SELECT t::text FROM accum.edge_turnover('-infinity', 'infinity') t") == "111.000"
    assert q(f"SELECT t::text FROM accum.edge_turnover({last}, NULL) t") == "10.000"
    assert q(f"SELECT t::text FROM accum.edge_turnover(NULL, {first}) t") == "1.000"
    assert q("SELECT t::text FROM accum.edge_turnover('infinity', '-infinity') t") == "0.000"
    periods = [raw(r[0])["period"] for r in conn.execute("SELECT m::text FROM accum.edge_movements() m")]
    assert periods[1:] == ["2026-06-01T00:00:00+02:00", "9999-12-31T23:59:59.999999+01:00"]
    assert periods[0].startswith("0001-01-01T00:00:00+00:53")  # Berlin's local mean time
    assert one(conn, "SELECT accum.register_create_partitions('edge')") == 3
    names = [r[0] for r in conn.execute("SELECT partition_name FROM accum.register_partitions('edge')")]
    assert names[0] == "edge_movements_0001_01"
    assert names[-2:] == ["edge_movements_9999_12", "edge_movements_default"]
    assert q("SELECT accum.edge_balance()::text") == "111.000"
    assert conn.execute("SELECT * FROM accum.register_verify('edge', true)").fetchall() == []
