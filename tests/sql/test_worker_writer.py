"""`consumer.writer.Writer` against real PostgreSQL (SPEC §7.1, §11, §13.2, §14.1-14.2); no Kafka.

Records are built by hand and `plan()`ned, as the loop would after a poll. The Writer logs in as t_writer
(a member of accum_writer, the worker's real privileges); checks read the database as the superuser.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import Conn, create_register, dsn_as, movement, one, wait_until
from psycopg.pq import TransactionStatus

from consumer.batching import Plan, Record, TopicPartition, plan
from consumer.commands import decode, fingerprint
from consumer.writer import Fenced, Outcome, Writer

TOPIC = "cmds"
GROUP = "g1"
DIMS = {"warehouse": "integer", "product": "text"}
RES = {"quantity": "numeric(18,3)", "amount": "numeric(18,2)"}
WAIT_S = 20.0  # bound of every wait on another thread or backend

Cmd = dict[str, Any]


# ---- commands and records ---------------------------------------------------------------------------------


def line(
    period: str = "2026-04-18", warehouse: Any = 1, product: str = "p", quantity: Any = "1", amount: Any = 0
) -> Cmd:
    """One movement of `inv`; values are JSON as a producer would write them."""
    return movement(period, warehouse, product, quantity, amount)


def post(recorder: str, *lines: Cmd, register: str = "inv", id: str | None = None) -> Cmd:
    cmd: Cmd = {
        "op": "post",
        "register": register,
        "recorder": recorder,
        "movements": list(lines or [line()]),
    }
    if id is not None:
        cmd["id"] = id
    return cmd


def repost(recorder: str, *lines: Cmd, register: str = "inv", id: str | None = None) -> Cmd:
    cmd: Cmd = {"op": "repost", "register": register, "recorder": recorder, "movements": list(lines)}
    if id is not None:
        cmd["id"] = id
    return cmd


def unpost(recorder: str, register: str = "inv", id: str | None = None) -> Cmd:
    cmd: Cmd = {"op": "unpost", "register": register, "recorder": recorder}
    if id is not None:
        cmd["id"] = id
    return cmd


def text(cmd: Cmd | str) -> str:
    """A command's message value; a `str` is taken as the JSON text itself (numbers spelled as written)."""
    return cmd if isinstance(cmd, str) else json.dumps(cmd)


def record(partition: int, offset: int, cmd: Cmd | str, topic: str = TOPIC) -> Record:
    value = text(cmd)
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=str(json.loads(value)["recorder"]).encode("utf-8"),
        value=value.encode("utf-8"),
    )


@dataclass
class Stream:
    """A topic's partitions as the worker reads them: each call continues where the last one stopped."""

    topic: str = TOPIC
    offsets: dict[int, int] = field(default_factory=dict)

    def records(self, cmds: Sequence[Cmd | str], partition: int = 0) -> list[Record]:
        start = self.offsets.get(partition, 0)
        self.offsets[partition] = start + len(cmds)
        return [record(partition, start + i, cmd, self.topic) for i, cmd in enumerate(cmds)]

    def batch(self, cmds: Sequence[Cmd | str], partition: int = 0) -> Plan:
        return plan(self.records(cmds, partition))


def nothing(outcomes: list[Outcome]) -> None:
    """A `before_commit` with no dead letters to flush."""


def run(
    writer: Writer, batch: Plan, before_commit: Callable[[list[Outcome]], None] = nothing
) -> list[Outcome]:
    """One batch cycle from the stored offsets (first sight: the batch's first offsets are stored)."""
    stored = writer.insert_offsets(batch.first_offsets)
    return writer.write(batch, {tp: stored[tp] for tp in batch.next_offsets}, before_commit)


def applied(n: int) -> Outcome:
    return Outcome("applied", affected=n)


DUPLICATE = Outcome("duplicate")


# ---- database reads (superuser) ---------------------------------------------------------------------------


def offsets(conn: Conn, group: str = GROUP) -> dict[TopicPartition, int]:
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM accum.consumer_offsets WHERE consumer_group = %s", (group,)
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


def movements(conn: Conn, register: str = "inv") -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT recorder, period, warehouse, product, quantity, amount FROM accum.{register}_movements"
        " ORDER BY id"
    ).fetchall()


