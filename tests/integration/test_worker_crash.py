"""The worker under stress: rebalances, kill -9, a PostgreSQL crash (SPEC §14, §21 "crash").

Each test runs real `accumulator consume` processes on a seeded script and ends with the same proof: the
movements of every recorder, the totals, the balance cache and `register_verify` equal the model, and the dead
letters are exactly the script's bad commands (a retried batch may repeat a letter: one per source position).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import dsn_as, wait_until
from worker_harness import (
    Script,
    Workers,
    assert_matches,
    chunks,
    create_script_register,
    dead_letters,
    produce,
    read_topic,
    stored_offsets,
    wait_caught_up,
)

from consumer.localkafka import create_topics
from consumer.localpg import LocalPostgres
from registers.migrate import migrate

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def workers(db_dsn: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path) -> Iterator[Workers]:
    create_script_register(db_dsn, "stock")
    create_topics(kafka_bootstrap, [f"{kafka_topic}.dlq"], partitions=3)
    pool = Workers(
        dsn_as(db_dsn, "t_writer"), kafka_bootstrap, kafka_topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path
    )
    try:
        yield pool
    finally:
        pool.close()


def _progress(dsn: str, group: str, topic: str) -> int:
    return sum(stored_offsets(dsn, group, topic).values())


def _assert_dead_letters(script: Script, bootstrap: str, topic: str) -> None:
    expected = script.expected_dead_letters()
    assert dead_letters(read_topic(bootstrap, f"{topic}.dlq", sum(expected.values()))) == expected


def test_two_workers_with_a_rebalance_in_the_middle(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 3000, seed=21)
    parts = list(chunks(script.messages, 3))
    small = {"ACCUMULATOR_BATCH_MAX_MESSAGES": "25"}  # many batches, so the rebalance lands between them
    produce(kafka_bootstrap, kafka_topic, parts[0])
    first = workers.start(env=small)
    wait_until(
        lambda: _progress(db_dsn, workers.group, kafka_topic) > 300, within=60, what="first worker busy"
    )
    second = workers.start(env=small)  # one joins
    produce(kafka_bootstrap, kafka_topic, parts[1])
    wait_until(lambda: "partitions assigned" in second.log(), within=60, what="second worker assigned")
    assert first.stop() == 0, workers.logs()  # one leaves, mid-stream
    produce(kafka_bootstrap, kafka_topic, parts[2])
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    assert_matches(script, db_dsn)
    _assert_dead_letters(script, kafka_bootstrap, kafka_topic)
    assert second.stop() == 0, workers.logs()


def test_kill_9_in_the_middle_of_batches_then_restart(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 3000, seed=34)
    produce(kafka_bootstrap, kafka_topic, script.messages)
    # A killed member keeps its partitions until its session times out: keep that short here.
    env = {
        "ACCUMULATOR_BATCH_MAX_MESSAGES": "40",
        "ACCUMULATOR_CONSUMER_EXTRA": '{"session.timeout.ms": 6000}',
    }
    total = len(script.messages)
    for share in (0.2, 0.45, 0.7):
        worker = workers.start(env=env)
        before = _progress(db_dsn, workers.group, kafka_topic)
        target = max(before + 1, int(total * share))
        wait_until(
            lambda target=target: _progress(db_dsn, workers.group, kafka_topic) >= target,
            within=90,
            what=f"progress past {share:.0%}",
        )
        worker.kill()  # SIGKILL: no cleanup, possibly between the PostgreSQL and the Kafka commit
    workers.start(env=env)
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic)
    assert_matches(script, db_dsn)
    _assert_dead_letters(script, kafka_bootstrap, kafka_topic)


def test_two_workers_where_one_is_killed(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    script = Script.generate("stock", 2000, seed=55)
    produce(kafka_bootstrap, kafka_topic, script.messages)
    env = {
        "ACCUMULATOR_BATCH_MAX_MESSAGES": "30",
        "ACCUMULATOR_CONSUMER_EXTRA": '{"session.timeout.ms": 6000}',
    }
    victim = workers.start(env=env)
    workers.start(env=env)
    wait_until(lambda: _progress(db_dsn, workers.group, kafka_topic) > 400, within=60, what="workers busy")
    victim.kill()  # its partitions move to the survivor after the session times out
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic, within=180)
    assert_matches(script, db_dsn)
    _assert_dead_letters(script, kafka_bootstrap, kafka_topic)


def test_a_frozen_worker_comes_back_as_a_fenced_zombie(
    workers: Workers, db_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    """SIGSTOP a worker mid-stream until the group gives its partitions away, then SIGCONT it: whatever it
    held (an open transaction, a planned batch, stale offsets) must not apply anything twice."""
    script = Script.generate("stock", 2000, seed=144)
    parts = list(chunks(script.messages, 2))
    env = {
        "ACCUMULATOR_BATCH_MAX_MESSAGES": "20",
        "ACCUMULATOR_CONSUMER_EXTRA": '{"session.timeout.ms": 6000}',
    }
    produce(kafka_bootstrap, kafka_topic, parts[0])
    zombie = workers.start(env=env)
    wait_until(
        lambda: _progress(db_dsn, workers.group, kafka_topic) > 200, within=60, what="first worker busy"
    )
    zombie.signal(signal.SIGSTOP)
    try:
        survivor = workers.start(env=env)
        produce(kafka_bootstrap, kafka_topic, parts[1])
        # the survivor owns everything once the zombie's session expired
        wait_until(lambda: "partitions assigned" in survivor.log(), within=60, what="survivor assigned")
    finally:
        zombie.signal(signal.SIGCONT)
    wait_caught_up(db_dsn, kafka_bootstrap, workers.group, kafka_topic, within=120)
    assert_matches(script, db_dsn)
    _assert_dead_letters(script, kafka_bootstrap, kafka_topic)


@pytest.fixture
def own_postgres(pg_roles: dict[str, str | None]) -> Iterator[LocalPostgres]:
    """A durable cluster of this test's own, so stopping it hurts nobody else."""
    server = LocalPostgres(durable=True)
    with server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn)
        yield server


def test_postgres_crash_and_restart_while_the_worker_runs(
    own_postgres: LocalPostgres, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    dsn = own_postgres.dsn
    create_script_register(dsn, "stock")
    create_topics(kafka_bootstrap, [f"{kafka_topic}.dlq"], partitions=3)
    script = Script.generate("stock", 2000, seed=89)
    parts = list(chunks(script.messages, 2))
    pool = Workers(dsn, kafka_bootstrap, kafka_topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        produce(kafka_bootstrap, kafka_topic, parts[0])
        worker = pool.start(env={"ACCUMULATOR_BATCH_MAX_MESSAGES": "50"})
        wait_until(lambda: _progress(dsn, pool.group, kafka_topic) > 200, within=60, what="worker busy")
        own_postgres.kill_immediate()  # pg_ctl stop -m immediate: connections cut, crash recovery at start
        produce(kafka_bootstrap, kafka_topic, parts[1])
        wait_until(lambda: "batch failed" in worker.log(), within=60, what="worker noticed the outage")
        own_postgres.start_again()
        wait_caught_up(dsn, kafka_bootstrap, pool.group, kafka_topic, within=120)
        assert worker.proc.poll() is None, "the worker must survive the outage"
        assert_matches(script, dsn)
        _assert_dead_letters(script, kafka_bootstrap, kafka_topic)  # and nothing else: no valid command there
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        pool.close()
