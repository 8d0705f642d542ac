"""PURE: where sampled backends were (``pg_stat_activity`` wait events), as shares of the samples."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CPU", "profile", "share"]

# An active backend without a wait event is running (or in a wait PostgreSQL does not instrument).
CPU = "CPU"


def share(counts: Mapping[str, int], prefix: str) -> float | None:
    """Percent of the samples whose ``type:event`` key starts with ``prefix``; None without samples."""
    total = sum(counts.values())
    if total == 0:
        return None
    return 100.0 * sum(n for key, n in counts.items() if key.startswith(prefix)) / total


def profile(counts: Mapping[str, int], top: int = 4) -> str:
    """The most frequent keys with their percent, e.g. ``Lock:transactionid 61%, CPU 22%, other 3%``."""
    total = sum(counts.values())
    if total == 0:
        return "no samples"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{key} {100 * n / total:.0f}%" for key, n in ranked[:top]]
    rest = sum(n for _, n in ranked[top:])
    if rest:
        parts.append(f"other {100 * rest / total:.0f}%")
    return ", ".join(parts)
