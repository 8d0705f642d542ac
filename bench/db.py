"""Where the benchmark runs: a throwaway local cluster (or ``--dsn``), one fresh database, connections."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from consumer.localpg import LocalPostgres
from registers.migrate import migrate

__all__ = ["LOCAL_SETTINGS", "Conn", "connect", "database", "server", "server_info"]

Conn = psycopg.Connection[tuple[Any, ...]]

# Non-durable (LocalPostgres adds fsync/synchronous_commit/full_page_writes=off): baselines and engine share
# the server, so both get the same settings. Room for the load in shared buffers, no checkpoint storm mid-run.
LOCAL_SETTINGS: Final[dict[str, str | int]] = {
    "shared_buffers": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
}
_REPORTED: Final = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "max_connections",
    "max_locks_per_transaction",
    "jit",
    "autovacuum",
)


def connect(dsn: str) -> Conn:
    """Autocommit (each call is its own transaction, as an application sees it); prepared from the first use,
    so engine calls and baselines both run as prepared statements after the warm-up."""
    conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=0)
    conn.execute("SET TimeZone = 'UTC'")
    return conn


@contextlib.contextmanager
def server(dsn: str | None, *, keep: bool = False) -> Iterator[str]:
    """Yields a superuser DSN: the given one, or a fresh local cluster stopped (and removed) at exit."""
    if dsn is not None:
        yield dsn
        return
    pg = LocalPostgres(durable=False, settings=LOCAL_SETTINGS)
    pg.start()
    try:
        yield pg.dsn
    finally:
        if keep:
            print(f"bench: cluster kept at {pg.base_dir} ({pg.dsn})")
        else:
            pg.close()


def _with_db(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


@contextlib.contextmanager
def database(admin_dsn: str, *, keep: bool = False) -> Iterator[str]:
    """A new database on the server, migrated; dropped at exit unless ``keep``."""
    name = f"bench_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(admin_dsn, name)
    try:
        with psycopg.connect(dsn) as conn:
            # roles are cluster-wide and the benchmark runs as a superuser: leave them alone
            migrate(conn, roles="skip")
        yield dsn
    finally:
        if keep:
            print(f"bench: database kept: {dsn}")
        else:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_info(conn: Conn) -> dict[str, Any]:
    settings = {
        name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]  # type: ignore[index]
        for name in _REPORTED
    }
    load = os.getloadavg()
    return {
        "settings": settings,
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }
