"""Pure parts of the worker benchmark: pacing, catch-up, produce-to-visible latencies, /proc parsing."""

from __future__ import annotations

import json

import pytest

from bench.cli import SCENARIOS, parse_args
from bench.kafka import Paced, Sent, due_count
from bench.plan import Plan
from bench.scenarios.worker import (
    WORKER_PARTS,
    caught_up,
    command,
    cpu_seconds,
    host_busy,
    parts,
    status_kb,
    visible_latencies,
)


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [
        (-0.1, 0),  # before the start
        (0.0, 1),  # the first message is due at once
        (0.00019, 1),
        (0.0002, 2),  # message i is due at i / rate: 1 at 0.2 ms at 5k/s
        (0.5, 2501),
        (10.0, 10_000),  # never more than there are
    ],
)
def test_due_count_follows_a_steady_schedule(elapsed: float, due: int) -> None:
    assert due_count(elapsed, 5000.0, 10_000) == due


def test_due_count_is_monotonic_and_ends_at_the_total() -> None:
    counts = [due_count(t / 1000, 300.0, 100) for t in range(0, 1000)]
    assert counts == sorted(counts)
    assert counts[-1] == 100
    assert due_count(99 / 300, 300.0, 100) == 100  # the last one is due at (n - 1) / rate


def test_achieved_rate_counts_intervals_between_sends() -> None:
    paced = Paced(rate=100.0, seconds=1.0)
    paced.sent = [Sent(0, i, i / 100) for i in range(101)]
    assert paced.achieved_rate == pytest.approx(100.0)
    assert Paced(rate=100.0).achieved_rate == 0.0


def test_caught_up_needs_every_partition_with_messages() -> None:
    high = {0: 10, 1: 5, 2: 0}
    assert caught_up({0: 10, 1: 5}, high)  # partition 2 has nothing to consume: no row needed
    assert caught_up({0: 10, 1: 5, 2: 0}, high)
    assert not caught_up({0: 10, 1: 4, 2: 0}, high)
    assert not caught_up({0: 10}, high)  # no row yet for partition 1
    assert not caught_up({}, high)
    assert caught_up({}, {0: 0})


def test_visible_latency_is_the_first_poll_past_the_offset() -> None:
    sent = [Sent(0, 0, 1.00), Sent(0, 1, 1.01), Sent(0, 2, 1.02), Sent(1, 0, 1.00)]
    seen = [
        (1.05, 0, 0),  # row inserted at assignment: nothing visible yet
        (1.10, 0, 2),  # offsets 0 and 1 visible
        (1.15, 1, 1),
        (1.20, 0, 2),  # repeated value: adds nothing
        (1.30, 0, 3),
    ]
    latencies, unseen = visible_latencies(sent, seen)
    assert unseen == 0
    assert latencies == pytest.approx([0.10, 0.09, 0.28, 0.15])


def test_visible_latency_counts_messages_no_poll_showed() -> None:
    sent = [Sent(0, 5, 1.0), Sent(2, 0, 1.0)]
    latencies, unseen = visible_latencies(sent, [(2.0, 0, 5)])  # next_offset 5 does not cover offset 5
    assert (latencies, unseen) == ([], 2)


def test_visible_latency_ignores_poll_order_and_never_goes_back() -> None:
    sent = [Sent(0, 3, 0.0)]
    # out of order input; a lower value after a higher one (a stale read) must not hide the earlier poll
    seen = [(3.0, 0, 9), (1.0, 0, 4), (2.0, 0, 2)]
    assert visible_latencies(sent, seen) == ([1.0], 0)


def test_status_kb_reads_the_peak_resident_set() -> None:
    text = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   73748 kB\nVmRSS:\t   70000 kB\n"
    assert status_kb(text, "VmHWM") == 73748
    assert status_kb(text, "VmSwap") is None


def test_cpu_seconds_survives_odd_process_names() -> None:
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "4242 (python -m (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0"
    assert cpu_seconds(stat, 100) == pytest.approx(3.0)


def test_host_busy_is_the_non_idle_share() -> None:
    before = "cpu  100 0 100 700 100 0 0 0 0 0"
    after = "cpu  200 0 200 1200 200 0 0 0 0 0"  # +100 user, +100 system, +500 idle, +100 iowait
    assert host_busy(before, after) == pytest.approx(200 / 800)
    assert host_busy(before, before) == 0.0


def test_command_is_a_post_envelope_keyed_by_recorder() -> None:
    movements = [
        {"recorder": "d:1", "period": "2026-11-01T00:00:00Z", "warehouse": 1, "quantity": "1.000"},
        {"recorder": "d:1", "period": "2026-11-01T00:00:00Z", "warehouse": 2, "quantity": "-2.500"},
    ]
    key, value = command("wk5", "d:1", movements)
    assert key == b"d:1"
    body = json.loads(value)
    assert body == {
        "op": "post",
        "register": "wk5",
        "recorder": "d:1",
        "movements": [{k: v for k, v in m.items() if k != "recorder"} for m in movements],
    }
    assert b" " not in value  # compact, as a producer would send it


def test_parts_expand_the_family_name_in_run_order() -> None:
    assert parts(["worker"]) == list(WORKER_PARTS)
    assert parts(["worker_latency", "worker_single"]) == ["worker_single", "worker_latency"]
    assert parts(["post_batch"]) == []


def test_worker_scenarios_are_selectable_with_a_broker_option() -> None:
    assert {"worker", *WORKER_PARTS} <= set(SCENARIOS)
    args = parse_args(["--only", "worker", "--kafka", "127.0.0.1:9092"])
    assert (args.only, args.kafka) == (["worker"], "127.0.0.1:9092")
    assert parse_args([]).kafka is None


def test_plan_sizes_of_the_worker_scenarios() -> None:
    full = Plan.from_scale(1.0)
    assert (full.worker_commands, full.worker_doc_commands) == (200_000, 40_000)  # 200k movements each
    assert full.worker_naive_movements == 10_000
    assert full.worker_latency_seconds == 20.0
    tiny = Plan.from_scale(0.001)
    assert tiny.worker_commands == 20_000
    assert tiny.worker_doc_commands == 4_000
    assert tiny.worker_naive_movements >= 1_000
    assert tiny.worker_latency_seconds >= 5.0
