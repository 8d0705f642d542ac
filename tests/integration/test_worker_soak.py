"""Soak: long seeded streams through two workers killed with SIGKILL at random, standard and high-write.

Not part of `make test` (marker `soak`, deselected by default); run with `make soak` (SOAK_SEEDS=…).
Each seed: 20,000 commands over 300 recorders (ids, replays, every bad class), produced in ten parts while
two workers consume; after each part one of them is killed (60 %) and replaced. At the end every recorder's
movements, the totals, the cache and verify equal the model, and the dead letters are exactly the bad ones.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import psycopg
import pytest
from worker_harness import (
    Script,
    Workers,
    assert_matches,
    chunks,
    create_script_register,
    dead_letters,
    produce,
    read_topic,
    wait_caught_up,
)

from consumer.localkafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.soak]

SEEDS = [int(s) for s in os.environ.get("SOAK_SEEDS", "1,2,3,4").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_soak_with_random_kills(
    seed: int, db_dsn: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    high_write = seed % 2 == 1
    create_script_register(db_dsn, "stock", high_write=high_write)
    create_topics(kafka_bootstrap, [f"{kafka_topic}.dlq"], partitions=3)
    script = Script.generate("stock", 20_000, seed=seed, recorders=300)
    pool = Workers(db_dsn, kafka_bootstrap, kafka_topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path)
    env = {
        "ACCUMULATOR_BATCH_MAX_MESSAGES": str(rng.choice([7, 50, 300, 1000])),
        "ACCUMULATOR_CONSUMER_EXTRA": '{"session.timeout.ms": 6000}',
    }
    try:
        live = [pool.start(env=env), pool.start(env=env)]
        for part in chunks(script.messages, 10):
            produce(kafka_bootstrap, kafka_topic, part)
            victim = rng.choice(live)
            if rng.random() < 0.6:
                # wherever it is: mid-batch, between the PostgreSQL and the Kafka commit, in a rebalance
                victim.kill()
                live.remove(victim)
                live.append(pool.start(env=env))
        wait_caught_up(db_dsn, kafka_bootstrap, pool.group, kafka_topic, within=600)
        if high_write:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                conn.execute("SELECT accum.register_merge('stock', 1000000)")
        assert_matches(script, db_dsn)
        expected = script.expected_dead_letters()
        assert (
            dead_letters(read_topic(kafka_bootstrap, f"{kafka_topic}.dlq", sum(expected.values())))
            == expected
        )
    finally:
        pool.close()
