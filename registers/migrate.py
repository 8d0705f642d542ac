"""Migration runner (SPEC §3.2-§3.3): bundled ``NNNN_slug.sql`` files, applied once each, in order.

One run holds a session advisory lock, so concurrent runs serialize and the later one finds nothing to do.
Each file runs in its own transaction together with its ``accum.schema_migrations`` row. Before anything is
applied, the applied rows are checked against the package: a changed checksum or an applied version this
package does not know stops the run (``MigrationError``, CLI exit 6).

With ``owner``, every file runs under ``SET LOCAL ROLE owner``, so that role owns schema ``accum`` and all in
it. The connected role must be able to SET ROLE to it, and the owner needs CREATE on the database the first
time (to create schema ``accum``); granting that is the DBA's job, not the runner's.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, Literal

import psycopg
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate
from psycopg.rows import tuple_row

from registers import sqlfiles
from registers.errors import MigrationError, SchemaNotReady, from_psycopg

__all__ = [
    "GROUP_ROLES",
    "LOCK_KEY",
    "Migration",
    "MigrationReport",
    "MigrationStatus",
    "RolesMode",
    "ensure_group_roles",
    "ensure_ready",
    "load_migrations",
    "migrate",
    "package_version",
    "pending",
    "status",
]

logger = logging.getLogger(__name__)

SCHEMA: Final = "accum"
TABLE: Final = "schema_migrations"
# Fixed key of the session advisory lock held for a whole run ("accummig" in ASCII). Advisory locks are
# per database, so runs against different databases do not wait for each other.
LOCK_KEY: Final = 0x616363756D6D6967
# Group roles, each a member of the next: reader ∈ writer ∈ admin (SPEC §3.3).
GROUP_ROLES: Final = ("accum_reader", "accum_writer", "accum_admin")

RolesMode = Literal["create", "skip", "require"]
State = Literal["applied", "pending", "changed", "unknown"]

_FILE_RE: Final = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")

Directory = Traversable | str | os.PathLike[str]
Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Migration:
    """One bundled migration file."""

    version: int
    name: str
    checksum: str  # sha256 hex of the file's bytes
    sql: bytes = field(repr=False)


@dataclass(frozen=True)
class MigrationStatus:
    """A migration as the database sees it: ``applied``, ``pending``, ``changed`` or ``unknown``."""

    version: int
    name: str
    state: State
    checksum: str | None  # the package's checksum (None for a version unknown to the package)
    applied_at: datetime | None = None
    applied_checksum: str | None = None
    applied_package_version: str | None = None


@dataclass(frozen=True)
class MigrationReport:
    """Result of :func:`migrate`: ``applied`` in this run; ``pending`` is what a dry run would apply."""

    applied: tuple[MigrationStatus, ...]
    pending: tuple[MigrationStatus, ...]
    roles_created: tuple[str, ...]
    grants_applied: bool
    dry_run: bool
    package_version: str


def package_version() -> str:
    try:
        return metadata.version("pg-accumulator")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def load_migrations(directory: Directory | None = None) -> tuple[Migration, ...]:
    """Read ``NNNN_slug.sql`` files, sorted by version; other ``.sql`` names and duplicates are errors."""
    root: Traversable = (
        sqlfiles.migrations_dir()
        if directory is None
        else directory
        if isinstance(directory, Traversable)
        else Path(directory)
    )
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        match = _FILE_RE.match(entry.name)
        if match is None:
            raise MigrationError(message=f"migration file {entry.name!r} is not named NNNN_slug.sql")
        version = int(match.group("version"))
        if version in found:
            raise MigrationError(message=f"two migration files have version {version:04d}")
        body = entry.read_bytes()
        found[version] = Migration(version, match.group("slug"), hashlib.sha256(body).hexdigest(), body)
    return tuple(found[v] for v in sorted(found))


@dataclass(frozen=True)
class _Applied:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    package_version: str | None


def _rows(conn: Conn, query: QueryNoTemplate, params: Params | None = None) -> list[tuple[Any, ...]]:
    # Tuple rows whatever row factory the caller's connection uses.
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _value(conn: Conn, query: QueryNoTemplate, params: Params | None = None) -> Any:
    rows = _rows(conn, query, params)
    return rows[0][0] if rows else None


def _table_exists(conn: Conn) -> bool:
    return bool(_value(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{TABLE}",)))


def _read_applied(conn: Conn) -> dict[int, _Applied]:
    if not _table_exists(conn):
        return {}
    rows = _rows(
        conn,
        sql.SQL("SELECT version, name, checksum, applied_at, package_version FROM {}").format(
            sql.Identifier(SCHEMA, TABLE)
        ),
    )
    return {int(r[0]): _Applied(int(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in rows}


def _statuses(files: Sequence[Migration], applied: dict[int, _Applied]) -> list[MigrationStatus]:
    out: list[MigrationStatus] = []
    by_version = {m.version: m for m in files}
    for version in sorted(set(by_version) | set(applied)):
        m, a = by_version.get(version), applied.get(version)
        if a is None:
            assert m is not None
            out.append(MigrationStatus(version, m.name, "pending", m.checksum))
            continue
        state: State = "unknown" if m is None else "applied" if m.checksum == a.checksum else "changed"
        out.append(
            MigrationStatus(
                version,
                m.name if m else a.name,
                state,
                m.checksum if m else None,
                a.applied_at,
                a.checksum,
                a.package_version,
            )
        )
    return out


def _check_conflicts(statuses: Sequence[MigrationStatus]) -> None:
    """Refuse before anything is applied: edited released files, foreign versions, holes (SPEC §3.2)."""
    problems: list[str] = []
    for s in statuses:
        if s.state == "changed":
            problems.append(
                f"{s.version:04d}_{s.name}: checksum {s.checksum} differs from the applied "
                f"{s.applied_checksum}"
            )
        elif s.state == "unknown":
            problems.append(
                f"{s.version:04d}_{s.name}: applied (by package {s.applied_package_version}) "
                "but unknown to this package; is it older than the database?"
            )
    last_applied = max((s.version for s in statuses if s.state != "pending"), default=0)
    for s in statuses:
        if s.state == "pending" and s.version < last_applied:
            problems.append(
                f"{s.version:04d}_{s.name}: pending but older than applied version {last_applied:04d}"
            )
    if problems:
        raise MigrationError(message="migrations conflict with the database: " + "; ".join(problems))


def _check_no_extension(conn: Conn) -> None:
    ext_version = _value(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_accumulator'")
    if ext_version is not None:
        raise MigrationError(
            message=(
                f"database has the pg_accumulator extension ({ext_version}) in the same schema; export its "
                "movements, DROP EXTENSION pg_accumulator, then migrate and re-create the registers"
            )
        )


def status(conn: Conn, directory: Directory | None = None) -> list[MigrationStatus]:
    """Every known migration with its state, by version. Read-only, takes no lock."""
    files = load_migrations(directory)
    try:
        return _statuses(files, _read_applied(conn))
    except psycopg.Error as exc:
        raise from_psycopg(exc, context="read") from exc


def pending(conn: Conn, directory: Directory | None = None) -> list[MigrationStatus]:
    """Bundled migrations not yet applied (``consume``/``compact`` exit 6 when this is non-empty)."""
    return [s for s in status(conn, directory) if s.state == "pending"]


def ensure_ready(conn: Conn, directory: Directory | None = None) -> None:
    """Raise ``MigrationError`` on a conflict, ``SchemaNotReady`` when a bundled migration is pending."""
    statuses = status(conn, directory)
    _check_conflicts(statuses)
    todo = [f"{s.version:04d}_{s.name}" for s in statuses if s.state == "pending"]
    if todo:
        raise SchemaNotReady(
            message=f"schema not migrated: pending {', '.join(todo)}; run `accumulator migrate`"
        )


def _can_create_roles(conn: Conn) -> bool:
    return bool(_value(conn, "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"))


def _missing_roles(conn: Conn) -> tuple[list[str], list[tuple[str, str]]]:
    """Group roles that do not exist, and (member-of, member) pairs that are not granted yet."""
    rows = _rows(conn, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(GROUP_ROLES),))
    existing = {str(r[0]) for r in rows}
    missing = [r for r in GROUP_ROLES if r not in existing]
    links: list[tuple[str, str]] = []
    for inner, outer in itertools.pairwise(GROUP_ROLES):
        if inner in missing or outer in missing:
            links.append((inner, outer))
            continue
        granted = _value(
            conn,
            "SELECT EXISTS (SELECT FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " WHERE g.rolname = %s AND u.rolname = %s)",
            (inner, outer),
        )
        if not granted:
            links.append((inner, outer))
    return missing, links


def ensure_group_roles(
    conn: Conn, mode: RolesMode = "create", *, dry_run: bool = False
) -> list[str]:
    """Create the NOLOGIN group roles and their memberships where missing (SPEC §3.3); return roles created.

    Roles are cluster-wide, so runs against two databases may race here: a role created meanwhile counts as
    created by the other run. ``conn`` must be in autocommit mode.
    """
    if mode == "skip":
        return []
    missing, links = _missing_roles(conn)
    if not missing and not links:
        return []
    if not _can_create_roles(conn):
        what = ", ".join(missing) or ", ".join(f"{a} -> {b}" for a, b in links)
        if mode == "require":
            raise MigrationError(message=f"--roles require: role lacks CREATEROLE; missing: {what}")
        logger.warning(
            "group roles skipped: no CREATEROLE; the owner works alone",
            extra={"action": "roles_skipped", "missing": what},
        )
        return []
    if dry_run:
        return missing
    created: list[str] = []
    for role in missing:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            created.append(role)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # another run created it meanwhile
    for inner, outer in links:
        with contextlib.suppress(psycopg.errors.UniqueViolation):  # granted concurrently
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(inner), sql.Identifier(outer)))
    if created or links:
        logger.info(
            "group roles ensured", extra={"action": "roles_created", "roles": created, "links": len(links)}
        )
    return created


@contextmanager
def _autocommit(conn: Conn) -> Iterator[None]:
    """Run with autocommit on: the runner opens its own transaction per file and holds a session lock."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError(message="migrate needs a connection outside any transaction")
    before = conn.autocommit
    conn.autocommit = True
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.autocommit = before


