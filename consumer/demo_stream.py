"""The demo's registers and its document stream: a seeded, pure generator of post/unpost/repost commands.

Receipts and shipments (inventory), transfers between accounts (high-write), sales (turnover); corrections
by repost and unpost of recent documents; about 2 % commands the engine must reject. Each command comes with
the dead-letter class the worker must give it (None: it is applied), so the producer can keep an exact model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from registers.models import RegisterDefinition

__all__ = [
    "ACCOUNTS",
    "CHANNELS",
    "CURRENCIES",
    "DEMO_REGISTERS",
    "DIMENSION_VALUES",
    "PRODUCTS",
    "SKUS",
    "WAREHOUSES",
    "DocumentStream",
    "Planned",
]

DEMO_REGISTERS: Final[tuple[RegisterDefinition, ...]] = (
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

HISTORY_DAYS: Final = 90  # documents are dated over the last three months
RECENT_KEPT: Final = 2000  # documents a correction may target

WAREHOUSES: Final = (1, 2, 3)
PRODUCTS: Final = tuple(range(101, 113))
ACCOUNTS: Final = (
    "cash",
    "bank:main",
    "bank:savings",
    "customer:acme",
    "customer:globex",
    "supplier:initech",
)
CURRENCIES: Final = ("EUR", "USD")
CHANNELS: Final = ("web", "store", "marketplace")
SKUS: Final = tuple(f"SKU-{n:03d}" for n in range(1, 13))

# Every value a dimension takes in the stream: the balances worth reading are their combinations.
DIMENSION_VALUES: Final[Mapping[str, Mapping[str, tuple[Any, ...]]]] = {
    "demo_inventory": {"warehouse": WAREHOUSES, "product": PRODUCTS},
    "demo_accounts": {"account": ACCOUNTS, "currency": CURRENCIES},
    "demo_sales": {"channel": CHANNELS, "sku": SKUS},
}


@dataclass(frozen=True)
class Planned:
    """One command and what must come of it: `dead_letter` is the worker's error class, None = applied."""

    command: dict[str, Any]
    dead_letter: str | None = None


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
    # recorder -> (register, movements) of the last documents, oldest first
    recent: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def batch(self, size: int) -> list[Planned]:
        return [self.next() for _ in range(size)]

    def next(self) -> Planned:
        self.issued += 1
        roll = self.rng.random()
        if roll < 0.02:
            return self._bad()
        if roll < 0.10 and self.recent:
            return Planned(self._repost())
        if roll < 0.14 and self.recent:
            return Planned(self._unpost())
        if roll < 0.42:
            return Planned(self._receipt())
        if roll < 0.62:
            return Planned(self._shipment())
        if roll < 0.82:
            return Planned(self._transfer())
        return Planned(self._sale())

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
        if len(self.recent) > RECENT_KEPT:
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

    def _bad(self) -> Planned:
        """A command the engine must reject, changing nothing; the worker dead-letters it."""
        recorder, period = self._recorder("bad"), self._period()
        movement: dict[str, Any]
        register, error_class = "demo_inventory", "rejected"
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
                register, error_class = "demo_nope", "unknown_register"
                movement = {"period": period, "x": 1}
        command = {"op": "post", "register": register, "recorder": recorder, "movements": [movement]}
        return Planned(command, error_class)
