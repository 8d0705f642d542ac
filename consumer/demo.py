"""`accumulator demo`, engine edition: a local PostgreSQL, the three demo registers, a seeded document stream.

Steps, one function each: start PostgreSQL under `<home>/pg` (kept between runs unless `--reset`), migrate,
create the demo registers if absent, stream documents through `register_apply` at `--rate` commands/s until
`--duration` or Ctrl-C, then print balances, a month turnover and verify results, and stop PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psycopg

from consumer.localpg import LocalPostgres, LocalPostgresError, PrerequisiteMissing
from registers import migrate as migrations
from registers.client import RegisterClient
from registers.errors import MigrationError
from registers.models import ApplyResult, RegisterDefinition

__all__ = ["DEMO_REGISTERS", "DemoError", "DemoOptions", "DocumentStream", "run"]

log = logging.getLogger("accumulator.demo")

DEMO_REGISTERS: tuple[RegisterDefinition, ...] = (
    RegisterDefinition(
        name="demo_inventory",
        kind="balance",
        dimensions={"warehouse": "integer", "product": "integer"},
        resources={"quantity": "numeric(18,3)", "amount": "numeric(18,2)"},
    ),
    RegisterDefinition(
        name="demo_accounts",
        kind="balance",
        high_write=True,
        dimensions={"account": "text", "currency": "text"},
        resources={"amount": "numeric(18,2)"},
    ),
    RegisterDefinition(
        name="demo_sales",
        kind="turnover",
        dimensions={"channel": "text", "sku": "text"},
        resources={"qty": "integer"},
    ),
)

BATCH_MAX = 500  # commands per register_apply call
PROGRESS_EVERY_S = 5.0
HISTORY_DAYS = 90  # documents are dated over the last three months

WAREHOUSES = (1, 2, 3)
PRODUCTS = tuple(range(101, 113))
ACCOUNTS = ("cash", "bank:main", "bank:savings", "customer:acme", "customer:globex", "supplier:initech")
CURRENCIES = ("EUR", "USD")
CHANNELS = ("web", "store", "marketplace")
SKUS = tuple(f"SKU-{n:03d}" for n in range(1, 13))


class DemoError(Exception):
    """The demo cannot run; `code` is the exit code (2 prerequisite missing, 6 old data, 1 server failed)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    rate: int = 200
    duration: float | None = None
    reset: bool = False
    seed: int = 20260418


# ---- the document stream (pure: a seeded generator of register_apply commands) ---------------------------


def _q(value: float, places: int) -> Decimal:
    return Decimal(str(round(value, places))).quantize(Decimal(1).scaleb(-places))


def _price(product: int) -> Decimal:
    return _q(2.5 + (product - 100) * 0.75, 2)


