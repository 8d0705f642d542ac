"""Infrastructure backoff of the worker (SPEC §14.1): 500 ms doubling, capped at 30 s, ±20 % jitter."""

from __future__ import annotations

import pytest

from consumer.loop import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda: 0.5)  # 0.5 = the middle of the jitter range
    assert [round(backoff.next_delay(), 6) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.999999, 1.2)])
def test_jitter_stays_within_twenty_percent(draw: float, factor: float) -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda: draw)
    assert backoff.next_delay() == pytest.approx(0.5 * factor, rel=1e-5)


def test_reset_starts_over_and_many_failures_do_not_overflow() -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda: 0.5)
    for _ in range(5000):
        backoff.next_delay()
    assert backoff.next_delay() == pytest.approx(30.0)
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.5)
