"""`accumulator send` with a real broker: what lands in the topic, byte for byte, and the exit codes (§17)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from helpers import wait_until

from consumer.cli import EXIT_DATA, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from consumer.commands import decode
from consumer.localkafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

Received = tuple[bytes, bytes]  # key, value: send always gives both


def _post(recorder: str, n: int) -> bytes:
    # Numbers in several spellings: they must arrive exactly as written.
    return (
        f'{{"op": "post", "register": "inventory", "recorder": "{recorder}", "movements": '
        f'[{{"period": "2026-04-18", "warehouse": 1, "product": {n}, "quantity": 100.500, '
        f'"amount": 1E+2, "tiny": 0.0000001}}]}}'
    ).encode()


def _unpost(recorder: str, extra: str = "") -> bytes:
    return f'{{"op":"unpost","register":"inventory","recorder":"{recorder}"{extra}}}'.encode()


def _write(tmp_path: Path, lines: list[bytes], name: str = "cmds.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _send(bootstrap: str, *argv: str) -> int:
    return main(["send", "--kafka-bootstrap-servers", bootstrap, "--connect-timeout-ms", "10000", *argv])


def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    finally:
        consumer.close()


def _message_count(bootstrap: str, topic: str) -> int:
    """Messages in the topic by high watermarks: exact once the producer has flushed (send exits after)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        total = 0
        for tp in _partitions(bootstrap, topic):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str) -> dict[int, list[Received]]:
    """Every message of the topic as (key, value), per partition in offset order."""
    expected = _message_count(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"send-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    got: dict[int, list[tuple[int, bytes, bytes]]] = {}
    try:
        consumer.subscribe([topic])

        def all_read() -> bool:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                assert error is None, error
                key, value = message.key(), message.value()
                assert key is not None
                assert value is not None
                got.setdefault(message.partition() or 0, []).append((message.offset() or 0, key, value))
            return sum(len(v) for v in got.values()) >= expected

        wait_until(all_read, within=30, what=f"{expected} message(s) read back from {topic}", interval=0)
    finally:
        consumer.close()
    return {p: [(k, v) for _, k, v in sorted(rows)] for p, rows in got.items()}


def _flat(by_partition: dict[int, list[Received]]) -> list[Received]:
    return [kv for rows in by_partition.values() for kv in rows]


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def small_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A one-partition topic that refuses record batches above 400 bytes."""
    name = f"t_small_{uuid.uuid4().hex}"
    create_topics(kafka_bootstrap, [name], partitions=1, config={"max.message.bytes": "400"})
    try:
        yield name
    finally:
        # An admin client of our own, alive until the broker answers.
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics([name], operation_timeout=10, request_timeout=10).values():
            future.result(timeout=10)


def test_values_arrive_byte_for_byte_keyed_by_recorder(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_post(f"receipt:{i % 7}", i) for i in range(60)] + [_unpost("receipt:3", ',"id":"given-1"')]
    path = _write(tmp_path, [*lines[:30], b"", b"   ", *lines[30:]])
    assert _send(kafka_bootstrap, "--topic", kafka_topic, "--file", path) == EXIT_OK
    assert capsys.readouterr().out == f"sent 61 command(s) to {kafka_topic}\n"

    by_partition = _read_all(kafka_bootstrap, kafka_topic)
    received = _flat(by_partition)
    assert sorted(v for _, v in received if v is not None) == sorted(lines)
    for key, value in received:
        assert value is not None
        assert key == decode(value).recorder.encode()
    # One recorder, one partition, in file order: the worker applies a document's commands in order.
    for rows in by_partition.values():
        for recorder in {k for k, _ in rows}:
            in_file = [v for v in lines if decode(v).recorder.encode() == recorder]
            assert [v for k, v in rows if k == recorder] == in_file


def test_generate_ids_adds_ids_and_keeps_the_rest(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_post("receipt:1", 1), _unpost("receipt:2", ',"id":"mine"'), _unpost("receipt:3", ',"id":null')]
    path = _write(tmp_path, lines)
    argv = ["--topic", kafka_topic, "--file", path, "--generate-ids", "--format", "json"]
    assert _send(kafka_bootstrap, *argv) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"sent": 3, "skipped": 0, "topic": kafka_topic}

    values = {k: v for k, v in _flat(_read_all(kafka_bootstrap, kafka_topic))}
    first = values[b"receipt:1"]
    assert first is not None
    new_id = decode(first).id
    assert new_id is not None
    assert str(uuid.UUID(new_id)) == new_id
    assert first == b'{"id":"' + new_id.encode() + b'",' + lines[0][1:]  # the rest untouched
    assert values[b"receipt:2"] == lines[1]
    third = values[b"receipt:3"]
    assert third is not None
    third_id = decode(third).id
    assert third_id is not None
    assert third_id != new_id
    assert third == lines[2].replace(b"null", json.dumps(third_id).encode())


def test_invalid_input_produces_nothing_and_exits_5(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, [_unpost("a"), b"{not json", _unpost("b"), b'{"op":"post"}'])
    assert _send(kafka_bootstrap, "--topic", kafka_topic, "--file", path) == EXIT_DATA
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("line 2: invalid_json: ")
    assert err[1].startswith("line 4: schema_violation: ")
    assert "nothing sent" in err[2]
    assert _message_count(kafka_bootstrap, kafka_topic) == 0


def test_skip_invalid_sends_the_valid_ones(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, [_unpost("a"), b"{not json", _unpost("b"), b'{"op":"post"}'])
    assert _send(kafka_bootstrap, "--topic", kafka_topic, "--file", path, "--skip-invalid") == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == f"sent 2 command(s) to {kafka_topic}\nskipped 2 invalid line(s)\n"
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["line 2", "line 4"]
    assert sorted(_flat(_read_all(kafka_bootstrap, kafka_topic))) == [
        (b"a", _unpost("a")),
        (b"b", _unpost("b")),
    ]


def test_default_topic_and_stdin_through_the_console_entry(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    env["ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    env["ACCUMULATOR_KAFKA_TOPICS"] = f"{kafka_topic},other.topic"
    lines = [_post("r:1", 1), _unpost("r:2")]
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "send", "--format", "json"],
        input=b"\n".join(lines) + b"\n",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout) == {"sent": 2, "skipped": 0, "topic": kafka_topic}
    assert sorted(_flat(_read_all(kafka_bootstrap, kafka_topic))) == [(b"r:1", lines[0]), (b"r:2", lines[1])]


def test_a_full_local_queue_waits_instead_of_failing(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_unpost(f"doc:{i}") for i in range(500)]
    path = _write(tmp_path, lines)
    extra = json.dumps({"queue.buffering.max.messages": 5})
    argv = ["--topic", kafka_topic, "--file", path, "--producer-extra", extra]
    assert _send(kafka_bootstrap, *argv) == EXIT_OK
    assert capsys.readouterr().out == f"sent 500 command(s) to {kafka_topic}\n"
    assert sorted(v for _, v in _flat(_read_all(kafka_bootstrap, kafka_topic))) == sorted(lines)


def test_closed_port_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, [_unpost("a")])
    argv = ["send", "--kafka-bootstrap-servers", _closed_port(), "--connect-timeout-ms", "1000"]
    assert main([*argv, "--topic", "t", "--file", path]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "accumulator: error: send: Kafka unreachable at 127.0.0.1:" in err
    assert "within 1000 ms" in err


def test_missing_topic_exits_2(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, [_unpost("a")])
    topic = f"t_missing_{uuid.uuid4().hex}"
    assert _send(kafka_bootstrap, "--topic", topic, "--file", path) == EXIT_USAGE
    assert f"topic {topic!r}" in capsys.readouterr().err


def test_a_refused_delivery_exits_4_and_stops(
    kafka_bootstrap: str, small_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # random hex: lz4 must not shrink it under the topic's limit
    big = _post("big", 1).replace(b"}]}", b', "note": "' + os.urandom(500).hex().encode() + b'"}]}')
    path = _write(tmp_path, [big, *(_unpost(f"after:{i}") for i in range(3))])
    assert _send(kafka_bootstrap, "--topic", small_topic, "--file", path) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"not delivered to {small_topic}" in err
    assert "too large" in err
    assert b"big" not in b"".join(v or b"" for _, v in _flat(_read_all(kafka_bootstrap, small_topic)))


def test_a_locally_refused_message_names_its_line(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = _post("big", 1).replace(b"}]}", b', "note": "' + b"x" * 2000 + b'"}]}')
    path = _write(tmp_path, [_unpost("a"), big, _unpost("b")])
    extra = json.dumps({"message.max.bytes": 1500})
    argv = ["--topic", kafka_topic, "--file", path, "--producer-extra", extra]
    assert _send(kafka_bootstrap, *argv) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "(line 2: " in err
    assert "1 delivered, 1 not attempted" in err
    assert _flat(_read_all(kafka_bootstrap, kafka_topic)) == [(b"a", _unpost("a"))]
