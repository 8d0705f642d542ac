"""The pure batch core (SPEC §13.3, §14.1): plan, Batcher, dead-letter headers."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.batching import (
    REASON_MAX_BYTES,
    Batcher,
    Record,
    dead_letter_headers,
    dead_letter_topic,
    engine_payload,
    plan,
)
from consumer.commands import Post, Unpost, engine_json


def payload(recorder: str = "d1", op: str = "post", **extra: Any) -> bytes:
    doc: dict[str, Any] = {"op": op, "register": "stock", "recorder": recorder, **extra}
    if op != "unpost":
        doc.setdefault("movements", [{"period": "2026-04-18", "qty": 1}])
    return json.dumps(doc).encode()


def record(
    value: bytes | None = None,
    *,
    key: bytes | None = b"d1",
    topic: str = "t",
    partition: int = 0,
    offset: int = 0,
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> Record:
    return Record(
        topic, partition, offset, key, payload() if value is None else value, headers, 1_776_507_300_000
    )


# --- plan ---------------------------------------------------------------------------------------------------

BAD = [
    pytest.param(b"{", "invalid_json", id="truncated"),
    pytest.param(b"", "invalid_json", id="empty"),
    pytest.param(b'{"op":"post","register":"stock"}', "schema_violation", id="no-recorder"),
    pytest.param(b'{"op":"delete","register":"s","recorder":"d1"}', "schema_violation", id="bad-op"),
]


@pytest.mark.parametrize(("value", "error_class"), BAD)
def test_bad_command_becomes_reject(value: bytes, error_class: str) -> None:
    p = plan([record(value=value)])
    assert (p.commands, [r.error_class for r in p.rejects]) == ((), [error_class])
    assert p.next_offsets == {("t", 0): 1}


def test_tombstone_becomes_reject() -> None:
    tomb = Record("t", 0, 5, b"d1", None)
    p = plan([tomb])
    assert [(r.record, r.error_class) for r in p.rejects] == [(tomb, "invalid_json")]
    assert (p.next_offsets, p.value_bytes) == ({("t", 0): 6}, 0)


def test_plan_orders_by_partition_offset_and_counts_everything() -> None:
    records = [
        record(payload("a"), key=b"a", partition=1, offset=11),
        record(payload("b"), key=b"b", partition=0, offset=7),
        record(b"not json", partition=1, offset=10),
        record(payload("c", op="unpost"), key=b"c", partition=1, offset=12),
        record(payload("d"), key=b"d", topic="s", partition=0, offset=3),
        record(payload("e"), key=b"e", partition=0, offset=5),
    ]
    p = plan(records)
    assert [(r.topic, r.partition, r.offset) for r, _ in p.commands] == [
        ("s", 0, 3),
        ("t", 0, 5),
        ("t", 0, 7),
        ("t", 1, 11),
        ("t", 1, 12),
    ]
    assert [c.recorder for _, c in p.commands] == ["d", "e", "b", "a", "c"]
    assert isinstance(p.commands[-1].command, Unpost)
    assert isinstance(p.commands[0].command, Post)
    assert [(r.record.offset, r.error_class) for r in p.rejects] == [(10, "invalid_json")]
    assert p.next_offsets == {("s", 0): 4, ("t", 0): 8, ("t", 1): 13}
    assert p.first_offsets == {("s", 0): 3, ("t", 0): 5, ("t", 1): 10}
    assert p.value_bytes == sum(len(r.value or b"") for r in records)
    assert p.key_mismatches == ()


def test_reject_offset_still_advances_past_the_last_command() -> None:
    p = plan([record(offset=1), record(b"[]", offset=2)])
    assert p.next_offsets == {("t", 0): 3}
    assert [r.error_class for r in p.rejects] == ["schema_violation"]


def test_key_mismatch_is_counted_and_applied() -> None:
    records = [
        record(payload("d1"), key=b"d1", offset=0),
        record(payload("d1"), key=b"d2", offset=1),
        record(payload("d1"), key=None, offset=2),
        record(payload("ü"), key="ü".encode(), offset=3),
        record(payload("ü"), key="ü".encode("latin-1"), offset=4),
        record(b"{", key=b"x", offset=5),  # a reject is not a mismatch: there is no recorder to compare
    ]
    p = plan(records)
    assert len(p.commands) == 5
    assert [r.offset for r in p.key_mismatches] == [1, 2, 4]


def test_repeated_position_is_planned_once() -> None:
    first = record(payload("a"), key=b"a", offset=4)
    p = plan([first, record(payload("a"), key=b"a", offset=5), first])
    assert [r.offset for r, _ in p.commands] == [4, 5]
    assert p.value_bytes == 2 * len(first.value or b"")


def test_engine_payload_is_the_message_texts() -> None:
    values = [
        b' {"op":"post","register":"stock","recorder":"a",'
        b'"movements":[{"period":"2026-04-18","q":1.50,"r":1E+3}],"id":"x","sent_at":null}\n',
        payload("b", op="unpost"),
        b"{",
        payload("c", op="repost", movements=[]),
    ]
    p = plan([record(v, offset=i) for i, v in enumerate(values)])
    text = engine_payload(p.commands)
    assert text == "[" + ",".join(v.decode() for i, v in enumerate(values) if i != 2) + "]"
    exact = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    for doc in exact:  # the engine ignores id and sent_at (SPEC §7.1)
        doc.pop("id", None)
        doc.pop("sent_at", None)
    assert exact == json.loads(engine_json(c for _, c in p.commands), parse_float=Decimal, parse_int=Decimal)
    assert exact[0]["movements"][0]["q"].as_tuple() == Decimal("1.50").as_tuple()
    assert engine_payload(p.commands[1:2]) == "[" + values[1].decode() + "]"
    assert engine_payload([]) == "[]"


def test_empty_plan() -> None:
    p = plan([])
    assert (p.commands, p.rejects, p.next_offsets, p.first_offsets, p.key_mismatches, p.value_bytes) == (
        (),
        (),
        {},
        {},
        (),
        0,
    )


def test_reject_carries_metric_hints() -> None:
    p = plan([record(payload(recorder=""))])
    (reject,) = p.rejects
    assert (reject.op, reject.register) == ("post", "stock")


records_strategy = st.lists(
    st.builds(
        Record,
        topic=st.sampled_from(["t", "u"]),
        partition=st.integers(0, 2),
        offset=st.integers(0, 20),
        key=st.none() | st.binary(max_size=4),
        value=st.none() | st.binary(max_size=200) | st.sampled_from([payload(), payload(op="unpost"), b"{}"]),
    ),
    max_size=20,
)


@given(records_strategy)
@settings(max_examples=300)
def test_plan_never_raises_and_accounts_for_every_record(records: list[Record]) -> None:
    p = plan(records)
    positions = {(r.topic, r.partition, r.offset) for r in records}
    planned = [(r.topic, r.partition, r.offset) for r, _ in p.commands] + [
        (r.record.topic, r.record.partition, r.record.offset) for r in p.rejects
    ]
    assert sorted(planned) == sorted(positions)  # each position once, in exactly one list
    for tp in {(t, part) for t, part, _ in positions}:
        offsets = [o for t, part, o in positions if (t, part) == tp]
        assert p.next_offsets[tp] == max(offsets) + 1
        assert p.first_offsets[tp] == min(offsets)
    by_partition: dict[tuple[str, int], list[int]] = {}
    for r, _ in p.commands:
        by_partition.setdefault((r.topic, r.partition), []).append(r.offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_plan_never_raises_on_arbitrary_bytes(values: list[bytes]) -> None:
    p = plan([Record("t", 0, i, None, v) for i, v in enumerate(values)])
    assert len(p.commands) + len(p.rejects) == len(values)


def test_batching_imports_neither_kafka_nor_postgres() -> None:
    code = (
        "import sys, consumer.batching\n"
        "bad = [m for m in ('confluent_kafka', 'psycopg') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Batcher ------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sized(n: int, *, offset: int = 0, partition: int = 0, topic: str = "t") -> Record:
    return Record(topic, partition, offset, None, b"x" * n)


def test_batch_due_by_count() -> None:
    b = Batcher(max_messages=3, max_bytes=1000, max_wait_ms=1000, clock=Clock())
    assert (b.due(), b.wait_s(), b.take(), b.room) == (False, None, [], 3)
    b.add([sized(1, offset=0), sized(1, offset=1)])
    assert not b.due()
    assert b.room == 1
    b.add([sized(1, offset=2), sized(1, offset=3)])
    assert b.due()
    assert b.wait_s() == 0
    assert [r.offset for r in b.take()] == [0, 1, 2]
    assert (len(b), b.buffered_bytes) == (1, 1)


def test_batch_due_by_wait_after_the_first_record() -> None:
    clock = Clock()
    b = Batcher(max_messages=100, max_bytes=1000, max_wait_ms=250, clock=clock)
    b.add([sized(1, offset=0)])
    clock.now += 0.2
    b.add([sized(1, offset=1)])  # a later record does not restart the wait
    assert not b.due()
    assert b.wait_s() == pytest.approx(0.05)
    clock.now += 0.05
    assert b.due()
    assert b.wait_s() == 0
    assert [r.offset for r in b.take()] == [0, 1]
    assert (b.due(), b.wait_s()) == (False, None)


def test_zero_wait_makes_any_record_due() -> None:
    b = Batcher(max_messages=100, max_bytes=1000, max_wait_ms=0, clock=Clock())
    b.add([sized(1)])
    assert b.due()


def test_batch_due_by_bytes_and_cut_at_max_bytes() -> None:
    b = Batcher(max_messages=100, max_bytes=10, max_wait_ms=1000, clock=Clock())
    b.add([sized(4, offset=0), sized(4, offset=1)])
    assert not b.due()
    b.add([sized(4, offset=2)])
    assert b.due()
    assert [r.offset for r in b.take()] == [0, 1]  # a third would make 12 bytes
    assert [r.offset for r in b.take()] == [2]


def test_record_bigger_than_max_bytes_is_a_batch_of_its_own() -> None:
    b = Batcher(max_messages=100, max_bytes=10, max_wait_ms=1000, clock=Clock())
    b.add([sized(3, offset=0), sized(50, offset=1), sized(3, offset=2)])
    assert b.due()
    assert [r.offset for r in b.take()] == [0]
    assert [r.offset for r in b.take()] == [1]
    assert [r.offset for r in b.take()] == [2]
    assert b.buffered_bytes == 0


def test_leftovers_keep_their_arrival_time() -> None:
    clock = Clock()
    b = Batcher(max_messages=2, max_bytes=1000, max_wait_ms=100, clock=clock)
    b.add([sized(1, offset=i) for i in range(3)])
    assert len(b.take()) == 2
    assert not b.due()
    clock.now += 0.1
    assert b.due()


def test_revoke_drops_buffered_records_of_those_partitions() -> None:
    b = Batcher(max_messages=100, max_bytes=1000, max_wait_ms=1000, clock=Clock())
    b.add(
        [
            sized(2, partition=0, offset=0),
            sized(3, partition=1, offset=0),
            sized(5, partition=0, offset=1),
            sized(7, topic="u", partition=0, offset=0),
        ]
    )
    assert b.drop([("t", 0)]) == 2
    assert (len(b), b.buffered_bytes) == (2, 10)
    assert b.drop([]) == 0
    assert b.drop([("t", 9)]) == 0
    assert [(r.topic, r.partition) for r in b.take()] == [("t", 1), ("u", 0)]
    b.add([sized(1)])
    assert b.clear() == 1
    assert (len(b), b.buffered_bytes, b.due()) == (0, 0, False)


def test_revoke_of_everything_resets_the_wait() -> None:
    clock = Clock()
    b = Batcher(max_messages=100, max_bytes=1000, max_wait_ms=100, clock=clock)
    b.add([sized(1)])
    clock.now += 1
    b.drop([("t", 0)])
    b.add([sized(1, partition=1)])
    assert not b.due()


@pytest.mark.parametrize(("messages", "size", "wait"), [(0, 1, 0), (1, 0, 0), (1, 1, -1)])
def test_batcher_limits_are_checked(messages: int, size: int, wait: int) -> None:
    with pytest.raises(ValueError, match="max_"):
        Batcher(max_messages=messages, max_bytes=size, max_wait_ms=wait)


@given(st.lists(st.integers(0, 30), max_size=40), st.integers(1, 5), st.integers(1, 40))
def test_take_respects_limits_and_keeps_order(sizes: list[int], max_messages: int, max_bytes: int) -> None:
    b = Batcher(max_messages=max_messages, max_bytes=max_bytes, max_wait_ms=0, clock=Clock())
    b.add([sized(n, offset=i) for i, n in enumerate(sizes)])
    seen: list[int] = []
    while batch := b.take():
        assert len(batch) <= max_messages
        assert len(batch) == 1 or sum(r.size for r in batch) <= max_bytes
        seen += [r.offset for r in batch]
    assert seen == list(range(len(sizes)))
    assert b.buffered_bytes == 0


# --- dead letters -------------------------------------------------------------------------------------------


def test_dead_letter_headers() -> None:
    rec = record(b"{", partition=12, offset=34567, headers=(("trace", b"abc"), ("empty", None)))
    failed = datetime(2026, 4, 18, 12, 15, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert dead_letter_headers(rec, "invalid_json", "Expecting value", "workers", failed) == [
        ("trace", b"abc"),
        ("empty", None),
        ("accumulator.error.class", b"invalid_json"),
        ("accumulator.error.reason", b"Expecting value"),
        ("accumulator.source.topic", b"t"),
        ("accumulator.source.partition", b"12"),
        ("accumulator.source.offset", b"34567"),
        ("accumulator.consumer.group", b"workers"),
        ("accumulator.first_failed_at", b"2026-04-18T10:15:00.123Z"),
    ]


def test_dead_letter_headers_with_sqlstate_replace_stale_ones() -> None:
    replayed = record(
        headers=(("accumulator.error.class", b"old"), ("accumulator.source.offset", b"1"), ("x", b"y"))
    )
    headers = dead_letter_headers(
        replayed,
        "rejected",
        "stock: movements[0].qty: bad",
        "g",
        datetime(2026, 4, 18, tzinfo=UTC),
        sqlstate="22023",
    )
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    assert dict(headers)["accumulator.error.class"] == b"rejected"
    assert dict(headers)["accumulator.error.sqlstate"] == b"22023"
    assert dict(headers)["accumulator.source.offset"] == b"0"
    assert dict(headers)["accumulator.first_failed_at"] == b"2026-04-18T00:00:00.000Z"
    assert names[0] == "x"


@pytest.mark.parametrize(
    "reason", ["a" * 5000, "é" * 3000, "€" * 2000, "😀" * 1500, "a" + "😀" * 1500, "\ud800" * 10]
)
def test_reason_is_cut_to_4096_bytes_of_valid_utf8(reason: str) -> None:
    headers = dict(dead_letter_headers(record(), "rejected", reason, "g", datetime.now(UTC)))
    value = headers["accumulator.error.reason"]
    assert value is not None
    assert len(value) <= REASON_MAX_BYTES
    text = value.decode("utf-8")  # strict: no half character at the cut
    if len(reason.encode("utf-8", errors="replace")) > REASON_MAX_BYTES:
        assert text.endswith("…")
        assert len(value) > REASON_MAX_BYTES - 4


def test_short_reason_is_kept_whole() -> None:
    reason = "é" * 2048  # exactly 4096 bytes
    headers = dict(dead_letter_headers(record(), "rejected", reason, "g", datetime.now(UTC)))
    assert headers["accumulator.error.reason"] == reason.encode()


def test_first_failed_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        dead_letter_headers(record(), "rejected", "r", "g", datetime(2026, 4, 18))


def test_dead_letter_topic() -> None:
    assert dead_letter_topic("commands") == "commands.dlq"
    assert dead_letter_topic("commands", "") == "commands.dlq"
    assert dead_letter_topic("commands", "all.dlq") == "all.dlq"
