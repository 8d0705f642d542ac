"""Plumbing shared by the long-running commands (`consume`, `compact`): signals, schema check, error text.

No Kafka import here: the compactor uses it and must not load the Kafka client.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import psycopg

from consumer.schedule import EXIT_INTERRUPTED
from registers.migrate import ensure_ready, migrate, status

__all__ = ["EXIT_INTERRUPTED", "check_schema", "install_signals", "one_line", "restore_signals"]

log = logging.getLogger("accumulator.process")


def one_line(exc: BaseException) -> str:
    """An exception as one log-friendly line (at most 300 characters; its type when it has no text)."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def install_signals(stop: threading.Event, on_first: Callable[[], None], *, finishing: str) -> dict[int, Any]:
    """SIGTERM/SIGINT: the first sets `stop` and calls `on_first` (it says it is finishing `finishing`), a
    second exits 130 at once. Returns the handlers replaced, for `restore_signals`."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once")
            os._exit(EXIT_INTERRUPTED)
        log.info("signal %s: finishing the current %s", signal.Signals(signum).name, finishing)
        stop.set()
        on_first()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def check_schema(conn: psycopg.Connection[Any], migrate_on_start: bool) -> str:
    """Migrate if asked, refuse a pending or conflicting schema; returns the schema version."""
    if migrate_on_start:
        migrate(conn)
    ensure_ready(conn)
    applied = [s.version for s in status(conn) if s.state == "applied"]
    return str(max(applied)) if applied else "0"
