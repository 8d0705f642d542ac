"""consumer.localkafka: a real KRaft broker from the Maven jars; produce, consume, crash, restart, stop."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from consumer.localkafka import (
    JAVA_PACKAGE,
    MAVEN_PACKAGE,
    LocalKafka,
    PrerequisiteMissing,
    fetch_jars,
    jars_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

CACHE_DIR = Path(__file__).resolve().parents[2] / ".tools" / "kafka"
PARTITIONS = 3

# (partition, offset) -> value
Seen = dict[tuple[int, int], bytes]


def produce(bootstrap: str, topic: str, count: int) -> None:
    """``count`` messages, values "0".."count-1", acks=all and idempotent; fail on any delivery error."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    delivered: list[int] = []
    errors: list[str] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(1)

    for i in range(count):
        producer.produce(topic, key=f"k{i % 17}".encode(), value=str(i).encode(), on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert errors == []
    assert len(delivered) == count


def new_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )


def consume(consumer: Consumer, want: int, *, within: float = 30.0) -> Seen:
    """Exactly ``want`` messages (consume() never returns more than asked)."""
    seen: Seen = {}
    deadline = time.monotonic() + within
    while len(seen) < want:
        assert time.monotonic() < deadline, f"consumed {len(seen)} of {want} within {within}s"
        for msg in consumer.consume(num_messages=want - len(seen), timeout=0.5):
            assert msg.error() is None, msg.error()
            partition, offset, value = msg.partition(), msg.offset(), msg.value()
            assert partition is not None
            assert offset is not None
            assert isinstance(value, bytes)
            seen[(partition, offset)] = value
    return seen


def high_watermarks(bootstrap: str, topic: str) -> list[int]:
    consumer = new_consumer(bootstrap, f"wm_{uuid.uuid4().hex}")
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.fixture
def broker() -> Iterator[LocalKafka]:
    """A broker of this test's own (it will be crashed or stopped), in a temp dir removed afterwards."""
    with LocalKafka(cache_dir=CACHE_DIR, die_with_parent=True) as kafka:
        yield kafka


def test_produce_then_consume_all_in_a_group(kafka_bootstrap: str, kafka_topic: str) -> None:
    produce(kafka_bootstrap, kafka_topic, 1000)
    consumer = new_consumer(kafka_bootstrap, f"g_{uuid.uuid4().hex}")
    try:
        consumer.subscribe([kafka_topic])
        seen = consume(consumer, 1000)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(int(v) for v in seen.values()) == list(range(1000))
    assert {p for p, _ in seen} == set(range(PARTITIONS)), "keys spread over the 3 partitions"
    assert sum(high_watermarks(kafka_bootstrap, kafka_topic)) == 1000


def test_kill_then_start_again_keeps_messages_and_group_offsets(broker: LocalKafka) -> None:
    topic, group = "crash", f"g_{uuid.uuid4().hex}"
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    broker.create_topics([topic], PARTITIONS)
    produce(broker.bootstrap, topic, 1000)

    consumer = new_consumer(broker.bootstrap, group)
    consumer.subscribe([topic])
    first = consume(consumer, 400)
    # Commit exactly what was read: per partition, the offset after the last message seen.
    ends: dict[int, int] = {}
    for partition, offset in first:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in ends.items()], asynchronous=False)
    consumer.close()  # leaves the group, so the next member need not wait for this one's session to expire
    watermarks = high_watermarks(broker.bootstrap, topic)
    assert sum(watermarks) == 1000

    pid, bootstrap = broker.pid, broker.bootstrap
    assert pid is not None
    broker.kill()
    assert gone(pid)
    assert broker.pid is None
    broker.start_again()
    assert broker.bootstrap == bootstrap
    assert broker.pid not in (None, pid)

    assert high_watermarks(broker.bootstrap, topic) == watermarks
    broker.create_topics([topic], PARTITIONS, exist_ok=True)  # the demo re-creates its topics at each start
    consumer = new_consumer(broker.bootstrap, group)
    try:
        consumer.subscribe([topic])
        rest = consume(consumer, 600)
        extra = consumer.consume(num_messages=10, timeout=1.0)
    finally:
        consumer.close()
    assert extra == [], "the group resumed at its committed offsets: nothing read twice"
    assert first.keys().isdisjoint(rest.keys())
    assert sorted(int(v) for v in [*first.values(), *rest.values()]) == list(range(1000))


def test_stop_leaves_no_process(broker: LocalKafka) -> None:
    pid, port, controller_port = broker.pid, broker.port, broker.controller_port
    assert pid is not None
    assert broker.pid_file.read_text().strip() == str(pid)
    broker.stop()
    assert gone(pid), "stop() returns once the broker's PID is gone"
    assert broker.pid is None
    assert not broker.pid_file.exists()
    assert port_closed(port)
    assert port_closed(controller_port)
    broker.stop()  # stopping a stopped broker is a no-op
    broker.start_again()
    assert broker.pid not in (None, pid)
    base = broker.base_dir
    broker.close()
    assert not base.exists(), "a temporary base dir is removed on close"


def test_missing_java_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(PrerequisiteMissing, match=JAVA_PACKAGE) as missing:
        LocalKafka(cache_dir=CACHE_DIR)
    assert missing.value.package == JAVA_PACKAGE


def test_cached_jars_need_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    libs = fetch_jars(CACHE_DIR)
    assert jars_ready(CACHE_DIR)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn from here on
    assert fetch_jars(CACHE_DIR) == libs, "the stamp matches the pom: no second fetch"
    with pytest.raises(PrerequisiteMissing, match=MAVEN_PACKAGE) as missing:
        fetch_jars(tmp_path / "empty-cache")
    assert missing.value.package == MAVEN_PACKAGE
