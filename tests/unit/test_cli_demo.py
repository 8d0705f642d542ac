"""The demo's pure parts: the seeded stream, the model of what was sent, the wire encoding, the summary text;
and its home layout. The whole demo against real servers is tests/integration/test_demo.py.
"""

from __future__ import annotations

import io
import random
import socket
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumer.cli import EXIT_USAGE, main
from consumer.commands import Reject, decode
from consumer.demo import prepare_home
from consumer.demo_model import Expected, compare, key_of
from consumer.demo_processes import metrics_port
from consumer.demo_producer import encode, malformed
from consumer.demo_stream import DEMO_REGISTERS, DocumentStream
from consumer.demo_summary import LiveView, render, render_line
from consumer.demo_watch import Metrics, Snapshot, parse_metrics
from consumer.localpg import LocalPostgres
from consumer.metrics import WorkerMetrics
from registers.models import DeltaStatus

REGISTERS = {d.name: d for d in DEMO_REGISTERS}


def _stream(seed: int = 1) -> DocumentStream:
    return DocumentStream(random.Random(seed), "run1", date(2026, 4, 18))


# ---- the stream -------------------------------------------------------------------------------------------


def test_same_seed_same_commands() -> None:
    assert _stream(7).batch(300) == _stream(7).batch(300)
    assert _stream(7).batch(50) != _stream(8).batch(50)


def test_mix_of_operations_and_registers() -> None:
    planned = _stream().batch(5000)
    ops = Counter(p.command["op"] for p in planned)
    assert ops["post"] > ops["repost"] > ops["unpost"] > 0
    bad = [p for p in planned if p.dead_letter is not None]
    assert 0.01 < len(bad) / len(planned) < 0.03  # ~2 % for the engine to reject
    assert {p.dead_letter for p in bad} == {"rejected", "unknown_register"}
    assert all(p.command["recorder"].startswith("bad:") for p in bad)
    good = [p.command for p in planned if p.dead_letter is None]
    assert {c["register"] for c in good} == set(REGISTERS)


def test_movements_hold_every_column_with_exact_values() -> None:
    columns = {d.name: set(d.dimensions) | set(d.resources) | {"period"} for d in DEMO_REGISTERS}
    for p in _stream().batch(2000):
        c = p.command
        if p.dead_letter is not None or c["op"] == "unpost":
            continue
        for m in c["movements"]:
            assert set(m) == columns[c["register"]]
            assert not any(isinstance(v, float) for v in m.values())
            if c["register"] == "demo_inventory":
                assert -m["quantity"].as_tuple().exponent <= 3
                assert -m["amount"].as_tuple().exponent <= 2


def test_transfers_balance_to_zero_and_stock_never_negative() -> None:
    docs = _stream()
    for p in docs.batch(3000):
        c = p.command
        if c["register"] == "demo_accounts" and c["op"] != "unpost" and p.dead_letter is None:
            assert sum(m["amount"] for m in c["movements"]) == 0
    assert all(q >= 0 for q in docs.stock.values())
    assert sum(docs.stock.values(), Decimal(0)) > 0


def test_recorders_are_unique_per_run() -> None:
    posts = [p.command["recorder"] for p in _stream().batch(2000) if p.command["op"] == "post"]
    assert len(posts) == len(set(posts))
    assert all(":run1:" in r for r in posts)


# ---- on the wire ------------------------------------------------------------------------------------------


def test_every_command_is_a_valid_envelope_keyed_by_its_recorder() -> None:
    sent_at = datetime(2026, 4, 18, 10, 15, tzinfo=UTC)
    for n, p in enumerate(_stream().batch(1000)):
        key, value = encode(p, f"run1-{n}", sent_at)
        command = decode(value)  # the worker's own decoder: schema-valid, numbers digit for digit
        assert key == command.recorder.encode()
        assert (command.id, command.sent_at) == (f"run1-{n}", sent_at)
        if p.command["op"] != "unpost":
            first = command.model_dump(by_alias=True)["movements"][0]
            assert {k: Decimal(str(v)) for k, v in first.items() if k in ("quantity", "amount")} == {
                k: Decimal(v) for k, v in p.command["movements"][0].items() if k in ("quantity", "amount")
            }


def test_malformed_messages_get_their_dead_letter_class() -> None:
    classes: Counter[str] = Counter()
    for n in range(4):
        error_class, key, value = malformed(n, "run1")
        assert key == f"malformed:run1:{n}".encode()
        with pytest.raises(Reject) as rejected:
            decode(value)
        assert rejected.value.error_class == error_class
        classes[error_class] += 1
    assert classes == {"invalid_json": 2, "schema_violation": 2}