def ledger(conn: Conn, register: str = "inv") -> list[tuple[Any, ...]]:
    """Movements without their ids, sorted: what two ways of applying the same commands must agree on."""
    return sorted(movements(conn, register), key=repr)


def id_records(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT register, id, fingerprint, source_topic, source_partition, source_offset"
        " FROM accum.consumer_commands ORDER BY register, id"
    ).fetchall()


def fp(cmd: Cmd | str) -> str:
    return fingerprint(decode(text(cmd).encode("utf-8")))


def backend_waits_on_lock(conn: Conn, pid: int) -> bool:
    waiting: bool = one(
        conn, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = %s", (pid,)
    )
    return waiting


# ---- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def db(conn: Conn) -> Conn:
    """Superuser connection to the test's database, with the register `inv`."""
    create_register(conn, "inv", DIMS, RES)
    return conn


@pytest.fixture
def writer_dsn(db_dsn: str) -> str:
    return dsn_as(db_dsn, "t_writer")


@pytest.fixture
def writer(db: Conn, writer_dsn: str) -> Iterator[Writer]:
    w = Writer(writer_dsn, GROUP)
    try:
        yield w
    finally:
        w.close()


class Background(threading.Thread):
    """Runs `fn` once; keeps its result or exception for the test thread."""

    def __init__(self, name: str, fn: Callable[[], list[Outcome]]) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.result: list[Outcome] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(WAIT_S)
        assert not self.is_alive(), f"{self.name} still running after {WAIT_S}s"


@dataclass
class Hold:
    """A `before_commit` that keeps its batch's transaction open until released (or fails it)."""

    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    fail: bool = False

    def __call__(self, outcomes: list[Outcome]) -> None:
        self.holding.set()
        if not self.release.wait(WAIT_S):
            raise AssertionError("the held transaction was never released")
        if self.fail:
            raise RuntimeError("dead letters could not be flushed")


def contend(
    db: Conn, writer: Writer, rival: Writer, mine: Plan, theirs: Plan, hold: Hold, *, what: str
) -> tuple[Background, Background]:
    """`writer` writes `mine` (partition 0) and holds its transaction open in before_commit; `rival` then
    writes `theirs` (partition of its first record) and must block on a lock (`what`); the hold is released
    and both finish. Returns both threads (results or errors) for the test to judge; closes `rival`."""
    rival_pid = rival.connection().info.backend_pid
    their_tp = next(iter(theirs.next_offsets))
    first = Background("first", lambda: writer.write(mine, {(TOPIC, 0): 0}, hold))
    second = Background("second", lambda: rival.write(theirs, {their_tp: 0}, nothing))
    try:
        first.start()
        assert hold.holding.wait(WAIT_S), "first batch never reached before_commit"
        second.start()
        wait_until(lambda: backend_waits_on_lock(db, rival_pid), within=WAIT_S, what=what)
        assert second.is_alive()
        hold.release.set()
        first.finish()
        second.finish()
    finally:
        hold.release.set()
        first.join(WAIT_S)
        second.join(WAIT_S)
        rival.close()
    return first, second


# ---- stored offsets ---------------------------------------------------------------------------------------


def test_insert_offsets_first_insert_wins_per_group(db: Conn, writer: Writer, writer_dsn: str) -> None:
    a, b = (TOPIC, 0), (TOPIC, 1)
    assert writer.stored_offsets([]) == {}
    assert writer.insert_offsets({}) == {}
    assert writer.stored_offsets([a, b]) == {}

    assert writer.insert_offsets({a: 5}) == {a: 5}
    # a second insert (a racer, or a later assignment) never overwrites; new partitions are added
    assert writer.insert_offsets({a: 9, b: 3}) == {a: 5, b: 3}
    assert writer.stored_offsets([b, a, a]) == {a: 5, b: 3}
    assert writer.stored_offsets([b, (TOPIC, 7), ("other", 0)]) == {b: 3}

    other = Writer(writer_dsn, "g2")
    try:
        assert other.stored_offsets([a, b]) == {}  # only the group's own rows
        assert other.insert_offsets({a: 100}) == {a: 100}
        assert other.stored_offsets([a, b]) == {a: 100}
    finally:
        other.close()
    assert writer.stored_offsets([a, b]) == {a: 5, b: 3}
    assert offsets(db, GROUP) == {a: 5, b: 3}
    assert offsets(db, "g2") == {a: 100}