@contextmanager
def _advisory_lock(conn: Conn) -> Iterator[None]:
    started = time.monotonic()
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    logger.debug(
        "migration lock taken",
        extra={"action": "migration_lock", "waited_ms": round((time.monotonic() - started) * 1000)},
    )
    try:
        yield
    finally:
        # A broken connection has dropped the lock with the session; do not mask the original error.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _set_owner(conn: Conn, owner: str | None) -> None:
    if owner is not None:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))


def _ensure_table(conn: Conn, owner: str | None) -> None:
    with conn.transaction():
        _set_owner(conn, owner)
        # CREATE SCHEMA checks CREATE on the database even when the schema exists, so skip it then:
        # an owner that already owns accum needs no database privilege on later runs.
        if not _value(conn, "SELECT to_regnamespace(%s) IS NOT NULL", (SCHEMA,)):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " package_version text NOT NULL)"
            ).format(sql.Identifier(SCHEMA, TABLE))
        )


def _connection_trouble(exc: psycopg.Error) -> bool:
    """Lost connection, server shutting down, out of resources: worth a retry, unlike a broken file."""
    return exc.sqlstate is None or exc.sqlstate[:2] in {"08", "53", "57", "58"}


def _apply_file(conn: Conn, m: Migration, owner: str | None, version: str) -> None:
    started = time.monotonic()
    try:
        with conn.transaction():
            _set_owner(conn, owner)
            conn.execute(m.sql)  # no parameters: sent as is, several statements allowed
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version, name, checksum, applied_at, package_version)"
                    " VALUES (%s, %s, %s, now(), %s)"
                ).format(sql.Identifier(SCHEMA, TABLE)),
                (m.version, m.name, m.checksum, version),
            )
    except psycopg.Error as exc:
        mapped = from_psycopg(exc, context="maintenance")
        if _connection_trouble(exc):
            raise mapped from exc
        problem = f"migration {m.version:04d}_{m.name} failed: {mapped.message}"
        raise MigrationError(exc.sqlstate, None, problem, detail=mapped.detail) from exc
    logger.info(
        "migration applied",
        extra={
            "action": "migration_applied",
            "version": m.version,
            "migration": m.name,
            "ms": round((time.monotonic() - started) * 1000),
        },
    )