# ---- the model --------------------------------------------------------------------------------------------


def _sales(recorder: str, op: str, qty: int | None = None, sku: str = "SKU-001") -> dict[str, object]:
    command: dict[str, object] = {"op": op, "register": "demo_sales", "recorder": recorder}
    if qty is not None:
        command["movements"] = [{"period": "2026-04-01", "channel": "web", "sku": sku, "qty": qty}]
    return command


def test_model_folds_posts_reposts_and_unposts_over_a_baseline() -> None:
    model = Expected(REGISTERS)
    model.start("demo_sales", {("web", "SKU-001"): {"qty": Decimal(10)}})
    model.sent(_sales("a", "post", 3), None)
    model.sent(_sales("b", "post", 4, "SKU-002"), None)
    model.sent(_sales("a", "repost", 5), None)  # replaces a's 3 by 5
    model.sent(_sales("b", "unpost"), None)
    model.sent(_sales("c", "post", 100), "rejected")  # dead-lettered: changes nothing
    model.malformed("invalid_json")
    assert model.totals["demo_sales"] == {
        ("web", "SKU-001"): {"qty": Decimal(15)},
        ("web", "SKU-002"): {"qty": Decimal(0)},
    }
    assert model.dead_letters == {"rejected": 1, "invalid_json": 1}
    assert model.ops == {"post": 2, "repost": 1, "unpost": 1}


def test_model_matches_a_replay_of_the_live_documents() -> None:
    """Pruning documents no correction can reach keeps the sums: a replay of the final documents agrees."""
    docs, model = _stream(3), Expected(REGISTERS)
    final: dict[str, tuple[str, list[dict[str, object]]]] = {}
    for _ in range(6000):
        p = docs.next()  # one at a time: pruning follows the stream's current corrections window
        model.sent(p.command, p.dead_letter)
        if p.dead_letter is None:
            c = p.command
            if c["op"] == "unpost":
                final.pop(c["recorder"])
            else:
                final[c["recorder"]] = (c["register"], c["movements"])
        if len(model.live) > 1000:
            model.prune(docs.recent)
    replay = Expected(REGISTERS)
    for recorder, (register, movements) in final.items():
        replay.sent({"op": "post", "register": register, "recorder": recorder, "movements": movements}, None)
    for defn in DEMO_REGISTERS:
        assert compare(defn, model.totals[defn.name], replay.totals[defn.name]) == []


def test_compare_reads_missing_rows_as_zero_and_reports_differences() -> None:
    defn = REGISTERS["demo_inventory"]
    key = key_of(defn, {"warehouse": 1, "product": 101})
    assert key == (101, 1)  # sorted dimension names: product, warehouse
    other = (102, 1)
    expected = {key: {"quantity": Decimal("1.50"), "amount": Decimal(3)}, other: {"quantity": Decimal(0)}}
    assert compare(defn, expected, {key: {"quantity": Decimal("1.5"), "amount": Decimal("3.00")}}) == []
    [mismatch] = compare(defn, expected, {key: {"quantity": Decimal(1), "amount": Decimal(3)}})
    assert mismatch.key == key
    assert (mismatch.expected["quantity"], mismatch.actual["quantity"]) == (Decimal("1.5"), Decimal(1))


# ---- the summary ------------------------------------------------------------------------------------------


def _snapshot(at: float, sent: int, processed: int) -> Snapshot:
    worker = Metrics(
        (
            ("accumulator_commands_total", (("op", "post"), ("outcome", "applied"), ("register", "r")), 90.0),
            ("accumulator_dead_letters_total", (("reason", "invalid_json"),), 2.0),
            ("accumulator_dead_letters_total", (("reason", "rejected"),), 3.0),
        )
    )
    compactor = Metrics(
        (
            ("accumulator_leader", (("role", "leader"),), 1.0),
            ("accumulator_merges_total", (("register", "demo_accounts"),), 7.0),
            ("accumulator_verify_status", (("register", "demo_accounts"),), 1.0),
            ("accumulator_verify_status", (("register", "demo_sales"),), 0.0),
            ("accumulator_verify_last_run_timestamp_seconds", (("register", "demo_sales"),), 1000.0),
        )
    )
    deltas = [
        DeltaStatus.model_validate({"register": "demo_accounts", "pending_rows": 12, "lag_seconds": 1.5})
    ]
    return Snapshot(at, sent, processed, 4, worker, compactor, deltas, [("warehouse 1", "5 units")])