def test_register_names(db: Conn, writer: Writer) -> None:
    create_register(db, "inv2", DIMS, RES)
    assert writer.register_names() == {"inv", "inv2"}


# ---- write(): the batch cycle -----------------------------------------------------------------------------


def test_write_applies_batch_advances_offsets_and_calls_before_commit(db: Conn, writer: Writer) -> None:
    stream = Stream()
    recs = stream.records(
        [post("d1", line(quantity="1.5"), line(product="q", quantity=2)), post("d2", line(quantity="0.25"))],
        0,
    ) + stream.records([repost("d1", line(quantity=7)), unpost("d2"), unpost("nobody")], 1)
    batch = plan(recs)
    assert writer.insert_offsets(batch.first_offsets) == {(TOPIC, 0): 0, (TOPIC, 1): 0}

    seen: list[tuple[list[Outcome], bool, int]] = []

    def before_commit(outcomes: list[Outcome]) -> None:
        # inside the transaction: the movements are not visible to another session yet
        seen.append(
            (
                list(outcomes),
                writer.connection().info.transaction_status == TransactionStatus.INTRANS,
                len(movements(db)),
            )
        )

    outcomes = writer.write(batch, {(TOPIC, 0): 0, (TOPIC, 1): 0}, before_commit)

    # one outcome per planned command, in batch order (partition 0's, then partition 1's)
    assert [p.record.offset for p in batch.commands] == [0, 1, 0, 1, 2]
    assert outcomes == [applied(2), applied(1), applied(1), applied(1), applied(0)]
    assert seen == [(outcomes, True, 0)]
    assert offsets(db) == {(TOPIC, 0): 2, (TOPIC, 1): 3} == batch.next_offsets
    assert [(m[0], m[4]) for m in movements(db)] == [("d1", Decimal("7.000"))]
    assert id_records(db) == []  # commands without an id leave no record


def test_before_commit_failure_rolls_back_everything(db: Conn, writer: Writer) -> None:
    batch = Stream().batch([post("d1", id="c1"), post("d2"), unpost("d3", id="c2")])
    writer.insert_offsets(batch.first_offsets)

    def before_commit(outcomes: list[Outcome]) -> None:
        assert [o.status for o in outcomes] == ["applied", "applied", "applied"]
        raise RuntimeError("dead letters could not be flushed")

    with pytest.raises(RuntimeError, match="flushed"):
        writer.write(batch, {(TOPIC, 0): 0}, before_commit)
    assert movements(db) == []
    assert offsets(db) == {(TOPIC, 0): 0}
    assert id_records(db) == []

    # the same batch retried applies normally on the same Writer
    assert writer.write(batch, {(TOPIC, 0): 0}, nothing) == [applied(1), applied(1), applied(0)]
    assert offsets(db) == {(TOPIC, 0): 3}
    assert len(movements(db)) == 2


def test_consecutive_batches_continue_from_the_written_offsets(db: Conn, writer: Writer) -> None:
    stream = Stream()
    first = stream.batch([post("d1"), post("d2")])
    assert run(writer, first) == [applied(1), applied(1)]
    second = stream.batch([unpost("d1")])
    assert second.first_offsets == {(TOPIC, 0): 2}
    # expected = what the previous batch wrote
    assert writer.write(second, first.next_offsets, nothing) == [applied(1)]
    assert offsets(db) == {(TOPIC, 0): 3}
    assert [m[0] for m in movements(db)] == ["d2"]


def test_batch_of_only_rejected_records_still_advances_offsets(db: Conn, writer: Writer) -> None:
    recs = [
        Record(TOPIC, 0, 0, b"k", b"not json"),
        Record(TOPIC, 0, 1, b"k", None),
    ]
    batch = plan(recs)
    assert batch.commands == ()
    assert len(batch.rejects) == 2
    assert run(writer, batch) == []
    assert offsets(db) == {(TOPIC, 0): 2}


# ---- fencing ----------------------------------------------------------------------------------------------


