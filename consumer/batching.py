"""PURE worker batch logic (SPEC §14.1): records → commands, rejects, next offsets; when a batch is due.

No Kafka client and no PostgreSQL driver here: the loop hands in plain `Record`s and an injected clock, so
everything below is tested without services. Dead-letter headers (SPEC §13.3) are built here for the same
reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

from consumer.commands import AnyCommand, Reject, decode

__all__ = [
    "DEAD_LETTER_HEADERS",
    "REASON_MAX_BYTES",
    "Batcher",
    "Plan",
    "Planned",
    "Record",
    "Rejected",
    "TopicPartition",
    "dead_letter_headers",
    "dead_letter_topic",
    "engine_payload",
    "plan",
]

REASON_MAX_BYTES: Final = 4096
_ELLIPSIS: Final = "…"

TopicPartition = tuple[str, int]
Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message, as plain data. `timestamp` is milliseconds since the epoch, if known."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp: int | None = None

    @property
    def size(self) -> int:
        """What counts against `batch_max_bytes`: the value's bytes."""
        return len(self.value) if self.value is not None else 0


class Planned(NamedTuple):
    record: Record
    command: AnyCommand


class Rejected(NamedTuple):
    """A record that goes to the dead-letter topic; `op`/`register` are best-effort metric labels."""

    record: Record
    error_class: str
    reason: str
    op: str | None = None
    register: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a batch of records asks for.

    `commands` keep offset order within each partition (the engine applies them in array order).
    `next_offsets` covers every record, rejects included: a dead-lettered record is consumed too.
    `first_offsets` is each partition's lowest offset in the batch (fencing compares it, SPEC §14.2).
    `key_mismatches` are decoded commands whose key is not their recorder: applied, but counted.
    """

    commands: tuple[Planned, ...]
    rejects: tuple[Rejected, ...]
    next_offsets: dict[TopicPartition, int]
    first_offsets: dict[TopicPartition, int]
    key_mismatches: tuple[Record, ...]
    value_bytes: int


def plan(records: Sequence[Record]) -> Plan:
    """Decode and validate every record; bad input becomes a `Rejected`, never an exception."""
    # Stable sort by position: records of one partition may come from several polls; a position seen twice
    # (a re-poll after a seek) is the same message, planned once.
    ordered = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    commands: list[Planned] = []
    rejects: list[Rejected] = []
    mismatches: list[Record] = []
    next_offsets: dict[TopicPartition, int] = {}
    first_offsets: dict[TopicPartition, int] = {}
    value_bytes = 0
    last: tuple[str, int, int] | None = None
    for record in ordered:
        position = (record.topic, record.partition, record.offset)
        if position == last:
            continue
        last = position
        tp = (record.topic, record.partition)
        first_offsets.setdefault(tp, record.offset)
        next_offsets[tp] = record.offset + 1
        value_bytes += record.size
        try:
            command = decode(record.value)
        except Reject as r:
            rejects.append(Rejected(record, r.error_class, r.reason, r.op, r.register))
            continue
        except Exception as e:  # a decoder bug must not stop the partition: dead-letter and carry on
            rejects.append(Rejected(record, "schema_violation", f"undecodable: {type(e).__name__}"))
            continue
        commands.append(Planned(record, command))
        if record.key is None or record.key != command.recorder.encode("utf-8"):
            mismatches.append(record)
    return Plan(
        commands=tuple(commands),
        rejects=tuple(rejects),
        next_offsets=next_offsets,
        first_offsets=first_offsets,
        key_mismatches=tuple(mismatches),
        value_bytes=value_bytes,
    )


def engine_payload(entries: Iterable[Planned]) -> str:
    """`p_commands` of `accum.register_apply` for `entries`: the messages' own JSON texts, in the given order.

    Exact by construction and with no re-serialisation: each text is one `decode` accepted, so numbers reach
    the engine as written; the `id` and `sent_at` it may carry are ignored by the engine (SPEC §7.1).
    """
    texts = []
    for entry in entries:
        if entry.record.value is None:  # decode never accepts a tombstone
            raise ValueError("a planned command has no value")
        texts.append(entry.record.value.decode("utf-8"))
    return "[" + ",".join(texts) + "]"


class Batcher:
    """Buffers polled records and says when a batch is due (SPEC §14.1 step 1).

    Due when `max_messages` records or `max_bytes` value bytes are buffered, or `max_wait_ms` after the
    oldest buffered record arrived. `take()` returns at most `max_messages` records and at most `max_bytes`,
    except that a record bigger than `max_bytes` forms a batch of its own. Not thread-safe: the loop owns it.
    """

    def __init__(
        self,
        *,
        max_messages: int,
        max_bytes: int,
        max_wait_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1 or max_bytes < 1 or max_wait_ms < 0:
            raise ValueError("max_messages and max_bytes must be positive, max_wait_ms not negative")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_ms / 1000
        self._clock = clock
        self._buffer: deque[tuple[Record, float]] = deque()  # (record, arrival time)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    @property
    def room(self) -> int:
        """How many records the next poll may ask for without overfilling the next batch (at least 1)."""
        return max(1, self.max_messages - len(self._buffer))

    def add(self, records: Iterable[Record]) -> None:
        now = self._clock()
        for record in records:
            self._buffer.append((record, now))
            self._bytes += record.size

    def wait_s(self) -> float | None:
        """Seconds until the oldest record makes a batch due; 0 when due; None when nothing is buffered."""
        if not self._buffer:
            return None
        if self._full():
            return 0.0
        return max(0.0, self._buffer[0][1] + self.max_wait_s - self._clock())

    def oldest_age(self) -> float:
        """Seconds since the oldest buffered record arrived (0 when empty): where a batch's clock starts."""
        return self._clock() - self._buffer[0][1] if self._buffer else 0.0

    def due(self) -> bool:
        return bool(self._buffer) and (self._full() or self._clock() >= self._buffer[0][1] + self.max_wait_s)

    def _full(self) -> bool:
        return len(self._buffer) >= self.max_messages or self._bytes >= self.max_bytes

    def take(self) -> list[Record]:
        """Remove and return the next batch (whether due or not); [] when nothing is buffered."""
        batch: list[Record] = []
        size = 0
        while self._buffer and len(batch) < self.max_messages:
            record = self._buffer[0][0]
            if batch and size + record.size > self.max_bytes:
                break  # the first record always goes, so one bigger than max_bytes is a batch of its own
            self._buffer.popleft()
            batch.append(record)
            size += record.size
            self._bytes -= record.size
        return batch

    def drop(self, partitions: Collection[TopicPartition]) -> int:
        """Forget buffered records of `partitions` (revoked or lost, or seeking back); returns how many."""
        if not partitions or not self._buffer:
            return 0
        gone = set(partitions)
        kept = deque(item for item in self._buffer if (item[0].topic, item[0].partition) not in gone)
        dropped = len(self._buffer) - len(kept)
        self._buffer = kept
        self._bytes = sum(record.size for record, _ in kept)
        return dropped

    def clear(self) -> int:
        dropped = len(self._buffer)
        self._buffer.clear()
        self._bytes = 0
        return dropped