@dataclass
class DocumentStream:
    """Receipts, shipments, transfers, sales; reposts and unposts of earlier ones; ~2 % bad commands.

    It keeps a model of stock so shipments only take what is there, and the last documents it posted so
    corrections target real ones. `today` and the run tag keep recorders unique across demo runs.
    """

    rng: random.Random
    run_tag: str
    today: date
    issued: int = 0
    stock: dict[tuple[int, int], Decimal] = field(default_factory=dict)
    recent: dict[str, tuple[str, list[dict[str, Any]]]] = field(
        default_factory=dict
    )  # recorder -> (register, movs)

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.command() for _ in range(size)]

    def command(self) -> dict[str, Any]:
        self.issued += 1
        roll = self.rng.random()
        if roll < 0.02:
            return self._bad()
        if roll < 0.10 and self.recent:
            return self._repost()
        if roll < 0.14 and self.recent:
            return self._unpost()
        if roll < 0.42:
            return self._receipt()
        if roll < 0.62:
            return self._shipment()
        if roll < 0.82:
            return self._transfer()
        return self._sale()

    # -- helpers

    def _recorder(self, kind: str) -> str:
        return f"{kind}:{self.run_tag}:{self.issued}"

    def _period(self) -> str:
        day = self.today - timedelta(days=self.rng.randrange(HISTORY_DAYS))
        if self.rng.random() < 0.3:
            return day.isoformat()  # a local date: 00:00 in the register zone
        seconds = self.rng.randrange(8 * 3600, 20 * 3600)
        return f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"

    def _post(self, register: str, recorder: str, movements: list[dict[str, Any]]) -> dict[str, Any]:
        self.recent[recorder] = (register, movements)
        if len(self.recent) > 2000:
            self.recent.pop(next(iter(self.recent)))
        return {"op": "post", "register": register, "recorder": recorder, "movements": movements}

    def _move_stock(self, movements: Sequence[Mapping[str, Any]], sign: int) -> None:
        for m in movements:
            key = (m["warehouse"], m["product"])
            self.stock[key] = self.stock.get(key, Decimal(0)) + sign * m["quantity"]

    # -- documents

    def _receipt(self) -> dict[str, Any]:
        period, warehouse = self._period(), self.rng.choice(WAREHOUSES)
        lines = []
        for product in self.rng.sample(PRODUCTS, self.rng.randint(1, 4)):
            qty = _q(self.rng.uniform(5, 120), 3)
            lines.append(
                {"period": period, "warehouse": warehouse, "product": product, "quantity": qty,
                 "amount": (qty * _price(product)).quantize(Decimal("0.01"))}
            )  # fmt: skip
        self._move_stock(lines, +1)
        return self._post("demo_inventory", self._recorder("receipt"), lines)

    def _shipment(self) -> dict[str, Any]:
        available = [(k, q) for k, q in self.stock.items() if q >= 1]
        if not available:
            return self._receipt()
        period = self._period()
        lines = []
        for (warehouse, product), qty_there in self.rng.sample(
            available, min(len(available), self.rng.randint(1, 3))
        ):
            qty = _q(self.rng.uniform(0.5, float(qty_there) / 2), 3)
            lines.append(
                {"period": period, "warehouse": warehouse, "product": product, "quantity": -qty,
                 "amount": -(qty * _price(product)).quantize(Decimal("0.01"))}
            )  # fmt: skip
        self._move_stock(lines, +1)
        return self._post("demo_inventory", self._recorder("shipment"), lines)

    def _transfer(self) -> dict[str, Any]:
        source, target = self.rng.sample(ACCOUNTS, 2)
        currency = self.rng.choice(CURRENCIES)
        amount = _q(self.rng.uniform(10, 5000), 2)
        period = self._period()
        lines = [
            {"period": period, "account": source, "currency": currency, "amount": -amount},
            {"period": period, "account": target, "currency": currency, "amount": amount},
        ]
        return self._post("demo_accounts", self._recorder("transfer"), lines)

    def _sale(self) -> dict[str, Any]:
        period, channel = self._period(), self.rng.choice(CHANNELS)
        lines = [
            {"period": period, "channel": channel, "sku": sku, "qty": self.rng.randint(1, 5)}
            for sku in self.rng.sample(SKUS, self.rng.randint(1, 3))
        ]
        return self._post("demo_sales", self._recorder("sale"), lines)

    # -- corrections

    def _pick_recent(self, allowed: Callable[[str], bool]) -> tuple[str, str, list[dict[str, Any]]] | None:
        candidates = [r for r in self.recent if allowed(r)]
        if not candidates:
            return None
        recorder = self.rng.choice(candidates)
        register, movements = self.recent[recorder]
        return recorder, register, movements

    def _repost(self) -> dict[str, Any]:
        picked = self._pick_recent(lambda r: not r.startswith("shipment:"))
        if picked is None:
            return self._receipt()
        recorder, register, old = picked
        new = [self._corrected(register, m) for m in old]
        if register == "demo_inventory":
            self._move_stock(old, -1)
            self._move_stock(new, +1)
        self.recent[recorder] = (register, new)
        return {"op": "repost", "register": register, "recorder": recorder, "movements": new}

    def _corrected(self, register: str, m: Mapping[str, Any]) -> dict[str, Any]:
        """The same line with its quantity raised a little (a receipt counted again, a sale amended)."""
        if register == "demo_inventory":
            qty = (m["quantity"] * _q(self.rng.uniform(1.0, 1.1), 2)).quantize(Decimal("0.001"))
            return {**m, "quantity": qty, "amount": (qty * _price(m["product"])).quantize(Decimal("0.01"))}
        if register == "demo_accounts":
            return {**m, "amount": (m["amount"] * Decimal("1.05")).quantize(Decimal("0.01"))}
        return {**m, "qty": m["qty"] + 1}

    def _unpost(self) -> dict[str, Any]:
        # Receipts stay: cancelling one could leave shipped goods that never arrived.
        picked = self._pick_recent(lambda r: not r.startswith("receipt:"))
        if picked is None:
            return self._transfer()
        recorder, register, old = picked
        if register == "demo_inventory":
            self._move_stock(old, -1)
        del self.recent[recorder]
        return {"op": "unpost", "register": register, "recorder": recorder}

    def _bad(self) -> dict[str, Any]:
        """A command the engine must reject, changing nothing (a Kafka run sends these to the DLQ)."""
        recorder, period = self._recorder("bad"), self._period()
        movement: dict[str, Any]
        register = "demo_inventory"
        match self.rng.randrange(4):
            case 0:  # 4 decimals for a numeric(18,3) resource: rejected, never rounded (22023)
                movement = {"period": period, "warehouse": 1, "product": 101, "quantity": Decimal("1.2345"),
                            "amount": Decimal("3.09")}  # fmt: skip
            case 1:  # a dimension the register does not have (42703)
                register = "demo_sales"
                movement = {"period": period, "channel": "web", "sku": "SKU-001", "qty": 1, "colour": "red"}
            case 2:  # not a §5.2 period (22007)
                register = "demo_accounts"
                movement = {"period": "yesterday", "account": "cash", "currency": "EUR", "amount": 1}
            case _:  # a register that does not exist (42704)
                register = "demo_nope"
                movement = {"period": period, "x": 1}
        return {"op": "post", "register": register, "recorder": recorder, "movements": [movement]}