def _grant_bookkeeping(conn: Conn, owner: str | None) -> bool:
    """Re-apply grants: the engine's ``accum._apply_grants()`` when present; readers may see the migration
    table (``consume``/``compact`` check for pending migrations as a group-role member)."""
    with conn.transaction():
        _set_owner(conn, owner)
        if _value(conn, "SELECT to_regrole('accum_reader') IS NOT NULL"):
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO accum_reader").format(sql.Identifier(SCHEMA))
            )
            conn.execute(
                sql.SQL("GRANT SELECT ON {} TO accum_reader").format(sql.Identifier(SCHEMA, TABLE))
            )
        # Any accum._apply_grants callable without arguments (its parameters, if any, have defaults).
        callable_bare = _value(
            conn,
            "SELECT EXISTS (SELECT FROM pg_proc WHERE proname = '_apply_grants'"
            " AND pronamespace = to_regnamespace('accum') AND pronargs = pronargdefaults)",
        )
        if not callable_bare:
            return False
        conn.execute("SELECT accum._apply_grants()")
    return True


def migrate(
    conn: Conn,
    *,
    owner: str | None = None,
    roles: RolesMode = "create",
    dry_run: bool = False,
    directory: Directory | None = None,
) -> MigrationReport:
    """Apply pending migrations (SPEC §3.2-§3.3). ``conn`` must be idle; its autocommit setting is restored.

    Raises ``MigrationError`` (conflicts, a failing file, the pg_accumulator extension, ``roles="require"``
    without CREATEROLE) and ``TransientError`` for connection-level failures.
    """
    if roles not in ("create", "skip", "require"):
        raise ValueError(f"roles must be create, skip or require, not {roles!r}")
    files = load_migrations(directory)
    version = package_version()
    with _autocommit(conn):
        try:
            with _advisory_lock(conn):
                return _run_locked(conn, files, owner=owner, roles=roles, dry_run=dry_run, version=version)
        except psycopg.Error as exc:
            raise from_psycopg(exc, context="maintenance") from exc


