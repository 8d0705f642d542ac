"""Pure timing and role bookkeeping of the compactor (SPEC §15): no I/O, no clock of its own.

Every function takes `now` (a monotonic time in seconds) from the caller, so the rules are tested without
sleeping: when a periodic task is due, when the loop should wake next, when a merge round goes on, what role
this instance holds, and which exit code a `--once` pass ends with.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCHES",
    "EXIT_OK",
    "Backoff",
    "Every",
    "Leadership",
    "Transition",
    "next_round",
    "once_exit_code",
    "wake_in",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # a task of a --once pass failed (logged); retried by the next run
EXIT_MISMATCHES: Final = 3  # as `accumulator verify`
EXIT_INTERRUPTED: Final = 130

Transition = Literal["acquired", "lost", "released"]


class Backoff:
    """Infrastructure retry delays (SPEC §14.1): initial, doubled per failure, capped, ±20 % jitter.

    Shared by the worker and the compactor; here (no Kafka import) so the compactor does not load the client.
    """

    def __init__(self, initial_s: float, cap_s: float, *, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.cap_s, self.initial_s * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return base * (0.8 + 0.4 * self._rng())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Every:
    """A task due every `interval_s`; due at once until it first ran. `interval_s` <= 0 disables it.

    `ran(at)` schedules the next run `interval_s` after `at`: the start of a run for fixed-rate tasks (merge:
    a round that used its whole interval is followed at once by the next), the end for tasks whose runs must
    leave the database idle time in between (verify). `retry(now, delay_s)` brings a failed or unfinished run
    back sooner, never later than the regular schedule would. `hold()` keeps a task from being due while a run
    is in flight elsewhere (a verify thread).
    """

    interval_s: float
    next_at: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def due(self, now: float) -> bool:
        return self.enabled and now >= self.next_at

    def ran(self, at: float) -> None:
        self.next_at = at + self.interval_s

    def retry(self, now: float, delay_s: float) -> None:
        self.next_at = now + min(max(delay_s, 0.0), self.interval_s)

    def hold(self) -> None:
        self.next_at = math.inf

    def reset(self) -> None:
        """Due at once (e.g. an interrupted run that must be redone)."""
        self.next_at = 0.0

    def wait_s(self, now: float) -> float:
        """Seconds until due (0 when due, inf when disabled or held)."""
        if not self.enabled:
            return math.inf
        return max(0.0, self.next_at - now)


def wake_in(now: float, schedules: Iterable[Every], *, cap_s: float) -> float:
    """How long the loop may sleep: until the first schedule is due, at most `cap_s` (the heartbeat tick)."""
    return max(0.0, min([cap_s, *(s.wait_s(now) for s in schedules)]))


def next_round(consumed: Mapping[str, int | None], batch: int) -> list[str]:
    """Registers that get another merge call this interval: those whose last call consumed a full batch.

    Round robin (one call per register per round) keeps one register's backlog from starving the others;
    `None` (the call failed) drops out until the next interval.
    """
    return [name for name, n in consumed.items() if n is not None and n >= batch]


@dataclass
class Leadership:
    """The role of this instance: leader while it holds the lock on a live connection, else standby."""

    is_leader: bool = False
    terms: int = 0  # how often leadership was acquired (logs, tests)
    since: float | None = None  # monotonic time of the current role's start
    history: list[Transition] = field(default_factory=list)

    def observe(self, holds_lock: bool, now: float) -> Transition | None:
        """The outcome of a lock attempt (or of a connection check while leading)."""
        if holds_lock and not self.is_leader:
            return self._to(True, "acquired", now)
        if not holds_lock and self.is_leader:
            return self._to(False, "lost", now)
        return None

    def connection_lost(self, now: float) -> Transition | None:
        """The lock's connection broke: the server ended the session, and the lock with it."""
        return self._to(False, "lost", now) if self.is_leader else None

    def released(self, now: float) -> Transition | None:
        """Shutdown: the lock was given back on purpose."""
        return self._to(False, "released", now) if self.is_leader else None

    def _to(self, leader: bool, transition: Transition, now: float) -> Transition:
        self.is_leader = leader
        self.since = now
        if leader:
            self.terms += 1
        self.history.append(transition)
        return transition


def once_exit_code(*, mismatches: Mapping[str, int], failed: Sequence[str], interrupted: bool) -> int:
    """Exit code of a `--once` pass: 130 interrupted, 3 mismatches found, 1 a task failed, else 0.

    Mismatches come before task failures: they are the finding a cron job must not hide, and a failed
    task of one register does not make another register's mismatch less true.
    """
    if interrupted:
        return EXIT_INTERRUPTED
    if any(n > 0 for n in mismatches.values()):
        return EXIT_MISMATCHES
    if failed:
        return EXIT_FAILED
    return EXIT_OK