# ---- steps ------------------------------------------------------------------------------------------------


@dataclass
class StreamStats:
    commands: int = 0
    applied: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by SQLSTATE
    movements: int = 0
    merged_rows: int = 0

    def add(self, results: Sequence[ApplyResult]) -> None:
        self.commands += len(results)
        for r in results:
            if r.outcome == "applied":
                self.applied += 1
                self.movements += r.affected or 0
            else:
                self.rejected[r.sqlstate or "?"] += 1


def prepare_home(home: Path, reset: bool, out: TextIO) -> Path:
    """`<home>/pg` holds the cluster; `--reset` deletes only that, never anything else under home.

    As root the server runs as user postgres, which cannot enter a checkout under /root: the cluster
    then lives in /var/tmp, in a folder named after the home, and the demo says so.
    """
    base = home.resolve() / "pg"
    if not LocalPostgres.server_can_reach(home):
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        base = Path("/var/tmp") / f"accumulator-{digest}" / "pg"
        print(f"note: user postgres cannot enter {home.resolve()}; the cluster lives in {base}", file=out)
    if reset and base.exists():
        shutil.rmtree(base)
        print(f"reset: deleted {base}", file=out)
    home.mkdir(parents=True, exist_ok=True)
    return base


def migrate_schema(conn: psycopg.Connection[Any], out: TextIO) -> None:
    try:
        report = migrations.migrate(conn, roles="skip")
    except MigrationError as exc:
        # Kept data made by another package version: the demo's data is disposable.
        raise DemoError(
            f"{exc}; the demo data was made by another version: run `accumulator demo --reset`", 6
        ) from exc
    if report.applied:
        print(f"migrated: {', '.join(f'{s.version:04d}_{s.name}' for s in report.applied)}", file=out)


def ensure_registers(client: RegisterClient, out: TextIO) -> None:
    for defn in DEMO_REGISTERS:
        if client.create_register(defn, if_not_exists=True):
            print(f"created register {defn.name}", file=out)


def stream_documents(
    client: RegisterClient,
    docs: DocumentStream,
    rate: int,
    deadline: float | None,
    stats: StreamStats,
    out: TextIO,
) -> None:
    """`rate` commands per second in `register_apply` batches ('skip': bad ones come back rejected).

    Counts go into `stats` as they happen, so an interrupted stream still reports what it did.
    """
    started = next_tick = last_report = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        remaining = rate
        while remaining > 0:
            size = min(remaining, BATCH_MAX)
            stats.add(client.apply(docs.batch(size), on_error="skip"))
            remaining -= size
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_S:
            stats.merged_rows += client.merge("demo_accounts")  # the compactor's job in the full demo
            elapsed = now - started
            print(
                f"{elapsed:6.1f}s  commands {stats.commands} ({stats.commands / elapsed:.0f}/s)  "
                f"movements {stats.movements}  rejected {sum(stats.rejected.values())}",
                file=out,
                flush=True,
            )
            last_report = now
        next_tick += 1.0
        pause = next_tick - time.monotonic()
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        if pause > 0:
            time.sleep(pause)  # pacing to --rate, not a wait on a condition
    stats.merged_rows += client.merge("demo_accounts")