def test_summary_shows_rates_lag_outcomes_merge_and_verify() -> None:
    history = [_snapshot(10.0, 1000, 990), _snapshot(12.0, 1400, 1390)]
    frame = "\n".join(render(history, elapsed=12, duration=20, compactor_state="running", now=1003.0))
    assert "sent 1,400 (200/s)" in frame
    assert "processed 1,390 (200/s)" in frame
    assert "consumer lag 4" in frame
    assert "applied 90" in frame
    assert "dead letters 5 (invalid_json 2, rejected 3)" in frame
    assert "demo_accounts: 12 delta rows pending, oldest 1.5 s" in frame
    assert "running, leader · 7 merges" in frame
    assert "verify demo_accounts ok, demo_sales MISMATCH (3 s ago)" in frame
    assert "warehouse 1 5 units" in frame
    line = render_line(history, elapsed=12)
    assert "consumer lag 4" in line
    assert "dead letters 5" in line


def test_summary_without_metrics_or_compactor() -> None:
    snap = Snapshot(1.0, 0, None, None, None, None, None)
    frame = "\n".join(render([snap], elapsed=0, duration=None, compactor_state="not available", now=0))
    assert "Ctrl-C stops" in frame
    assert "processed ? · consumer lag ?" in frame
    assert "worker: no metrics yet" in frame
    assert "not available · verify at the end" in frame


def test_metrics_are_read_from_the_exposition_the_processes_serve() -> None:
    registry = CollectorRegistry()
    worker = WorkerMetrics(registry, version="1", schema_version="7")
    worker.count_command("demo_sales", "post", "applied", 5)
    worker.count_command("demo_accounts", "repost", "applied", 2)
    worker.count_command(None, None, "dead_lettered")
    worker.dead_letters.labels("invalid_json").inc()
    metrics = parse_metrics(generate_latest(registry).decode())
    assert metrics.total("accumulator_commands_total", outcome="applied") == 7
    assert metrics.total("accumulator_commands_total", register="demo_sales") == 5
    assert metrics.by("accumulator_dead_letters_total", "reason") == {"invalid_json": 1}


def test_live_view_redraws_on_a_terminal_and_prints_lines_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    view = LiveView(tty)
    view.show(["a", "b"], "line")
    view.show(["c", "d"], "line")
    assert tty.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\nd\n"

    clock = iter([0.0, 1.0, 6.0, 6.0, 7.0]).__next__
    plain = io.StringIO()
    view = LiveView(plain, clock=clock)
    for n in range(3):
        view.show(["frame"], f"line {n}")
    assert plain.getvalue() == "line 1\n"


# ---- home, ports, CLI -------------------------------------------------------------------------------------


def test_home_unreachable_by_the_server_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalPostgres, "server_can_reach", staticmethod(lambda path: False))
    out = io.StringIO()
    paths = prepare_home(tmp_path, reset=False, out=out)
    assert paths.pg.parent.parent == Path("/var/tmp")
    assert paths.pg.parent.name.startswith("accumulator-")
    assert paths.pg.name == "pg"
    assert paths.kafka == tmp_path.resolve() / "kafka"  # the broker runs as the caller
    assert str(paths.pg) in out.getvalue()


def test_reset_deletes_the_cluster_and_broker_data_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's tmp dirs are private to root; this test is about --reset, not about reachability
    monkeypatch.setattr(LocalPostgres, "server_can_reach", staticmethod(lambda path: True))
    for sub in ("pg/data", "kafka/data", "cache/kafka-libs", "logs"):
        (tmp_path / sub).mkdir(parents=True)
    out = io.StringIO()
    paths = prepare_home(tmp_path, reset=True, out=out)
    assert (paths.pg, paths.kafka) == (tmp_path.resolve() / "pg", tmp_path.resolve() / "kafka")
    assert not paths.pg.exists()
    assert not paths.kafka.exists()
    assert (tmp_path / "cache" / "kafka-libs").exists()
    assert (tmp_path / "logs").exists()
    assert out.getvalue().count("reset: deleted") == 2


def test_a_busy_metrics_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = metrics_port(taken)
    assert other != taken
    assert metrics_port(other) == other  # free now: kept


def test_demo_usage_error_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rate", "-1"]) == EXIT_USAGE
    capsys.readouterr()