def _run_locked(
    conn: Conn,
    files: Sequence[Migration],
    *,
    owner: str | None,
    roles: RolesMode,
    dry_run: bool,
    version: str,
) -> MigrationReport:
    _check_no_extension(conn)
    statuses = _statuses(files, _read_applied(conn))
    _check_conflicts(statuses)
    pending_versions = {s.version for s in statuses if s.state == "pending"}
    todo = [m for m in files if m.version in pending_versions]
    created = ensure_group_roles(conn, roles, dry_run=dry_run)
    if dry_run:
        return MigrationReport(
            applied=(),
            pending=tuple(s for s in statuses if s.state == "pending"),
            roles_created=tuple(created),
            grants_applied=False,
            dry_run=True,
            package_version=version,
        )
    _ensure_table(conn, owner)
    for m in todo:
        _apply_file(conn, m, owner, version)
    grants = _grant_bookkeeping(conn, owner)
    applied_now = tuple(s for s in _statuses(files, _read_applied(conn)) if s.version in pending_versions)
    logger.info(
        "migrations done",
        extra={
            "action": "migrate_done",
            "applied": len(applied_now),
            "already_applied": len(statuses) - len(pending_versions),
            "package_version": version,
        },
    )
    return MigrationReport(
        applied=applied_now,
        pending=(),
        roles_created=tuple(created),
        grants_applied=grants,
        dry_run=False,
        package_version=version,
    )