def test_fenced_when_stored_offset_moved(db: Conn, writer: Writer) -> None:
    batch = Stream().batch([post("d1", id="c1")])
    writer.insert_offsets({(TOPIC, 0): 0})
    db.execute("UPDATE accum.consumer_offsets SET next_offset = 1 WHERE consumer_group = %s", (GROUP,))

    called: list[list[Outcome]] = []
    with pytest.raises(Fenced) as fenced:
        writer.write(batch, {(TOPIC, 0): 0}, called.append)
    assert fenced.value.partitions == ((TOPIC, 0),)
    assert called == []  # fenced before any work
    assert movements(db) == []
    assert offsets(db) == {(TOPIC, 0): 1}
    assert id_records(db) == []


def test_fenced_when_no_offset_row(db: Conn, writer: Writer) -> None:
    batch = Stream().batch([post("d1")])
    with pytest.raises(Fenced):
        writer.write(batch, {(TOPIC, 0): 0}, nothing)
    assert movements(db) == []
    assert offsets(db) == {}


def test_fenced_on_one_of_two_partitions_applies_nothing(db: Conn, writer: Writer) -> None:
    stream = Stream()
    batch = plan(stream.records([post("d1")], 0) + stream.records([post("d2")], 1))
    writer.insert_offsets({(TOPIC, 0): 0, (TOPIC, 1): 0})
    db.execute(
        "UPDATE accum.consumer_offsets SET next_offset = 4 WHERE consumer_group = %s AND partition = 1",
        (GROUP,),
    )
    with pytest.raises(Fenced) as fenced:
        writer.write(batch, {(TOPIC, 0): 0, (TOPIC, 1): 0}, nothing)
    assert fenced.value.partitions == ((TOPIC, 1),)
    assert movements(db) == []
    assert offsets(db) == {(TOPIC, 0): 0, (TOPIC, 1): 4}  # partition 0's advance was rolled back too


def test_another_groups_offsets_do_not_fence(db: Conn, writer: Writer) -> None:
    db.execute(
        "INSERT INTO accum.consumer_offsets (consumer_group, topic, partition, next_offset)"
        " VALUES ('g2', %s, 0, 42)",
        (TOPIC,),
    )
    assert run(writer, Stream().batch([post("d1")])) == [applied(1)]
    assert offsets(db) == {(TOPIC, 0): 1}
    assert offsets(db, "g2") == {(TOPIC, 0): 42}


def test_concurrent_writers_on_one_partition_one_is_fenced(db: Conn, writer: Writer, writer_dsn: str) -> None:
    rival = Writer(writer_dsn, GROUP)
    hold = Hold()
    mine = Stream().batch([post("mine", id="m")])
    theirs = Stream().batch([post("theirs", id="t"), post("theirs-2")])
    writer.insert_offsets({(TOPIC, 0): 0})
    first, second = contend(db, writer, rival, mine, theirs, hold, what="rival waits on the row")
    assert first.error is None
    assert first.result == [applied(1)]
    assert isinstance(second.error, Fenced), second.error
    assert second.error.partitions == ((TOPIC, 0),)
    assert offsets(db) == {(TOPIC, 0): 1}
    assert [m[0] for m in movements(db)] == ["mine"]
    assert [r[1] for r in id_records(db)] == ["m"]


# ---- idempotency ------------------------------------------------------------------------------------------


def test_command_id_is_recorded_and_replay_is_a_duplicate(db: Conn, writer: Writer) -> None:
    cmd = post("d1", line(quantity=2.5), id="c-1")
    stream = Stream()
    stream.offsets[3] = 10
    assert run(writer, stream.batch([cmd], 3)) == [applied(1)]
    assert id_records(db) == [("inv", "c-1", fp(cmd), TOPIC, 3, 10)]
    assert fp(cmd) == fingerprint(decode(json.dumps(cmd).encode()))

    # redelivered (a producer retry): same fingerprint, also with another sent_at and number spelling
    again = json.dumps(cmd | {"sent_at": "2026-04-18T10:15:00Z"}).replace(
        '"quantity": 2.5', '"quantity": 2.50'
    )
    assert "2.50" in again
    assert fp(again) == fp(cmd)
    assert run(writer, stream.batch([cmd, again], 3)) == [DUPLICATE, DUPLICATE]
    assert len(movements(db)) == 1
    assert id_records(db) == [("inv", "c-1", fp(cmd), TOPIC, 3, 10)]  # the first source position stays
    assert offsets(db) == {(TOPIC, 3): 13}


