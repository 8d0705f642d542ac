"""Timed calls, interleaved between the engine and its baselines (A B A B) so host noise hits both."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

__all__ = ["Call", "interleave", "timed"]

# A side's i-th call (i counts from 0 per side, warm-up calls included): the callable picks its own data.
Call = Callable[[int], object]


def timed(fn: Call, i: int) -> float:
    started = time.perf_counter()
    fn(i)
    return time.perf_counter() - started


def interleave(
    sides: Mapping[str, Call], *, rounds: int, per_round: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call for each side. Each round runs ``per_round`` calls of every side, the order of the
    sides rotating from round to round; ``warmup`` untimed calls per side first (plans, caches)."""
    names = list(sides)
    counters = dict.fromkeys(names, 0)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        for _ in range(warmup):
            sides[name](counters[name])
            counters[name] += 1
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            for _ in range(per_round):
                samples[name].append(timed(sides[name], counters[name]))
                counters[name] += 1
    return samples
