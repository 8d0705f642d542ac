"""Migration runner against real PostgreSQL, with tiny migration files in a temporary directory."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import connect_as, wait_until
from psycopg.rows import TupleRow

from registers import migrate as m
from registers.errors import MigrationError, SchemaNotReady

pytestmark = pytest.mark.integration

FILES = {
    "0001_first.sql": "CREATE TABLE accum.t1 (x integer);\nINSERT INTO accum.t1 VALUES (1);\n",
    # depends on 0001, and holds a '%' that must reach the server untouched
    "0002_second.sql": "INSERT INTO accum.t1 SELECT x + 1 FROM accum.t1;\n"
    "CREATE TABLE accum.t2 AS SELECT format('%s%%', 5) AS pct;\n",
}


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, body in files.items():
        (directory / name).write_text(body)
    return directory


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return write(tmp_path / "migrations", FILES)


@pytest.fixture
def db(empty_db_dsn: str) -> Iterator[psycopg.Connection[TupleRow]]:
    with psycopg.connect(empty_db_dsn, autocommit=True) as c:
        yield c


def rows(conn: psycopg.Connection[TupleRow]) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT version, name, checksum, applied_at, package_version FROM accum.schema_migrations ORDER BY 1"
    ).fetchall()


def exists(conn: psycopg.Connection[TupleRow], regclass: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass,)).fetchone()
    return bool(row and row[0])


def test_applies_in_order(db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    assert [s.state for s in m.status(db, mdir)] == ["pending", "pending"]
    report = m.migrate(db, directory=mdir)
    assert [s.version for s in report.applied] == [1, 2]
    assert report.pending == ()
    assert db.execute("SELECT array_agg(x ORDER BY x) FROM accum.t1").fetchone() == ([1, 2],)
    assert db.execute("SELECT pct FROM accum.t2").fetchone() == ("5%",)
    got = rows(db)
    assert [(r[0], r[1], r[2], r[4]) for r in got] == [
        (1, "first", hashlib.sha256(FILES["0001_first.sql"].encode()).hexdigest(), m.package_version()),
        (2, "second", hashlib.sha256(FILES["0002_second.sql"].encode()).hexdigest(), m.package_version()),
    ]
    assert [s.state for s in m.status(db, mdir)] == ["applied", "applied"]
    assert m.pending(db, mdir) == []
    m.ensure_ready(db, mdir)


def test_rerun_is_noop(db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    m.migrate(db, directory=mdir)
    before = rows(db)
    report = m.migrate(db, directory=mdir)
    assert report.applied == ()
    assert rows(db) == before
    assert db.execute("SELECT count(*) FROM accum.t1").fetchone() == (2,)


def test_new_file_applies_alone(db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    m.migrate(db, directory=mdir)
    write(mdir, {"0003_third.sql": "CREATE TABLE accum.t3 ();"})
    assert [s.version for s in m.pending(db, mdir)] == [3]
    with pytest.raises(SchemaNotReady, match="0003_third"):
        m.ensure_ready(db, mdir)
    assert [s.version for s in m.migrate(db, directory=mdir).applied] == [3]


def test_edited_applied_file_stops_before_anything(db: psycopg.Connection[TupleRow], tmp_path: Path) -> None:
    d = write(tmp_path / "mig", {"0001_first.sql": FILES["0001_first.sql"]})
    m.migrate(db, directory=d)
    write(d, {**FILES, "0001_first.sql": FILES["0001_first.sql"] + "-- edited\n"})
    assert [s.state for s in m.status(db, d)] == ["changed", "pending"]
    with pytest.raises(MigrationError, match="0001_first: checksum"):
        m.migrate(db, directory=d)
    assert [r[0] for r in rows(db)] == [1]
    assert not exists(db, "accum.t2")
    with pytest.raises(MigrationError):
        m.ensure_ready(db, d)


def test_unknown_applied_version_stops(db: psycopg.Connection[TupleRow], tmp_path: Path) -> None:
    d = write(tmp_path / "mig", FILES)
    m.migrate(db, directory=d)
    (d / "0002_second.sql").unlink()
    write(d, {"0003_third.sql": "CREATE TABLE accum.t3 ();"})
    assert [s.state for s in m.status(db, d)] == ["applied", "unknown", "pending"]
    with pytest.raises(MigrationError, match=r"0002_second: applied .* unknown to this package"):
        m.migrate(db, directory=d)
    assert not exists(db, "accum.t3")


def test_failing_file_rolls_back_alone(db: psycopg.Connection[TupleRow], tmp_path: Path) -> None:
    d = write(
        tmp_path / "mig",
        {
            "0001_first.sql": FILES["0001_first.sql"],
            "0002_bad.sql": "CREATE TABLE accum.half (x int);\nSELECT no_such_column FROM accum.t1;\n",
        },
    )
    with pytest.raises(MigrationError, match="0002_bad failed") as info:
        m.migrate(db, directory=d)
    assert info.value.sqlstate == "42703"
    assert [r[0] for r in rows(db)] == [1]
    assert not exists(db, "accum.half")


def test_bad_file_name_is_an_error(db: psycopg.Connection[TupleRow], tmp_path: Path) -> None:
    d = write(tmp_path / "mig", {"1_first.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="NNNN_slug"):
        m.migrate(db, directory=d)


def test_dry_run_changes_nothing(db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    report = m.migrate(db, directory=mdir, dry_run=True)
    assert report.dry_run
    assert [s.version for s in report.pending] == [1, 2]
    assert report.applied == ()
    assert db.execute("SELECT to_regnamespace('accum')").fetchone() == (None,)


def test_owner_owns_everything(empty_db_dsn: str, db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    m.migrate(db, owner="accum_owner", directory=mdir)
    owners = db.execute(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'accum'::regnamespace"
        " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'accum'"
    ).fetchall()
    assert owners == [("accum_owner",)]
    # Readers may see which migrations ran (consume/compact check for pending ones as group-role members).
    with connect_as(empty_db_dsn, "t_reader") as reader:
        assert [s.state for s in m.status(reader, mdir)] == ["applied", "applied"]


def test_non_superuser_owner_migrates_itself(
    empty_db_dsn: str, db: psycopg.Connection[TupleRow], mdir: Path
) -> None:
    # accum_owner owns the database (so it has CREATE) but has no CREATEROLE: the group roles exist
    # already (session fixture), so roles="require" has nothing to create and passes.
    with connect_as(empty_db_dsn, "accum_owner") as owner:
        report = m.migrate(owner, directory=mdir, roles="require")
    assert report.roles_created == ()
    assert [s.version for s in report.applied] == [1, 2]


def test_caller_autocommit_is_restored(empty_db_dsn: str, mdir: Path) -> None:
    with psycopg.connect(empty_db_dsn) as c:
        assert not c.autocommit
        m.migrate(c, directory=mdir)
        assert not c.autocommit


def test_concurrent_runs_serialize(empty_db_dsn: str, db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    """Two runs wait on the advisory lock; once it is free, one applies everything, the other nothing."""
    db.execute("SELECT pg_advisory_lock(%s)", (m.LOCK_KEY,))
    reports: list[m.MigrationReport] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db_dsn) as c:
                reports.append(m.migrate(c, directory=mdir))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()

    def both_waiting() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        return bool(row and row[0] == 2)

    wait_until(both_waiting, within=10, what="both runs wait for the migration lock")
    db.execute("SELECT pg_advisory_unlock(%s)", (m.LOCK_KEY,))
    for t in threads:
        t.join(timeout=30)
    assert not failures
    assert sorted(len(r.applied) for r in reports) == [0, 2]
    assert [r[0] for r in rows(db)] == [1, 2]
    assert db.execute("SELECT count(*) FROM accum.t1").fetchone() == (2,)


def test_refuses_pg_accumulator_extension(db: psycopg.Connection[TupleRow], mdir: Path) -> None:
    # The extension is not installed here; a catalog row is what migrate looks at (throwaway database).
    db.execute("SET allow_system_table_mods = on")
    db.execute(
        "INSERT INTO pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)"
        " VALUES (pg_nextoid('pg_extension', 'oid', 'pg_extension_oid_index'), 'pg_accumulator',"
        " 10, 'public'::regnamespace, false, '1.1')"
    )
    with pytest.raises(MigrationError, match="pg_accumulator extension"):
        m.migrate(db, directory=mdir)
    assert db.execute("SELECT to_regnamespace('accum')").fetchone() == (None,)


def test_bundled_migrations_load() -> None:
    files = m.load_migrations()
    assert files, "sql/migrations holds the engine"
    assert [f.version for f in files] == sorted(f.version for f in files)