def test_reused_id_with_other_payload_is_not_applied(db: Conn, writer: Writer) -> None:
    stream = Stream()
    assert run(writer, stream.batch([post("d1", id="c-1")])) == [applied(1)]
    out = run(writer, stream.batch([post("d1", line(quantity=9), id="c-1"), unpost("d1", id="c-1")]))
    assert [o.status for o in out] == ["id_reused", "id_reused"]
    assert out[0].message is not None
    assert out[0].message.startswith("inv: ")
    assert '"c-1"' in out[0].message
    assert out[0].sqlstate is None
    assert [m[4] for m in movements(db)] == [Decimal("1.000")]


def test_same_id_twice_in_one_batch(db: Conn, writer: Writer) -> None:
    cmd = post("d1", id="x")
    out = run(writer, Stream().batch([cmd, post("d2"), cmd, post("d1", line(quantity=5), id="x")]))
    assert out[:3] == [applied(1), applied(1), DUPLICATE]
    assert out[3].status == "id_reused"
    assert [(m[0], m[4]) for m in movements(db)] == [("d1", Decimal("1.000")), ("d2", Decimal("1.000"))]
    assert id_records(db) == [("inv", "x", fp(cmd), TOPIC, 0, 0)]


def test_same_id_on_another_register_is_independent(db: Conn, writer: Writer) -> None:
    create_register(db, "inv2", DIMS, RES)
    a, b = post("d1", id="x"), post("d1", register="inv2", id="x")
    assert run(writer, Stream().batch([a, b])) == [applied(1), applied(1)]
    assert id_records(db) == [("inv", "x", fp(a), TOPIC, 0, 0), ("inv2", "x", fp(b), TOPIC, 0, 1)]
    assert len(movements(db, "inv")) == 1
    assert len(movements(db, "inv2")) == 1


@pytest.mark.parametrize(
    ("bad_line", "sqlstate"),
    [
        pytest.param(line() | {"colour": "red"}, "42703", id="unknown-key"),
        pytest.param(line(quantity="1.23456"), "22023", id="too-many-decimals"),
    ],
)
def test_rejected_command_releases_its_id(db: Conn, writer: Writer, bad_line: Cmd, sqlstate: str) -> None:
    stream = Stream()
    bad = post("d1", bad_line, id="c-1")
    out = run(writer, stream.batch([bad, post("d2", id="c-2")]))
    assert out[0].status == "rejected"
    assert out[0].sqlstate == sqlstate
    assert out[0].affected is None
    assert out[0].message is not None
    assert out[0].message.startswith("inv: ")
    assert out[1] == applied(1)
    assert [r[1] for r in id_records(db)] == ["c-2"]  # the rejected command's record is gone

    # the corrected command reuses the id in a later batch
    fixed = post("d1", id="c-1")
    assert run(writer, stream.batch([fixed])) == [applied(1)]
    assert [(r[1], r[2], r[5]) for r in id_records(db)] == [("c-1", fp(fixed), 2), ("c-2", fp(post("d2")), 1)]
    assert sorted(m[0] for m in movements(db)) == ["d1", "d2"]


def test_rejected_and_identical_repeat_in_one_batch_are_both_rejected(db: Conn, writer: Writer) -> None:
    bad = post("d1", line(quantity="1.23456"), id="c-1")
    out = run(writer, Stream().batch([bad, post("d2"), bad]))
    assert [o.status for o in out] == ["rejected", "applied", "rejected"]
    assert out[2].sqlstate == out[0].sqlstate == "22023"
    assert id_records(db) == []
    assert [m[0] for m in movements(db)] == ["d2"]


def test_corrected_command_in_the_same_batch_as_its_rejected_id(db: Conn, writer: Writer) -> None:
    """Outcomes must not depend on where batch boundaries fall (they depend on timing).

    In two batches the corrected command applies (its id was released, SPEC §13.2); so it must in one.
    """
    bad = post("d1", line(quantity="1.23456"), id="c-1")
    fixed = post("d1", line(quantity="1.234"), id="c-1")
    out = run(writer, Stream().batch([bad, fixed]))
    assert out[0].status == "rejected"
    assert out[1] == applied(1)
    assert [(m[0], m[4]) for m in movements(db)] == [("d1", Decimal("1.234"))]
    assert [(r[1], r[2], r[5]) for r in id_records(db)] == [("c-1", fp(fixed), 1)]


