"""Kafka for the worker scenarios: the broker, topics, producers (bulk and paced) and a sink-less consume.

The broker is ``--kafka`` / ``ACCUMULATOR_BENCH_KAFKA`` when given (used as it is; the run's topics are
deleted at the end), else a private single-node KRaft broker from :mod:`consumer.localkafka` (jars cached in
``<checkout>/.tools/kafka``), stopped at the end. Producers use the project's own settings
(:func:`consumer.kafka.producer_config`: idempotent, acks=all), consumers the worker's
(:func:`consumer.kafka.consumer_config`), so the baselines talk to Kafka the way the worker does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.kafka import consumer_config, produce_with_room, producer_config
from consumer.localkafka import LocalKafka, create_topics

__all__ = [
    "KAFKA_ENV",
    "Broker",
    "Consumed",
    "Paced",
    "Produced",
    "Sent",
    "assign_from_start",
    "broker",
    "due_count",
    "high_watermarks",
    "plain_consume",
    "produce_all",
    "produce_paced",
    "reader",
    "topics",
]

KAFKA_ENV: Final = "ACCUMULATOR_BENCH_KAFKA"
CACHE_DIR: Final = Path(__file__).resolve().parents[1] / ".tools" / "kafka"
_TIMEOUT: Final = 30.0

Log = Callable[[str], None]
KeyValue = tuple[bytes, bytes]
Delivery = Callable[[KafkaError | None, Message], None]


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int | None  # the local broker's JVM (for its CPU time); None for a given one
    local: bool


@contextlib.contextmanager
def broker(given: str | None, *, keep: bool, log: Log) -> Iterator[Broker]:
    """Given bootstrap (``--kafka``, else ``ACCUMULATOR_BENCH_KAFKA``) or a local broker, stopped at exit."""
    bootstrap = given or os.environ.get(KAFKA_ENV) or None
    if bootstrap:
        yield Broker(bootstrap, None, local=False)
        return
    log(f"starting a local Kafka broker (jars in {CACHE_DIR})")
    # die_with_parent: a killed bench leaves no JVM; this thread (the main one) lives as long as the broker
    kafka = LocalKafka(cache_dir=CACHE_DIR, die_with_parent=True)
    kafka.start()
    try:
        yield Broker(kafka.bootstrap, kafka.pid, local=True)
    finally:
        if keep:
            print(f"bench: Kafka broker kept at {kafka.base_dir} ({kafka.bootstrap}, pid {kafka.pid})")
        else:
            kafka.close()


@contextlib.contextmanager
def topics(bootstrap: str, names: Sequence[str], *, partitions: int, keep: bool) -> Iterator[None]:
    """Create the topics (each partition led before returning); delete them at exit unless ``keep``."""
    create_topics(bootstrap, names, partitions=partitions)
    try:
        yield
    finally:
        if not keep:
            _delete_topics(bootstrap, names)


def _delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    # Not consumer.localkafka.delete_topics: its admin client is a temporary, destroyed before the answer
    # comes ("Handle is terminating"), so the topics stay. Cleanup must not hide the scenario's own error.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(names), operation_timeout=10, request_timeout=10).values():
        with contextlib.suppress(Exception):
            future.result(timeout=15)


def _producer(bootstrap: str, client_id: str) -> Producer:
    return Producer(
        producer_config(bootstrap_servers=bootstrap, client_id=client_id, kafka_extra={}, producer_extra={})
    )


@dataclass
class Produced:
    messages: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last delivered offset + 1

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is not None and offset is not None:
            self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)


def produce_all(bootstrap: str, topic: str, messages: Iterable[KeyValue]) -> Produced:
    """Produce everything as fast as the client takes it, flush, and raise if any delivery failed."""
    out = Produced()
    producer = _producer(bootstrap, "bench-producer")
    started = time.perf_counter()
    for key, value in messages:
        produce_with_room(producer, topic, value, key, on_delivery=out.delivered)
        out.messages += 1
        if out.messages % 1000 == 0:
            producer.poll(0)
    left = producer.flush(_TIMEOUT * 4)
    out.seconds = time.perf_counter() - started
    if left or out.errors:
        raise RuntimeError(f"{topic}: {left} message(s) undelivered, errors: {out.errors[:3]}")
    return out


# --- paced production -------------------------------------------------------------------------------------


def due_count(elapsed: float, rate: float, total: int) -> int:
    """PURE: how many of ``total`` messages are due ``elapsed`` seconds into a steady ``rate``/s schedule
    (message i is due at i / rate, so the first is due at once)."""
    if elapsed < 0:
        return 0
    return min(total, int(elapsed * rate) + 1)


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    at: float  # perf_counter() at the produce() call


@dataclass
class Paced:
    rate: float
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0  # first produce() to last produce()
    max_lag: float = 0.0  # the most a produce() call ran behind its scheduled time, seconds

    @property
    def achieved_rate(self) -> float:
        n = len(self.sent) + len(self.errors)
        return (n - 1) / self.seconds if n > 1 and self.seconds > 0 else 0.0

    def delivered(self, at: float, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is not None and offset is not None:
            self.sent.append(Sent(partition, offset, at))


def produce_paced(bootstrap: str, topic: str, messages: Sequence[KeyValue], rate: float) -> Paced:
    """Produce ``messages`` at a steady ``rate``/s (each due at i / rate; late ones go out at once and the
    lag is recorded), recording each message's produce time against the offset its delivery report gives."""
    out = Paced(rate)
    producer = _producer(bootstrap, "bench-paced-producer")
    # A new idempotent producer first fetches metadata and a producer id (hundreds of ms): that is the
    # producer starting, not the worker's latency. One message to the dead-letter topic warms it up.
    producer.produce(f"{topic}.dlq", value=b"warm-up", key=b"bench")
    if producer.flush(_TIMEOUT):
        raise RuntimeError(f"{topic}.dlq: the paced producer's warm-up message was not delivered")
    total = len(messages)
    started = time.perf_counter()
    sent = 0
    last = started
    while sent < total:
        now = time.perf_counter()
        due = due_count(now - started, rate, total)
        while sent < due:
            last = time.perf_counter()
            out.max_lag = max(out.max_lag, last - started - sent / rate)
            key, value = messages[sent]
            produce_with_room(producer, topic, value, key, on_delivery=functools.partial(out.delivered, last))
            sent += 1
        producer.poll(0)  # delivery reports, so their callbacks do not pile up
        wait = started + sent / rate - time.perf_counter()
        if wait > 0:
            time.sleep(min(wait, 0.002))  # the schedule, not a test wait: the next message is due then
    out.seconds = last - started
    left = producer.flush(_TIMEOUT)
    if left:
        raise RuntimeError(f"{topic}: {left} paced message(s) undelivered after {_TIMEOUT}s")
    return out


