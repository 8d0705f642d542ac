"""A private PostgreSQL cluster on loopback, made with the installed server's initdb and pg_ctl.

Used by ``accumulator demo`` (a persistent data dir under ``<home>/pg``) and by the test fixtures (a throwaway
one). As root the server runs as the ``postgres`` user (initdb and postgres refuse root), so the base dir is
chowned to it. The socket dir stays short because Unix socket paths are limited to about 107 bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

__all__ = ["LocalPostgres", "LocalPostgresError", "PrerequisiteMissing", "find_bindir"]

logger = logging.getLogger(__name__)

PACKAGE: Final = "postgresql-15"
SERVER_USER: Final = "postgres"
PREFERRED_BINDIR: Final = Path("/usr/lib/postgresql/15/bin")  # Debian layout; the tested version first
DEBIAN_BINDIRS: Final = Path("/usr/lib/postgresql")
_TOOLS: Final = ("initdb", "pg_ctl", "postgres")
# Socket path = <dir>/.s.PGSQL.<port>.lock; stay clear of the ~107-byte sun_path limit.
_MAX_SOCKET_DIR: Final = 80
_CONF_FILE: Final = "accumulator.conf"

StopMode = Literal["smart", "fast", "immediate"]


class PrerequisiteMissing(RuntimeError):
    """A program or package the local services need is not installed (CLI exit 2, naming the package)."""

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class LocalPostgresError(RuntimeError):
    """initdb or pg_ctl failed; the message carries the end of their log."""


def find_bindir() -> Path:
    """Server binaries: PostgreSQL 15 first, else the newest Debian install, else ``pg_config --bindir``."""
    candidates: list[Path] = [PREFERRED_BINDIR]
    if DEBIAN_BINDIRS.is_dir():
        versions = sorted(
            (p for p in DEBIAN_BINDIRS.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)),
            key=lambda p: tuple(int(x) for x in p.name.split(".")),
            reverse=True,
        )
        candidates += [v / "bin" for v in versions]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS):
            return bindir
    raise PrerequisiteMissing(
        f"PostgreSQL server binaries ({', '.join(_TOOLS)}) not found; install the Debian package {PACKAGE} "
        f"(apt-get install -y {PACKAGE})",
        package=PACKAGE,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalPostgres:
    """One PostgreSQL cluster under ``base_dir`` (``data/``, ``server.log``), listening on 127.0.0.1.

    ``durable=False`` turns off fsync, synchronous_commit and full_page_writes (speed only); crash tests need
    ``durable=True``. An existing ``base_dir/data`` is reused as is (the demo's data survives restarts); a
    ``base_dir`` of None means a fresh temporary dir, removed by :meth:`close`.
    """

    HOST: Final = "127.0.0.1"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        durable: bool = False,
        port: int | None = None,
        settings: Mapping[str, str | int] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        self._owned_base = base_dir is None
        base = base_dir if base_dir is not None else tempfile.mkdtemp(prefix="accum-pg-")
        self.base_dir = Path(base).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        self.durable = durable
        self.start_timeout = start_timeout
        self._fixed_port = port
        self.port: int = port or 0
        self._settings: dict[str, str | int] = {
            "max_connections": 100,
            "max_locks_per_transaction": 128,
            **(settings or {}),
        }
        self._socket_dir: Path | None = None
        self._owned_socket_dir = False
        self._as_root = os.geteuid() == 0
        self._running = False

    # --- properties -------------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if not self.port:
            raise LocalPostgresError("the cluster has not been started")
        return f"postgresql://postgres@{self.HOST}:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """Postmaster PID from ``postmaster.pid``; None when the server is not running (a stale file too)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        return int(first) if first.isdigit() and _alive(int(first)) else None

    @property
    def running(self) -> bool:
        return self._running

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Self:
        """initdb when ``data/`` is new, then start and wait until the server accepts connections."""
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._start_server()
        return self

    def start_again(self) -> Self:
        """Start on the same data dir and port after :meth:`stop` or :meth:`kill_immediate`.

        After an immediate stop the server runs crash recovery before it accepts connections.
        """
        self._start_server(keep_port=True)
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until the postmaster has exited."""
        pid = self.pid
        if pid is None:
            self._running = False
            return
        result = self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(self.start_timeout)), check=False)
        if result.returncode != 0 and _alive(pid):
            # pg_ctl gave up (a stuck backend): end this postmaster, by its PID only.
            logger.warning(
                "pg_ctl stop failed; terminating the postmaster",
                extra={"action": "pg_stop_forced", "pid": pid, "output": result.stdout[-500:]},
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
        _wait_gone(pid, self.start_timeout)
        self._running = False
        logger.info("postgres stopped", extra={"action": "pg_stopped", "pid": pid, "mode": mode})

    def kill_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: no checkpoint, the next start runs crash recovery."""
        self.stop("immediate")

    def restart(self) -> Self:
        """Fast stop then start on the same data dir and port (a new postmaster PID)."""
        self.stop("fast")
        return self.start_again()

    def close(self) -> None:
        """Stop the server; remove the base dir if we made it, and our socket dir."""
        try:
            self.stop("fast")
        finally:
            self._drop_socket_dir()
            if self._owned_base:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self._running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------------

    def _as_server(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", SERVER_USER, "--", *argv] if self._as_root else list(argv)

    def _run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd = base dir: as another user, postgres warns when it cannot enter the caller's cwd.
        result = subprocess.run(
            self._as_server(argv),
            cwd=self.base_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.start_timeout + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise LocalPostgresError(
                f"{Path(argv[0]).name} failed (exit {result.returncode}):\n{result.stdout.strip()}\n"
                f"--- {self.log_file} ---\n{_tail(self.log_file)}"
            )
        return result

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args], check=check)

    def _server_uid_gid(self) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PrerequisiteMissing(
                f"running as root needs the {SERVER_USER!r} user, made by the Debian package {PACKAGE}",
                package=PACKAGE,
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _give_to_server(self, path: Path) -> None:
        if self._as_root:
            uid, gid = self._server_uid_gid()
            os.chown(path, uid, gid)

    @staticmethod
    def server_can_reach(path: str | os.PathLike[str]) -> bool:
        """Whether the server user may traverse every existing parent of `path` (always, unless root)."""
        if os.geteuid() != 0:
            return True
        probe = Path(path).resolve()
        while not probe.exists():
            probe = probe.parent
        result = subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-x", str(probe)], check=False)
        return result.returncode == 0

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._give_to_server(self.base_dir)
        if self._as_root:
            probe = subprocess.run(self._as_server(["test", "-w", str(self.base_dir)]), check=False)
            if probe.returncode != 0:
                raise LocalPostgresError(
                    f"user {SERVER_USER!r} cannot reach {self.base_dir}: a parent dir is not traversable "
                    "(e.g. under /root); choose a base dir elsewhere"
                )

    def _initdb(self) -> None:
        argv = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C.UTF-8",
        ]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        started = time.monotonic()
        self._run(argv)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# settings of this cluster, rewritten at every start\ninclude '{_CONF_FILE}'\n")
        logger.info(
            "postgres cluster created",
            extra={
                "action": "pg_initdb",
                "data_dir": str(self.data_dir),
                "s": round(time.monotonic() - started, 2),
            },
        )

    def _socket_dir_for_start(self) -> Path:
        if self._socket_dir is None:
            near = self.base_dir / "run"
            if len(str(near)) <= _MAX_SOCKET_DIR:
                near.mkdir(exist_ok=True)
                self._socket_dir = near
            else:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="pgs-"))
                self._owned_socket_dir = True
            self._give_to_server(self._socket_dir)
        return self._socket_dir

    def _drop_socket_dir(self) -> None:
        if self._owned_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._owned_socket_dir = False

    def _write_conf(self, socket_dir: Path) -> None:
        values: dict[str, str | int] = {
            "listen_addresses": self.HOST,
            "port": self.port,
            "unix_socket_directories": str(socket_dir),
            **self._settings,
        }
        if not self.durable:
            values |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        lines = [f"{k} = {_conf_value(v)}" for k, v in values.items()]
        conf = self.data_dir / _CONF_FILE
        conf.write_text("# written by consumer.localpg at each start\n" + "\n".join(lines) + "\n")
        self._give_to_server(conf)

    def _adopt_running(self) -> bool:
        """A server left running on this data dir (e.g. by a demo that was killed): use it as it is."""
        pid = self.pid
        if pid is None:
            return False
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        if len(lines) < 4 or not lines[3].strip().isdigit():
            raise LocalPostgresError(f"a server runs on {self.data_dir} (pid {pid}) but its port is unknown")
        self.port = int(lines[3])
        self._running = True
        logger.warning(
            "postgres already running; reusing it",
            extra={"action": "pg_adopted", "pid": pid, "port": self.port},
        )
        return True

    def _start_server(self, *, keep_port: bool = False) -> None:
        if self._adopt_running():
            return
        socket_dir = self._socket_dir_for_start()
        # A port picked by us can be taken between the probe and the bind; try a few.
        attempts = 1 if (self._fixed_port or keep_port) else 3
        for attempt in range(attempts):
            if not (self._fixed_port or keep_port):
                self.port = free_port(self.HOST)
            self._write_conf(socket_dir)
            started = time.monotonic()
            result = self._pg_ctl(
                "start", "-w", "-t", str(int(self.start_timeout)), "-l", str(self.log_file), check=False
            )
            if result.returncode == 0:
                self._running = True
                logger.info(
                    "postgres started",
                    extra={
                        "action": "pg_started",
                        "port": self.port,
                        "pid": self.pid,
                        "durable": self.durable,
                        "s": round(time.monotonic() - started, 2),
                    },
                )
                return
            if attempt + 1 == attempts or "already in use" not in _tail(self.log_file, 5):
                raise LocalPostgresError(
                    f"pg_ctl start failed (exit {result.returncode}):\n{result.stdout.strip()}\n"
                    f"--- {self.log_file} ---\n{_tail(self.log_file)}"
                )


def _conf_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    # The postmaster is re-parented when pg_ctl exits; an init that is slow to reap leaves a zombie,
    # which signal 0 still reaches but which is gone for every purpose here.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_gone(pid: int, within: float) -> None:
    # pg_ctl -w returns when postmaster.pid is gone; the process itself may take a moment longer.
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() >= deadline:
            raise LocalPostgresError(f"postmaster {pid} still running after {within}s")
        time.sleep(0.02)