def test_an_id_passes_along_a_chain_of_rejected_carriers_in_one_batch(db: Conn, writer: Writer) -> None:
    """Rejected, rejected differently, repeat of the first, then valid: as if each came in its own batch."""
    first_bad = post("d1", line(quantity="1.23456"), id="c-1")
    second_bad = post("d1", line(quantity="1.11111"), id="c-1")
    fixed = post("d1", line(quantity="2"), id="c-1")
    other = post("d1", line(quantity="5"), id="c-1")
    out = run(writer, Stream().batch([first_bad, second_bad, first_bad, fixed, fixed, other]))
    statuses = [o.status for o in out]
    assert statuses == ["rejected", "rejected", "rejected", "applied", "duplicate", "id_reused"]
    assert [(m[0], m[4]) for m in movements(db)] == [("d1", Decimal("2.000"))]
    assert [(r[1], r[2]) for r in id_records(db)] == [("c-1", fp(fixed))]


def test_recorded_payload_after_a_reused_id_in_the_same_batch_is_a_duplicate(
    db: Conn, writer: Writer
) -> None:
    """One batch = the same outcomes as one command per batch: the later command repeats what is recorded."""
    stream = Stream()
    cmd = post("d1", id="c-1")
    assert run(writer, stream.batch([cmd])) == [applied(1)]
    out = run(writer, stream.batch([post("d1", line(quantity=9), id="c-1"), cmd]))
    assert out[0].status == "id_reused"
    assert out[1] == DUPLICATE  # one by one it is a duplicate, skipped, not dead-lettered
    assert len(movements(db)) == 1


def test_concurrent_duplicate_waits_then_is_skipped(db: Conn, writer: Writer, writer_dsn: str) -> None:
    rival = Writer(writer_dsn, GROUP)
    hold = Hold()
    cmd = post("d1", id="same")
    stream = Stream()
    mine = stream.batch([cmd], 0)
    theirs = stream.batch([post("other"), cmd], 1)
    writer.insert_offsets({(TOPIC, 0): 0, (TOPIC, 1): 0})
    first, second = contend(db, writer, rival, mine, theirs, hold, what="rival waits on the id")
    assert first.error is None
    assert second.error is None
    assert first.result == [applied(1)]
    assert second.result == [applied(1), DUPLICATE]
    assert sorted(m[0] for m in movements(db)) == ["d1", "other"]
    assert id_records(db) == [("inv", "same", fp(cmd), TOPIC, 0, 0)]
    assert offsets(db) == {(TOPIC, 0): 1, (TOPIC, 1): 2}


def test_concurrent_holder_rolls_back_so_the_waiter_applies(
    db: Conn, writer: Writer, writer_dsn: str
) -> None:
    rival = Writer(writer_dsn, GROUP)
    hold = Hold(fail=True)
    cmd = post("d1", id="same")
    stream = Stream()
    mine, theirs = stream.batch([cmd], 0), stream.batch([cmd], 1)
    writer.insert_offsets({(TOPIC, 0): 0, (TOPIC, 1): 0})
    first, second = contend(db, writer, rival, mine, theirs, hold, what="rival waits on the id")
    assert isinstance(first.error, RuntimeError)
    assert second.error is None
    assert second.result == [applied(1)]
    assert id_records(db) == [("inv", "same", fp(cmd), TOPIC, 1, 0)]
    assert offsets(db) == {(TOPIC, 0): 0, (TOPIC, 1): 1}
    assert len(movements(db)) == 1


# ---- rejections -------------------------------------------------------------------------------------------