def _table(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    from consumer.cli import render_table  # the CLI's table format; cli imports this module lazily

    print(render_table(rows), file=out)


def print_stream(stats: StreamStats, out: TextIO) -> None:
    rejected = ", ".join(f"{state} x{n}" for state, n in sorted(stats.rejected.items())) or "none"
    print(
        f"\nstream: {stats.commands} commands, {stats.applied} applied, {stats.movements} movements written, "
        f"rejected: {rejected}; merged {stats.merged_rows} delta rows of demo_accounts",
        file=out,
    )


def print_balances(client: RegisterClient, today: date, out: TextIO) -> None:
    month_start = today.replace(day=1)
    print("\ndemo_inventory: balance now and at the start of the month", file=out)
    rows: list[dict[str, Any]] = []
    for warehouse in WAREHOUSES:
        for product in PRODUCTS[:2]:
            dims = {"warehouse": warehouse, "product": product}
            now = client.balance("demo_inventory", dims)
            then = client.balance("demo_inventory", dims, month_start)
            rows.append({**dims, **now, f"quantity@{month_start}": then.get("quantity")})
    rows.append({"warehouse": 1, "product": "(all)", **client.balance("demo_inventory", {"warehouse": 1})})
    _table(rows, out)

    print("\ndemo_accounts: balances (transfers net to zero per currency)", file=out)
    rows = [
        {
            "account": account,
            "currency": "EUR",
            **client.balance("demo_accounts", {"account": account, "currency": "EUR"}),
        }
        for account in ACCOUNTS[:3]
    ]
    rows += [
        {"account": "(all)", "currency": c, **client.balance("demo_accounts", {"currency": c})}
        for c in CURRENCIES
    ]
    _table(rows, out)


def print_turnover(client: RegisterClient, today: date, out: TextIO) -> None:
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    # Bounds are inclusive: the month is [first day 00:00, next month's first instant - 1 µs], local time.
    end = datetime.combine(this_month, datetime.min.time()) - timedelta(microseconds=1)
    rows = client.turnover("demo_sales", last_month, end, group_by=["channel"])
    print(f"\ndemo_sales: turnover of {last_month:%B %Y} by channel", file=out)
    _table([{**r.group, **r.resources} for r in rows] or [{"channel": "(none)", "qty": 0}], out)


def verify_registers(client: RegisterClient, out: TextIO) -> bool:
    print("\nverify:", file=out)
    clean = True
    for defn in DEMO_REGISTERS:
        problems = client.verify(defn.name)
        clean = clean and not problems
        print(f"  {defn.name}: {'ok' if not problems else f'{len(problems)} problem(s)'}", file=out)
        for p in problems[:10]:
            print(
                f"    {p.check_type} {p.status} {p.dimensions} expected {p.expected} actual {p.actual}",
                file=out,
            )
    return clean


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C, so PostgreSQL is always stopped cleanly."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name="accumulator-demo")


def stream_phase(dsn: str, options: DemoOptions, today: date, out: TextIO) -> bool:
    """Migrate, create the registers, stream until the deadline; True when Ctrl-C ended it."""
    with _connect(dsn) as conn:
        migrate_schema(conn, out)
        client = RegisterClient(conn)
        ensure_registers(client, out)
        run_tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        docs = DocumentStream(random.Random(options.seed), run_tag, today)
        deadline = None if options.duration is None else time.monotonic() + options.duration
        how_long = "until Ctrl-C" if deadline is None else f"for {options.duration:g}s"
        print(f"streaming {options.rate} commands/s {how_long} ...", file=out, flush=True)
        stats = StreamStats()
        interrupted = False
        try:
            stream_documents(client, docs, options.rate, deadline, stats, out)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: summarising, then stopping PostgreSQL", file=out, flush=True)
        print_stream(stats, out)
    return interrupted


def summary_phase(dsn: str, today: date, out: TextIO) -> bool:
    """Balances, a month turnover, verify; on a new connection (an interrupt may have broken the first)."""
    with _connect(dsn) as conn:
        client = RegisterClient(conn)
        print_balances(client, today, out)
        print_turnover(client, today, out)
        return verify_registers(client, out)


def _start(pg: LocalPostgres) -> None:
    try:
        pg.start()
    except PrerequisiteMissing as exc:
        raise DemoError(str(exc), 2) from exc
    except LocalPostgresError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DemoError(f"local PostgreSQL failed: {first} (log: {pg.log_file})", 1) from exc


def run(options: DemoOptions, out: TextIO) -> int:
    """The whole demo; returns the exit code (0, 3 verify problems, 130 interrupted)."""
    base = prepare_home(options.home, options.reset, out)
    try:
        pg = LocalPostgres(base, durable=False)
    except PrerequisiteMissing as exc:
        raise DemoError(str(exc), 2) from exc
    today = datetime.now(UTC).date()
    with _sigterm_as_interrupt():
        try:
            _start(pg)
            print(
                f"PostgreSQL {pg.dsn}, data in {pg.data_dir} (kept between runs; --reset deletes it)",
                file=out,
            )
            interrupted = stream_phase(pg.dsn, options, today, out)
            clean = summary_phase(pg.dsn, today, out)
        finally:
            pg.stop()
    print(f"\nPostgreSQL stopped; data kept in {pg.data_dir}", file=out)
    if interrupted:
        return 130
    return 0 if clean else 3
