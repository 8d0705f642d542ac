"""Kafka client construction (SPEC §14.3, §13.3), message conversion and librdkafka log routing.

The worker's guarantees depend on a few consumer settings (offsets live in PostgreSQL, only committed
transactions are read, cooperative rebalancing), so pass-through settings may not override them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.batching import Record, dead_letter_topic

__all__ = [
    "FORCED_CONSUMER_SETTINGS",
    "FORCED_PRODUCER_SETTINGS",
    "KafkaConfigError",
    "admin_config",
    "client_logger",
    "consumer_config",
    "ensure_dead_letter_topics",
    "produce_with_room",
    "producer_config",
    "to_record",
]

log = logging.getLogger("accumulator.kafka")

# Values librdkafka must run with, whatever `ACCUMULATOR_KAFKA_EXTRA` / `_CONSUMER_EXTRA` say.
FORCED_CONSUMER_SETTINGS: Final[Mapping[str, str]] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "isolation.level": "read_committed",
}
# Dead letters and `accumulator send` must not be duplicated by producer retries nor lost on a leader change.
FORCED_PRODUCER_SETTINGS: Final[Mapping[str, str]] = {
    "enable.idempotence": "true",
    "acks": "all",
}
# Settings the CLI derives from its own flags; an extra giving them is refused so there is one source.
_OWNED: Final = frozenset({"bootstrap.servers", "group.id", "client.id", "auto.offset.reset"})


class KafkaConfigError(ValueError):
    """A pass-through setting contradicts what the worker needs; the CLI exits 2."""


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalised(value: object) -> str:
    text = _text(value).strip().lower()
    return {"1": "true", "0": "false", "all": "all", "-1": "all"}.get(text, text)


def _merge(
    base: Mapping[str, object],
    extras: list[tuple[str, Mapping[str, object]]],
    forced: Mapping[str, str],
) -> dict[str, str]:
    config = {k: _text(v) for k, v in base.items()}
    for source, extra in extras:
        for key, value in extra.items():
            if key in _OWNED:
                raise KafkaConfigError(f"{source} may not set {key!r}: use its own setting")
            if key in forced and _normalised(value) != _normalised(forced[key]):
                raise KafkaConfigError(
                    f"{source} may not set {key!r} to {_text(value)!r}: the worker needs {forced[key]!r}"
                )
            config[key] = _text(value)
    config.update(forced)
    return config


def consumer_config(
    *,
    bootstrap_servers: str,
    group_id: str,
    client_id: str,
    auto_offset_reset: str,
    kafka_extra: Mapping[str, Any],
    consumer_extra: Mapping[str, Any],
) -> dict[str, str]:
    """librdkafka consumer settings: ours, then the extras (refused where they break a guarantee)."""
    base = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "auto.offset.reset": auto_offset_reset,
        # A batch may wait on PostgreSQL for a while between polls; the default (5 min) leaves the group
        # long before a backoff sequence could, and the loop polls between batches anyway.
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": 45_000,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": "false",
    }
    return _merge(
        base,
        [("ACCUMULATOR_KAFKA_EXTRA", kafka_extra), ("ACCUMULATOR_CONSUMER_EXTRA", consumer_extra)],
        FORCED_CONSUMER_SETTINGS,
    )


def producer_config(
    *,
    bootstrap_servers: str,
    client_id: str,
    kafka_extra: Mapping[str, Any],
    producer_extra: Mapping[str, Any],
) -> dict[str, str]:
    """librdkafka producer settings (dead letters, `accumulator send`): idempotent, acks=all."""
    base = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    return _merge(
        base,
        [("ACCUMULATOR_KAFKA_EXTRA", kafka_extra), ("ACCUMULATOR_PRODUCER_EXTRA", producer_extra)],
        FORCED_PRODUCER_SETTINGS,
    )


def to_record(message: Message) -> Record:
    """Plain data of one consumed message (the pure core never sees confluent_kafka objects)."""
    topic = message.topic()
    partition = message.partition()
    offset = message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message")
    # A consumed message's headers are a list of (name, bytes) pairs (the stub also allows a dict).
    pairs = cast("list[tuple[str, bytes | str | None]]", message.headers() or [])
    headers = tuple(
        (name, value.encode("utf-8") if isinstance(value, str) else value) for name, value in pairs
    )
    timestamp_type, timestamp = message.timestamp()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=message.value(),
        headers=headers,
        timestamp=timestamp if timestamp_type != 0 else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
    )


def produce_with_room(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    *,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> None:
    """`producer.produce`, waiting while librdkafka's local queue is full (BufferError): delivery reports are
    served meanwhile, which frees room; `on_wait` runs after each wait (e.g. to refresh a progress line).
    Other errors (a message refused locally) propagate."""
    optional: dict[str, Any] = {}  # only what is given: no per-message callback keeps the client's default
    if headers is not None:
        optional["headers"] = headers
    if on_delivery is not None:
        optional["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value=value, key=key, **optional)
            return
        except BufferError:
            producer.poll(0.1)
            if on_wait is not None:
                on_wait()


def client_logger(name: str) -> logging.Logger:
    """The logger librdkafka's log lines go to (pass as the client's `logger=`): one named per client."""
    return logging.getLogger(f"accumulator.kafka.{name}")


def ensure_dead_letter_topics(
    admin_config: Mapping[str, str], sources: Sequence[str], configured: str = "", *, timeout: float = 15.0
) -> list[str]:
    """Create missing dead-letter topics (as Kafka Connect does for its DLQ); returns the ones created.

    A dead-letter topic gets its source's partition count (one configured topic for all: the largest) and the
    broker's default replication. Without the right to create topics this only logs: producing a dead letter
    to a missing topic then fails as an infrastructure error, which names the topic.
    """
    admin = AdminClient(dict(admin_config))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        log.warning("cannot list topics to check dead-letter topics: %s", exc)
        return []
    wanted: dict[str, int] = {}
    for source in sources:
        found = metadata.topics.get(source)
        partitions = len(found.partitions) if found is not None and found.error is None else 1
        name = dead_letter_topic(source, configured)
        wanted[name] = max(wanted.get(name, 1), partitions)
    missing = {
        name: n
        for name, n in wanted.items()
        if name not in metadata.topics or metadata.topics[name].error is not None
    }
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=-1) for name, n in missing.items()],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
            log.info("dead-letter topic created: %s", name, extra={"action": "dlq_topic_created"})
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            log.warning("cannot create dead-letter topic %s: %s", name, exc)
    return created


def admin_config(*, bootstrap_servers: str, client_id: str, kafka_extra: Mapping[str, Any]) -> dict[str, str]:
    """Settings of the AdminClient (security settings come from ACCUMULATOR_KAFKA_EXTRA)."""
    config = {"bootstrap.servers": bootstrap_servers, "client.id": client_id}
    for key, value in kafka_extra.items():
        if key not in _OWNED:
            config[key] = _text(value)
    return config