def test_unknown_register_and_bad_values_are_rejected_the_rest_applies(db: Conn, writer: Writer) -> None:
    cmds = [
        post("d1"),
        post("d2", register="nope"),
        post("d3", line(quantity="1.23456")),  # scale exceeded
        post("d4", line(period="yesterday")),  # not a period form
        post("d5", line(warehouse="x")),  # not readable as an integer
        post("d6", line() | {"colour": "red"}),  # unknown key
        post("d7", line(quantity="1e30")),  # too many integer digits
        repost("d1", line(quantity=3)),
    ]
    out = run(writer, Stream().batch(cmds))
    assert [(o.status, o.sqlstate) for o in out] == [
        ("applied", None),
        ("rejected", "42704"),
        ("rejected", "22023"),
        ("rejected", "22007"),
        ("rejected", "22P02"),
        ("rejected", "42703"),
        ("rejected", "22003"),
        ("applied", None),
    ]
    assert out[0] == applied(1)
    assert out[7] == applied(1)
    for o, register in zip(out[1:7], ["nope", "inv", "inv", "inv", "inv", "inv"], strict=True):
        assert o.message is not None
        assert o.message.startswith(f"{register}: "), o.message
        assert o.affected is None
    assert [(m[0], m[4]) for m in movements(db)] == [("d1", Decimal("3.000"))]
    assert offsets(db) == {(TOPIC, 0): len(cmds)}


def test_one_batch_equals_one_by_one_within_a_recorder(db: Conn, writer: Writer) -> None:
    create_register(db, "inv2", DIMS, RES)

    def script(register: str) -> list[Cmd]:
        return [
            post("d1", line(quantity=1), line(product="q", quantity=2), register=register),
            post("d2", line(quantity=10), register=register),
            repost("d1", line(quantity=3), register=register),
            post("d1", line(product="r", quantity=4), register=register),
            unpost("d1", register=register),
            repost("d2", register=register),  # clears d2
            repost("d1", line(quantity=5), line(warehouse=2, quantity=6), register=register),
            post("d2", line(quantity=7), register=register),
        ]

    batched = run(writer, Stream(topic="a").batch(script("inv")))
    stream = Stream(topic="b")
    single = [run(writer, stream.batch([cmd]))[0] for cmd in script("inv2")]
    assert (
        batched
        == single
        == [applied(2), applied(1), applied(1), applied(1), applied(2), applied(0), applied(2), applied(1)]
    )
    assert ledger(db, "inv") == ledger(db, "inv2")
    assert [(m[0], m[2], m[4]) for m in ledger(db, "inv")] == [
        ("d1", 1, Decimal("5.000")),
        ("d1", 2, Decimal("6.000")),
        ("d2", 1, Decimal("7.000")),
    ]
    assert db.execute("SELECT * FROM accum.register_verify('inv', true)").fetchall() == []


# ---- infrastructure errors --------------------------------------------------------------------------------


def test_missing_privileges_raise_instead_of_outcomes(db: Conn, db_dsn: str) -> None:
    reader = Writer(dsn_as(db_dsn, "t_reader"), GROUP)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.insert_offsets({(TOPIC, 0): 0})
        db.execute(
            "INSERT INTO accum.consumer_offsets (consumer_group, topic, partition, next_offset)"
            " VALUES (%s, %s, 0, 0)",
            (GROUP, TOPIC),
        )
        called: list[list[Outcome]] = []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.write(Stream().batch([post("d1", id="c")]), {(TOPIC, 0): 0}, called.append)
        assert called == []
        # the connection stays usable: the failed transaction was rolled back
        assert reader.register_names() == {"inv"}
    finally:
        reader.close()
    assert movements(db) == []
    assert offsets(db) == {(TOPIC, 0): 0}
    assert id_records(db) == []


def test_broken_connection_is_replaced_on_the_next_call(db: Conn, writer: Writer) -> None:
    stream = Stream()
    assert run(writer, stream.batch([post("d1")])) == [applied(1)]
    pid = writer.connection().info.backend_pid
    assert one(db, "SELECT pg_terminate_backend(%s)", (pid,)) is True
    wait_until(
        lambda: one(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == 0,
        within=WAIT_S,
        what="terminated backend gone",
    )
    batch = stream.batch([post("d2")])
    with pytest.raises(psycopg.OperationalError):
        writer.write(batch, {(TOPIC, 0): 1}, nothing)
    assert offsets(db) == {(TOPIC, 0): 1}

    assert writer.write(batch, {(TOPIC, 0): 1}, nothing) == [applied(1)]
    assert writer.connection().info.backend_pid != pid
    assert offsets(db) == {(TOPIC, 0): 2}
    assert [m[0] for m in movements(db)] == ["d1", "d2"]
