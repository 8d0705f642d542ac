"""Helpers shared by the tests: ``from helpers import …`` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

__all__ = [
    "CliProcess",
    "Conn",
    "Movement",
    "connect_as",
    "create_register",
    "dsn_as",
    "dsn_for_db",
    "movement",
    "one",
    "post_movements",
    "recorded_movement",
    "wait_until",
]

# What the ``conn`` fixture yields; rows come back as tuples.
Conn = psycopg.Connection[TupleRow]
# A movement as the engine's write functions take it in their JSON.
Movement = dict[str, Any]


def wait_until(check: Callable[[], bool], *, within: float, what: str, interval: float = 0.05) -> None:
    """Wait on a condition, never on time alone; fail after ``within`` seconds naming ``what``."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still false after {within}s")
        time.sleep(interval)  # poll interval; the deadline bounds the test


def dsn_for_db(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(dsn, dbname=dbname)


def dsn_as(dsn: str, role: str) -> str:
    """The same server and database, logging in as ``role`` without a password (trust auth, local servers)."""
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    params["user"] = role
    return make_conninfo("", **params)


def connect_as(dsn: str, role: str, *, autocommit: bool = True) -> psycopg.Connection[TupleRow]:
    """A connection whose session and current user is ``role`` (not a superuser, so grants apply).

    Logs in as the role where the server lets it (trust auth on the local cluster). Where it cannot (a
    password-protected server, a NOLOGIN role such as ``accum_owner``), connects with ``dsn``'s credentials
    and runs ``SET SESSION AUTHORIZATION``, which checks privileges the same way.
    """
    try:
        return psycopg.connect(dsn_as(dsn, role), autocommit=autocommit)
    except psycopg.OperationalError:
        pass
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(role)))
        conn.autocommit = autocommit  # after the SET: a rolled-back transaction must not undo it
    except BaseException:
        conn.close()
        raise
    return conn


# ---- the engine's SQL API, called the plain way -----------------------------------------------------------


def one(conn: Conn, query: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
    """The first column of the first row; the query must return a row."""
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def create_register(
    conn: Conn, name: str, dims: Mapping[str, str], res: Mapping[str, str], **opts: Any
) -> str:
    """``accum.register_create`` with ``opts`` as named arguments (``time_zone => …``); returns ``name``."""
    args = "".join(f", {k} => %({k})s" for k in opts)
    conn.execute(
        f"SELECT accum.register_create(%(n)s, %(d)s, %(r)s{args})",
        {"n": name, "d": Jsonb(dims), "r": Jsonb(res), **opts},
    )
    return name


def post_movements(conn: Conn, register: str, data: Any) -> int:
    """``accum.register_post``; returns how many movements it wrote."""
    n: int = one(conn, "SELECT accum.register_post(%s, %s)", (register, Jsonb(data)))
    return n


# ---- movements of the inventory-shaped registers (dimensions warehouse, product; resources quantity, amount)


def movement(period: Any, warehouse: int, product: Any, quantity: Any, amount: Any = 0) -> Movement:
    """A movement without a recorder (the client and the CLI take the recorder separately)."""
    return {
        "period": period,
        "warehouse": warehouse,
        "product": product,
        "quantity": quantity,
        "amount": amount,
    }


def recorded_movement(
    recorder: Any, period: Any, warehouse: int, product: Any, quantity: Any, amount: Any = 0
) -> Movement:
    """A movement carrying its recorder, as ``register_post`` and ``register_apply`` take it."""
    return {"recorder": recorder, **movement(period, warehouse, product, quantity, amount)}


# ---- the `accumulator` CLI as a child process ------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


class CliProcess:
    """`python -m consumer <command>` as a subprocess, output in `log_path`, stopped by its PID only.

    The environment is this process's without any ACCUMULATOR_* variable, plus `env`.
    """

    def __init__(self, command: str, log_path: Path, env: Mapping[str, str]) -> None:
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
        base.update({"PYTHONUNBUFFERED": "1", **env})
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", command],
            cwd=REPO,
            env=base,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, within: float) -> int:
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.pid} still running after {within}s\n{self.log()[-3000:]}") from None

    def stop(self, within: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(within)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Whatever state it is in: gone afterwards (SIGKILL past a short grace)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
