"""Where the benchmark runs: a throwaway local cluster (or ``--dsn``), one fresh database, connections."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from consumer.localpg import LocalPostgres
from registers.migrate import migrate

__all__ = [
    "LOCAL_SETTINGS",
    "Conn",
    "connect",
    "database",
    "is_durable",
    "server",
    "server_info",
    "with_session_settings",
]

Conn = psycopg.Connection[tuple[Any, ...]]

# Baselines and engine share the server, so both get the same settings. Room for the load in shared buffers,
# no checkpoint storm mid-run. None of these is about durability: LocalPostgres adds fsync/synchronous_commit/
# full_page_writes=off unless the cluster is durable (then PostgreSQL's defaults hold).
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


def with_session_settings(dsn: str, settings: Mapping[str, str]) -> str:
    """The DSN with ``-c name=value`` added to its ``options``: every session opened with it starts with
    those settings, as if it had run ``SET`` first (options already in the DSN are kept)."""
    given = str(conninfo_to_dict(dsn).get("options") or "")
    extra = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return make_conninfo(dsn, options=f"{given} {extra}".strip())


def is_durable(fsync: str, synchronous_commit: str) -> bool:
    """Whether a commit returns only after its WAL is on disk: fsync on and synchronous_commit not off
    (local, on, remote_write and remote_apply all wait for the local flush)."""
    return fsync == "on" and synchronous_commit != "off"


@contextlib.contextmanager
def server(dsn: str | None, *, keep: bool = False, durable: bool = False) -> Iterator[str]:
    """Yields a superuser DSN: the given one, or a fresh local cluster stopped (and removed) at exit.

    ``durable`` keeps PostgreSQL's default fsync, synchronous_commit and full_page_writes (all on) on the
    local cluster; it does not change a given server."""
    if dsn is not None:
        yield dsn
        return
    pg = LocalPostgres(durable=durable, settings=LOCAL_SETTINGS)
    pg.start()
    try:
        yield pg.dsn
    finally:
        if keep:
            print(f"bench: cluster kept at {pg.base_dir} ({pg.dsn}, postmaster pid {pg.pid})")
        else:
            pg.close()  # pg_ctl stop on its data dir; if that fails, a signal to its postmaster PID only


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
