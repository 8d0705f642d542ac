"""The worker end to end: real Kafka and PostgreSQL, the real `accumulator consume` process."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from helpers import dsn_as, wait_until
from worker_harness import (
    Message,
    Script,
    Workers,
    assert_matches,
    create_script_register,
    dead_letters,
    produce,
    read_topic,
    stored_offsets,
    wait_caught_up,
)

from consumer.localkafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


@pytest.fixture
def workers(db_dsn: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path) -> Iterator[Workers]:
    """Workers of one group on this test's topic, as a member of accum_writer; all stopped afterwards."""
    create_script_register(db_dsn, "stock")
    create_topics(kafka_bootstrap, [f"{kafka_topic}.dlq"], partitions=3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    pool = Workers(dsn_as(db_dsn, "t_writer"), kafka_bootstrap, kafka_topic, group, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def test_stream_applies_exactly_once_and_dead_letters_the_bad(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 1500, seed=11)
    produce(kafka_bootstrap, kafka_topic, script.messages[:700])
    worker = workers.start()
    produce(kafka_bootstrap, kafka_topic, script.messages[700:])
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    assert_matches(script, db_dsn)
    expected = script.expected_dead_letters()
    letters = read_topic(kafka_bootstrap, f"{kafka_topic}.dlq", sum(expected.values()))
    assert dead_letters(letters) == expected
    assert worker.stop() == 0, workers.logs()


def test_each_bad_class_lands_in_the_dlq_with_headers_while_the_batch_applies(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    good = {
        "op": "post",
        "register": "stock",
        "recorder": "r1",
        "id": "a-1",
        "movements": [
            {"period": "2026-03-01", "warehouse": 1, "product": "apple", "quantity": "2.500", "amount": 10}
        ],
    }
    cases: list[tuple[bytes, bytes | None, str, str | None]] = [
        (b"r1", b'{"op": "post",', "invalid_json", None),
        (
            b"r1",
            b'{"op": "post", "register": "stock", "recorder": "r1", "movements": [], "x": 1}',
            "schema_violation",
            None,
        ),
        (b"r1", b'{"op": "unpost", "register": "nowhere", "recorder": "r1"}', "unknown_register", "42704"),
        (
            b"r1",
            json.dumps(
                {**good, "id": None, "movements": [{**good["movements"][0], "quantity": "1.0001"}]}
            ).encode(),
            "rejected",
            "22023",
        ),
        (b"r1", json.dumps({**good, "recorder": "r2"}).encode(), "id_reused", None),
        (b"r1", None, "invalid_json", None),  # a tombstone
    ]
    messages = [Message(b"r1", json.dumps(good).encode())] + [Message(k, v, c) for k, v, c, _ in cases]
    messages.append(Message(b"r1", json.dumps({**good, "id": "a-2", "recorder": "r1"}).encode()))
    produce(kafka_bootstrap, kafka_topic, messages)
    workers.start()
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        (count, total) = (
            conn.execute("SELECT count(*), sum(quantity) FROM accum.stock_movements").fetchone() or ()
        )
    assert (count, total) == (2, 5)  # both good commands applied, in the same batch as the bad ones
    letters = read_topic(kafka_bootstrap, f"{kafka_topic}.dlq", len(cases))
    assert len(letters) == len(cases)
    (partition,) = {m.partition() for m in letters}  # one key, so one source partition
    offsets = stored_offsets(db_dsn, workers.group, kafka_topic)
    by_class = {}
    for m in letters:
        headers = dict(m.headers())
        assert m.key() == b"r1"
        by_class[headers["accumulator.error.class"].decode()] = (m.value(), headers)
    assert sorted(by_class) == sorted({c for _, _, c, _ in cases})
    for _key, value, error_class, sqlstate in cases:
        got_value, headers = by_class[error_class]
        if error_class != "invalid_json":
            assert got_value == value
        assert headers["accumulator.source.topic"] == kafka_topic.encode()
        assert int(headers["accumulator.source.partition"]) == partition
        assert 0 <= int(headers["accumulator.source.offset"]) < offsets[partition]
        assert headers["accumulator.consumer.group"] == workers.group.encode()
        assert headers["accumulator.error.reason"]
        assert headers["accumulator.first_failed_at"].endswith(b"Z")
        assert headers.get("accumulator.error.sqlstate") == (sqlstate.encode() if sqlstate else None)
    assert by_class["rejected"][1]["accumulator.error.reason"].startswith(b"stock: ")


def test_ordering_per_recorder_across_post_repost_unpost(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    def mv(q: str) -> dict[str, object]:
        return {"period": "2026-05-05", "warehouse": 2, "product": "pear", "quantity": q, "amount": "1"}

    steps: list[dict[str, object]] = []
    for d in range(30):
        rec = f"doc-{d}"
        steps += [
            {"op": "post", "register": "stock", "recorder": rec, "movements": [mv("1")]},
            {"op": "repost", "register": "stock", "recorder": rec, "movements": [mv("10"), mv("20")]},
            {"op": "unpost", "register": "stock", "recorder": rec},
            {"op": "post", "register": "stock", "recorder": rec, "movements": [mv(str(d))]},
        ]
    # Interleave recorders so one batch holds several steps of the same recorder.
    messages = [Message(str(s["recorder"]).encode(), json.dumps(s).encode()) for s in steps]
    produce(kafka_bootstrap, kafka_topic, messages[:60])
    workers.start(env={"ACCUMULATOR_BATCH_MAX_MESSAGES": "7"})
    produce(kafka_bootstrap, kafka_topic, messages[60:])
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT recorder, quantity FROM accum.stock_movements ORDER BY recorder"
        ).fetchall()
    assert sorted(rows) == sorted((f"doc-{d}", d) for d in range(30))


def test_duplicates_by_id_are_applied_once(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    command = {
        "op": "post",
        "register": "stock",
        "recorder": "dup",
        "id": "once",
        "movements": [
            {"period": "2026-01-02", "warehouse": 1, "product": "plum", "quantity": 3, "amount": 0}
        ],
    }
    value = json.dumps(command).encode()
    produce(kafka_bootstrap, kafka_topic, [Message(b"dup", value)] * 3)
    worker = workers.start()
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    produce(kafka_bootstrap, kafka_topic, [Message(b"dup", value)] * 2)  # later batches replay it too
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM accum.stock_movements").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM accum.consumer_commands").fetchone() == (1,)
    assert worker.stop() == 0


def test_sigterm_exits_cleanly_with_offsets_stored_and_hinted(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 400, seed=5, bad_every=0)
    produce(kafka_bootstrap, kafka_topic, script.messages)
    worker = workers.start()
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    assert "worker stopped" in worker.log()
    assert_matches(script, db_dsn)
    stored = stored_offsets(db_dsn, workers.group, kafka_topic)
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": workers.group})
    try:
        committed = probe.committed([TopicPartition(kafka_topic, p) for p in range(3)], timeout=10)
    finally:
        probe.close()
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == {
        p: o for p, o in stored.items() if o > 0
    }


def test_restart_resumes_from_stored_offsets(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 600, seed=8)
    produce(kafka_bootstrap, kafka_topic, script.messages[:300])
    first = workers.start()
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    assert first.stop() == 0
    produce(kafka_bootstrap, kafka_topic, script.messages[300:])
    workers.start()
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    assert_matches(script, db_dsn)


def test_forbidden_kafka_override_exits_2(workers: Workers) -> None:
    worker = workers.start(env={"ACCUMULATOR_CONSUMER_EXTRA": '{"enable.auto.commit": true}'})
    assert worker.wait(30) == 2
    assert "enable.auto.commit" in worker.log()


def test_unmigrated_database_exits_6(
    empty_db_dsn: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    pool = Workers(empty_db_dsn, kafka_bootstrap, kafka_topic, "g-unmigrated", tmp_path)
    try:
        worker = pool.start()
        assert worker.wait(30) == 6, worker.log()
        assert "accumulator migrate" in worker.log()
    finally:
        pool.close()


def test_metrics_and_probes_are_served(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    import urllib.request

    from consumer.localpg import free_port

    port = free_port()
    script = Script.generate("stock", 200, seed=3)
    produce(kafka_bootstrap, kafka_topic, script.messages)
    workers.start(env={"ACCUMULATOR_METRICS_PORT": str(port), "ACCUMULATOR_METRICS_HOST": "127.0.0.1"})
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    wait_until(lambda: get("/readyz")[0] == 200, within=30, what="worker ready")
    assert get("/healthz")[0] == 200
    status, text = get("/metrics")
    assert status == 200
    applied = sum(1 for m in script.messages if m.error_class is None)
    lines = text.splitlines()
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("accumulator_commands_total{")
        and 'register="stock"' in line
        and ('outcome="applied"' in line or 'outcome="duplicate"' in line)
    )
    assert counted == applied
    assert any(line.startswith("accumulator_consumer_lag_messages{") for line in lines)
    assert any(line.startswith('accumulator_assigned_partitions{topic="') for line in lines)
    assert any(line.startswith("accumulator_dead_letters_total{") for line in lines)
    assert any(line.startswith("accumulator_build_info{") for line in lines)
