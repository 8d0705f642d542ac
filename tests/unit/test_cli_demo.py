"""The demo's document stream is pure and seeded: same seed, same commands; shapes the engine accepts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from consumer.demo import DEMO_REGISTERS, DocumentStream, prepare_home
from consumer.localpg import LocalPostgres


def _stream(seed: int = 1) -> DocumentStream:
    return DocumentStream(random.Random(seed), "run1", date(2026, 4, 18))


def test_same_seed_same_commands() -> None:
    assert _stream(7).batch(300) == _stream(7).batch(300)
    assert _stream(7).batch(50) != _stream(8).batch(50)


def test_mix_of_operations_and_registers() -> None:
    commands = _stream().batch(5000)
    ops = Counter(c["op"] for c in commands)
    assert ops["post"] > ops["repost"] > ops["unpost"] > 0
    bad = [c for c in commands if c["recorder"].startswith("bad:")]
    assert 0.01 < len(bad) / len(commands) < 0.03  # ~2 % for the engine to reject
    names = {d.name for d in DEMO_REGISTERS}
    good = [c for c in commands if c not in bad]
    assert {c["register"] for c in good} == names


def test_movements_hold_every_column_with_exact_values() -> None:
    columns = {d.name: set(d.dimensions) | set(d.resources) | {"period"} for d in DEMO_REGISTERS}
    for c in _stream().batch(2000):
        if c["recorder"].startswith("bad:") or c["op"] == "unpost":
            continue
        for m in c["movements"]:
            assert set(m) == columns[c["register"]]
            assert not any(isinstance(v, float) for v in m.values())
            if c["register"] == "demo_inventory":
                assert -m["quantity"].as_tuple().exponent <= 3
                assert -m["amount"].as_tuple().exponent <= 2


def test_transfers_balance_to_zero_and_stock_never_negative() -> None:
    docs = _stream()
    for c in docs.batch(3000):
        if c["register"] == "demo_accounts" and c["op"] != "unpost" and not c["recorder"].startswith("bad:"):
            assert sum(m["amount"] for m in c["movements"]) == 0
    assert all(q >= 0 for q in docs.stock.values())
    assert sum(docs.stock.values(), Decimal(0)) > 0


def test_home_unreachable_by_the_server_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(LocalPostgres, "server_can_reach", staticmethod(lambda path: False))
    out = io.StringIO()
    base = prepare_home(tmp_path, reset=False, out=out)
    assert base.parent.parent == Path("/var/tmp")
    assert base.parent.name.startswith("accumulator-")
    assert base.name == "pg"
    assert str(base) in out.getvalue()


def test_recorders_are_unique_per_run() -> None:
    posts = [c["recorder"] for c in _stream().batch(2000) if c["op"] == "post"]
    assert len(posts) == len(set(posts))
    assert all(":run1:" in r for r in posts)


def test_reset_deletes_only_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    # pytest's tmp dirs are private to root; this test is about --reset, not about reachability
    monkeypatch.setattr(LocalPostgres, "server_can_reach", staticmethod(lambda path: True))
    (tmp_path / "pg" / "data").mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    out = io.StringIO()
    base = prepare_home(tmp_path, reset=True, out=out)
    assert base == tmp_path.resolve() / "pg"
    assert not base.exists()
    assert (tmp_path / "cache").exists()
    assert "deleted" in out.getvalue()
