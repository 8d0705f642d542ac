"""Helpers shared by the tests: ``from helpers import …`` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

__all__ = ["connect_as", "dsn_as", "dsn_for_db", "wait_until"]


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
