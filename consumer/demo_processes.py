"""The demo's child processes (`accumulator consume`, `accumulator compact`) and the ports they serve on.

Children run in their own session, so a Ctrl-C at the terminal reaches only the demo, which stops them in
order (producer, catch-up, then SIGTERM); `setpriv --pdeathsig TERM` ends them if the demo itself is killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from consumer.localkafka import default_cache_dir, jars_ready
from consumer.localpg import free_port

__all__ = ["Child", "kafka_cache_dir", "metrics_port"]

HOST: Final = "127.0.0.1"


def metrics_port(preferred: int, host: str = HOST) -> int:
    """`preferred` when nothing listens there, else a free port (the caller says which one it got)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the HTTP server binds: SO_REUSEADDR, so a TIME_WAIT left by the last run does not count as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, preferred))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            return free_port(host)
    return preferred


def kafka_cache_dir(home: Path) -> Path:
    """`<home>/cache`, unless only the checkout's (or user's) shared cache already has the jars.

    Either way the jars are fetched once: a cache that has them is used as it is, and a fresh machine fetches
    into `<home>/cache` (SPEC §17).
    """
    own = home / "cache"
    if jars_ready(own):
        return own
    shared = default_cache_dir()
    return shared if jars_ready(shared) else own


class Child:
    """One `python -m consumer <command>` child with its environment; output appended to `log_path`."""

    def __init__(self, name: str, command: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._terminated = False
        log_path.parent.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
        argv = [sys.executable, "-m", "consumer", command]
        if setpriv := shutil.which("setpriv"):
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]  # setpriv execs python: same PID
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env={**base, **env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> int | None:
        """None while it runs (poll() also reaps it, so no zombie is left)."""
        return self.proc.poll()

    def last_line(self) -> str:
        """The last non-empty line this run wrote to its log (why it exited)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._offset)
                lines = handle.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")

    def terminate(self) -> None:
        """SIGTERM once, without waiting (several children then stop side by side).

        Once only: a second signal tells the worker to exit at once, dropping its current batch.
        """
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, within: float) -> int:
        """SIGTERM (unless sent already), wait `within` seconds, then SIGKILL; the exit code (<0: killed)."""
        self.terminate()
        try:
            return self.proc.wait(timeout=max(within, 0.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)
