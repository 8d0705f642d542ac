"""The demo's live summary: text from snapshots (pure), redrawn in place on a terminal, a line now and then
elsewhere (a log, a test, CI).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from typing import Final, TextIO

from consumer.demo_watch import Metrics, Snapshot

__all__ = ["LiveView", "render", "render_line"]

LINE_EVERY_S: Final = 5.0  # not a terminal: one line this often


def _rate(history: Sequence[Snapshot], value: Callable[[Snapshot], int | None]) -> str:
    first, last = history[0], history[-1]
    a, b = value(first), value(last)
    if a is None or b is None or last.at - first.at < 0.5:
        return ""
    return f" ({(b - a) / (last.at - first.at):,.0f}/s)"


def _count(value: float | int | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def _outcomes(worker: Metrics | None) -> str:
    if worker is None:
        return "worker: no metrics yet"
    applied = worker.total("accumulator_commands_total", outcome="applied")
    duplicates = worker.total("accumulator_commands_total", outcome="duplicate")
    letters = worker.by("accumulator_dead_letters_total", "reason")
    by_class = ", ".join(f"{name} {n:,.0f}" for name, n in sorted(letters.items()) if n)
    text = f"applied {_count(applied)} · duplicates {_count(duplicates)}"
    text += f" · dead letters {_count(sum(letters.values()))}"
    return text + (f" ({by_class})" if by_class else "")


def _merge(snap: Snapshot) -> str:
    if snap.deltas is None:
        return "?"
    if not snap.deltas:
        return "no high-write register"
    return " · ".join(
        f"{d.register_name}: {d.pending_rows:,} delta rows pending, oldest {d.lag_seconds:.1f} s"
        for d in snap.deltas
    )


def _verify(compactor: Metrics | None, now: float) -> str:
    if compactor is None:
        return "verify at the end"
    status = compactor.by("accumulator_verify_status", "register")
    if not status:
        return "verify pending"
    last = compactor.by("accumulator_verify_last_run_timestamp_seconds", "register")
    newest = max(last.values(), default=0.0)
    ago = f" ({now - newest:.0f} s ago)" if newest else ""
    return (
        "verify "
        + ", ".join(f"{name} {'ok' if value == 1 else 'MISMATCH'}" for name, value in sorted(status.items()))
        + ago
    )


def _compactor(state: str, compactor: Metrics | None, now: float) -> str:
    if compactor is None:
        return f"{state} · {_verify(None, now)}"
    role = "leader" if compactor.total("accumulator_leader", role="leader") == 1 else "standby"
    merges = compactor.total("accumulator_merges_total")
    return f"{state}, {role} · {merges:,.0f} merges · {_verify(compactor, now)}"


def render(
    history: Sequence[Snapshot], *, elapsed: float, duration: float | None, compactor_state: str, now: float
) -> list[str]:
    """The terminal frame: `history` holds the snapshots of the last few seconds, newest last."""
    snap = history[-1]
    until = "Ctrl-C stops" if duration is None else f"of {duration:g} s · Ctrl-C stops early"
    lines = [
        f"running {elapsed:.0f} s {until}",
        f"commands   sent {snap.sent:,}{_rate(history, lambda s: s.sent)} · processed "
        f"{_count(snap.processed)}{_rate(history, lambda s: s.processed)} · consumer lag {_count(snap.lag)}",
        f"worker     {_outcomes(snap.worker)}",
        f"merge      {_merge(snap)}",
        f"compactor  {_compactor(compactor_state, snap.compactor, now)}",
    ]
    label = "balances"
    for start in range(0, len(snap.balances), 3):
        row = " · ".join(f"{name} {value}" for name, value in snap.balances[start : start + 3])
        lines.append(f"{label:<10} {row}")
        label = ""
    return lines


def render_line(history: Sequence[Snapshot], *, elapsed: float) -> str:
    """One line for a log: the counts and lags that change."""
    snap = history[-1]
    letters = None if snap.worker is None else snap.worker.total("accumulator_dead_letters_total")
    merge_lag = max((d.lag_seconds for d in snap.deltas or ()), default=0.0)
    return (
        f"{elapsed:6.1f}s  sent {snap.sent:,}{_rate(history, lambda s: s.sent)}  processed "
        f"{_count(snap.processed)}  consumer lag {_count(snap.lag)}  dead letters {_count(letters)}  "
        f"merge lag {merge_lag:.1f} s"
    )


class LiveView:
    """Shows frames: on a terminal the last frame is replaced in place, else a line every few seconds."""

    def __init__(self, out: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        try:
            self.tty = out.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._drawn = 0
        self._clock = clock
        self._last_line = clock()

    def show(self, frame: Sequence[str], line: str) -> None:
        if self.tty:
            width = max(shutil.get_terminal_size().columns - 1, 20)
            # Back to the first line of the last frame, clear to the end of the screen, draw.
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self._out.write(up + "".join(text[:width] + "\n" for text in frame))
            self._drawn = len(frame)
        elif self._clock() - self._last_line >= LINE_EVERY_S:
            self._out.write(line + "\n")
            self._last_line = self._clock()
        self._out.flush()

    def done(self) -> None:
        """The last frame stays; what is printed next starts below it."""
        self._drawn = 0