# --- consuming without a sink -----------------------------------------------------------------------------


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> high watermark (the next offset to be written) of every partition of ``topic``."""
    consumer = reader(bootstrap, "bench-watermarks")
    try:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT)[1]
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def reader(bootstrap: str, name: str) -> Consumer:
    """A consumer with the worker's settings and a throwaway group (it only ever assigns, never joins)."""
    return Consumer(
        consumer_config(
            bootstrap_servers=bootstrap,
            group_id=f"{name}-{os.getpid()}-{time.monotonic_ns()}",
            client_id=name,
            auto_offset_reset="earliest",
            kafka_extra={},
            consumer_extra={},
        )
    )


def assign_from_start(consumer: Consumer, topic: str, partitions: Iterable[int]) -> None:
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])


@dataclass(frozen=True)
class Consumed:
    messages: int
    value_bytes: int
    seconds: float  # assignment to the last message
    first: float  # assignment to the first message

    @property
    def rate(self) -> float:
        """Messages/s once they flow (the first message's wait left out)."""
        flowing = self.seconds - self.first
        return self.messages / flowing if flowing > 0 else float("inf")


def plain_consume(
    bootstrap: str, topic: str, until: Mapping[int, int], *, timeout: float = 120.0
) -> Consumed:
    """Read every partition from the start up to ``until`` (its high watermark) and drop the messages: what
    Kafka and the client cost with no sink. Timed from the assignment, as the worker's figure without startup
    is; a fresh client's first message takes 0.5-1 s whatever the topic holds, so that part is kept apart."""
    consumer = reader(bootstrap, "bench-plain-consume")
    started = time.perf_counter()
    assign_from_start(consumer, topic, until)
    position = dict.fromkeys(until, 0)
    messages = value_bytes = 0
    first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while (left := sum(until.values()) - sum(position.values())) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: plain consume at {position} of {dict(until)} after {timeout}s")
            # consume() returns when it has that many or at the timeout: never ask for more than is left
            for msg in consumer.consume(min(1000, left), 0.5):
                if msg.error() is not None:
                    raise RuntimeError(f"{topic}: {msg.error()}")
                if first is None:
                    first = time.perf_counter() - started
                messages += 1
                value_bytes += len(msg.value() or b"")
                position[msg.partition() or 0] = (msg.offset() or 0) + 1
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return Consumed(messages, value_bytes, seconds, first or 0.0)