def dead_letter_topic(source_topic: str, configured: str = "") -> str:
    """`<source topic>.dlq` unless one dead-letter topic is configured for all (SPEC §13.3)."""
    return configured or f"{source_topic}.dlq"


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    mark = _ELLIPSIS.encode("utf-8")
    # errors="ignore" drops the partial character the byte cut may leave at the end
    head = data[: limit - len(mark)].decode("utf-8", errors="ignore").encode("utf-8")
    return head + mark


def _rfc3339_utc(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("first_failed_at must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


DEAD_LETTER_HEADERS: Final = frozenset(
    {
        "accumulator.error.class",
        "accumulator.error.reason",
        "accumulator.error.sqlstate",
        "accumulator.source.topic",
        "accumulator.source.partition",
        "accumulator.source.offset",
        "accumulator.consumer.group",
        "accumulator.first_failed_at",
    }
)


def dead_letter_headers(
    record: Record,
    error_class: str,
    reason: str,
    group: str,
    first_failed_at: datetime,
    sqlstate: str | None = None,
) -> list[Header]:
    """The record's own headers, then ours (SPEC §13.3); all UTF-8 text.

    Original headers carrying one of our names (a dead letter replayed into a command topic) are replaced,
    so each of ours appears once and describes this failure.
    """
    headers: list[Header] = [h for h in record.headers if h[0] not in DEAD_LETTER_HEADERS]
    headers += [
        ("accumulator.error.class", error_class.encode("utf-8")),
        ("accumulator.error.reason", _truncate_utf8(reason, REASON_MAX_BYTES)),
    ]
    if sqlstate is not None:
        headers.append(("accumulator.error.sqlstate", sqlstate.encode("utf-8")))
    headers += [
        ("accumulator.source.topic", record.topic.encode("utf-8")),
        ("accumulator.source.partition", str(record.partition).encode("ascii")),
        ("accumulator.source.offset", str(record.offset).encode("ascii")),
        ("accumulator.consumer.group", group.encode("utf-8")),
        ("accumulator.first_failed_at", _rfc3339_utc(first_failed_at).encode("ascii")),
    ]
    return headers
