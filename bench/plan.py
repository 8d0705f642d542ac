"""PURE: sizes of one run, derived from ``--scale`` (1.0 = the full suite: a 1M-movement history load)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FULL_LOAD", "Plan"]

FULL_LOAD = 1_000_000


def _at_least(floor: int, x: float) -> int:
    return max(floor, round(x))


@dataclass(frozen=True)
class Plan:
    """How much each scenario does. ``f`` scales sample counts; it never goes below 0.1 of the full
    counts, so even a quick run keeps enough samples for a p50."""

    scale: float
    load_movements: int  # history load (balance_historical, turnover_month, bytes, verify)
    load_batch: int  # movements per register_post call while loading
    prefill_movements: int  # write register's movements before the write scenarios
    batch_rounds: int  # post_batch: rounds x calls per round, each side
    batch_per_round: int
    rounds: int  # latency scenarios: rounds x calls per round, each side
    single_per_round: int
    small_per_round: int
    doc_per_round: int  # unpost / repost
    read_per_round: int  # balance reads, per stage for the history reads
    hot_key_seconds: float  # per register, split over 2 interleaved rounds
    hot_key_clients: int
    merge_movements: int
    worker_commands: int  # worker_single: single-movement commands pre-produced for one worker
    worker_doc_commands: int  # worker_docs: 5-movement commands
    worker_naive_movements: int  # the naive consumer's sample, per part
    worker_latency_seconds: float  # worker_latency: paced production at 5k commands/s

    @classmethod
    def from_scale(cls, scale: float) -> Plan:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        f = min(1.0, max(0.1, scale))
        return cls(
            scale=scale,
            load_movements=_at_least(10_000, FULL_LOAD * scale),
            load_batch=10_000,
            prefill_movements=_at_least(5_000, 20_000 * f),
            batch_rounds=_at_least(3, 10 * f),
            batch_per_round=3,
            rounds=_at_least(6, 10 * f),
            single_per_round=_at_least(10, 100 * f),
            small_per_round=_at_least(5, 30 * f),
            doc_per_round=_at_least(10, 50 * f),
            read_per_round=_at_least(20, 100 * f),
            hot_key_seconds=max(2.0, 10.0 * f),
            hot_key_clients=4,
            merge_movements=_at_least(10_000, 200_000 * scale),
            worker_commands=_at_least(20_000, 200_000 * scale),
            worker_doc_commands=_at_least(4_000, 40_000 * scale),
            worker_naive_movements=_at_least(2_000, 10_000 * f),
            worker_latency_seconds=max(5.0, 20.0 * f),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
