"""The compactor's pure rules (consumer/schedule.py): cadence, wake-ups, merge rounds, roles, exit codes."""

from __future__ import annotations

import math
import os

import pytest

from consumer.compactor import LEADER_KEY, CompactorConfig
from consumer.schedule import Backoff, Every, Leadership, next_round, once_exit_code, wake_in
from consumer.settings import Settings
from registers.migrate import LOCK_KEY


@pytest.fixture(autouse=True)
def _no_accumulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's ACCUMULATOR_* variables must not leak into Settings() here."""
    for key in list(os.environ):
        if key.startswith("ACCUMULATOR_"):
            monkeypatch.delenv(key)


def test_a_task_is_due_at_once_then_every_interval_from_where_it_ran() -> None:
    merge = Every(5.0)
    assert merge.due(100.0)
    merge.ran(100.0)
    assert not merge.due(104.9)
    assert merge.due(105.0)
    assert merge.wait_s(103.0) == pytest.approx(2.0)


def test_a_round_that_used_its_whole_interval_is_followed_at_once() -> None:
    merge = Every(5.0)
    merge.ran(100.0)  # started at 100, still merging a backlog at 105.5
    assert merge.due(105.5)
    assert merge.wait_s(105.5) == 0.0


def test_zero_interval_disables_a_task() -> None:
    verify = Every(0.0)
    assert not verify.enabled
    assert not verify.due(1e9)
    assert verify.wait_s(0.0) == math.inf


def test_retry_comes_sooner_but_never_later_than_the_interval() -> None:
    maintenance = Every(3600.0)
    maintenance.retry(10.0, 60.0)
    assert maintenance.next_at == 70.0
    maintenance.retry(10.0, 7200.0)
    assert maintenance.next_at == 3610.0
    maintenance.retry(10.0, -1.0)
    assert maintenance.due(10.0)


def test_hold_keeps_a_task_from_being_due_until_it_ran_or_reset() -> None:
    verify = Every(600.0)
    verify.hold()  # a pass runs in its thread
    assert not verify.due(1e12)
    assert verify.wait_s(0.0) == math.inf
    verify.ran(50.0)  # the pass finished at 50: the interval counts from its end
    assert verify.next_at == 650.0
    verify.hold()
    verify.reset()  # cancelled: redo at once
    assert verify.due(0.0)


def test_wake_in_is_the_first_due_time_capped_by_the_tick() -> None:
    a, b = Every(5.0), Every(0.2)
    a.ran(100.0)
    b.ran(100.0)
    assert wake_in(100.0, [a, b], cap_s=1.0) == pytest.approx(0.2)
    assert wake_in(100.0, [a], cap_s=1.0) == 1.0
    assert wake_in(200.0, [a], cap_s=1.0) == 0.0
    assert wake_in(0.0, [], cap_s=1.0) == 1.0


def test_merge_rounds_go_on_only_for_registers_that_filled_a_batch() -> None:
    consumed: dict[str, int | None] = {"a": 100, "b": 37, "c": None, "d": 0, "e": 100}
    assert next_round(consumed, 100) == ["a", "e"]
    assert next_round({}, 100) == []


def test_leadership_transitions() -> None:
    role = Leadership()
    assert not role.is_leader
    assert role.observe(False, 1.0) is None  # standby stays standby
    assert role.observe(True, 2.0) == "acquired"
    assert (role.is_leader, role.terms, role.since) == (True, 1, 2.0)
    assert role.observe(True, 3.0) is None
    assert role.connection_lost(4.0) == "lost"
    assert role.connection_lost(4.5) is None  # a standby has nothing to lose
    assert role.released(5.0) is None
    assert role.observe(True, 6.0) == "acquired"
    assert role.terms == 2
    assert role.released(7.0) == "released"
    assert role.observe(True, 8.0) == "acquired"
    assert role.observe(False, 9.0) == "lost"  # a lock check that failed while leading
    assert role.history == ["acquired", "lost", "acquired", "released", "acquired", "lost"]
    assert (role.is_leader, role.terms, role.since) == (False, 3, 9.0)


@pytest.mark.parametrize(
    ("mismatches", "failed", "interrupted", "code"),
    [
        pytest.param({}, [], False, 0, id="clean"),
        pytest.param({"a": 0, "b": 0}, [], False, 0, id="all-verified-clean"),
        pytest.param({"a": 2}, [], False, 3, id="mismatches"),
        pytest.param({"a": 0}, ["partitions"], False, 1, id="task-failed"),
        pytest.param({"a": 1}, ["verify"], False, 3, id="mismatches-before-failures"),
        pytest.param({"a": 1}, [], True, 130, id="interrupted"),
    ],
)
def test_once_exit_codes(mismatches: dict[str, int], failed: list[str], interrupted: bool, code: int) -> None:
    assert once_exit_code(mismatches=mismatches, failed=failed, interrupted=interrupted) == code


def test_leader_key_is_its_own() -> None:
    assert LEADER_KEY != LOCK_KEY
    assert LEADER_KEY.to_bytes(8, "big") == b"accumcmp"
    assert -(2**63) <= LEADER_KEY < 2**63  # a PostgreSQL bigint


def test_config_from_settings_carries_every_compactor_setting() -> None:
    s = Settings(
        merge_interval_ms=200,
        merge_delay_ms=0,
        merge_batch=50,
        partitions_ahead=5,
        maintenance_interval_ms=1000,
        leader_poll_ms=300,
        verify_interval_ms=0,
        verify_timeout_ms=7000,
        dedupe_retention_hours=1,
        retry_initial_ms=10,
        retry_max_ms=20,
        connect_timeout_ms=2500,
        shutdown_grace_ms=40,
    )
    cfg = CompactorConfig.from_settings(s)
    assert cfg == CompactorConfig(
        merge_interval_ms=200,
        merge_delay_ms=0,
        merge_batch=50,
        partitions_ahead=5,
        maintenance_interval_ms=1000,
        leader_poll_ms=300,
        verify_interval_ms=0,
        verify_timeout_ms=7000,
        dedupe_retention_hours=1,
        retry_initial_ms=10,
        retry_max_ms=20,
        connect_timeout_s=3,
        shutdown_grace_ms=40,
    )
    assert CompactorConfig.from_settings(Settings()) == CompactorConfig()  # the defaults agree with §18


def test_the_worker_and_the_compactor_share_one_backoff_rule() -> None:
    from consumer import loop

    assert loop.Backoff is Backoff


def test_the_compactor_does_not_load_the_kafka_client() -> None:
    import subprocess
    import sys

    code = "import sys, consumer.compactor; print('confluent_kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
