"""consumer.localpg: a private cluster started, stopped, restarted and crashed on loopback."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from helpers import wait_until

from consumer import localpg
from consumer.localpg import LocalPostgres, PrerequisiteMissing

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    return localpg._alive(pid)


def value(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, connect_timeout=5) as c:
        row = c.execute(query).fetchone()
        return row[0] if row else None


def test_start_stop() -> None:
    with LocalPostgres() as pg:
        pid = pg.pid
        assert pid is not None
        assert alive(pid)
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        assert value(pg.dsn, "SELECT current_setting('fsync')") == "off"
        assert value(pg.dsn, "SELECT current_setting('max_locks_per_transaction')") == "128"
        assert value(pg.dsn, "SELECT current_setting('max_connections')") == "100"
        pg.stop()
        wait_until(lambda: not alive(pid), within=10, what="postmaster gone after stop")
        assert pg.pid is None
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn, connect_timeout=2)
        base = pg.base_dir
    assert not base.exists(), "a temporary base dir is removed on close"


def test_restart_keeps_data() -> None:
    with LocalPostgres() as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE TABLE kept AS SELECT 42 AS x")
        before = pg.pid
        pg.restart()
        assert pg.pid is not None
        assert pg.pid != before
        assert value(pg.dsn, "SELECT x FROM kept") == 42


def test_kill_immediate_then_start_again_recovers_commits() -> None:
    """Durable settings: a committed row survives an immediate stop (crash recovery on start)."""
    with LocalPostgres(durable=True) as pg:
        assert value(pg.dsn, "SELECT current_setting('fsync')") == "on"
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE TABLE t AS SELECT 7 AS x")
        pid, dsn = pg.pid, pg.dsn
        assert pid is not None
        pg.kill_immediate()
        wait_until(lambda: not alive(pid), within=10, what="postmaster gone after immediate stop")
        pg.start_again()
        assert pg.dsn == dsn
        assert value(pg.dsn, "SELECT x FROM t") == 7
        assert "not properly shut down" in pg.log_file.read_text()


def test_persistent_base_dir_is_reused() -> None:
    # As root the postgres user must traverse every parent; pytest's tmp dirs are private (0700).
    home = Path(tempfile.mkdtemp(prefix="accum-home-"))
    home.chmod(0o755)
    try:
        _reuse(home / "pg")
    finally:
        shutil.rmtree(home)


def _reuse(base: Path) -> None:
    with LocalPostgres(base) as pg, psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE demo AS SELECT 'kept' AS v")
    assert (base / "data" / "PG_VERSION").exists(), "a given base dir is kept"
    with LocalPostgres(base) as again:
        assert value(again.dsn, "SELECT v FROM demo") == "kept"
        # A server left running on the data dir (a killed demo) is reused, not started twice.
        left_running = LocalPostgres(base)
        left_running.start()
        assert (left_running.pid, left_running.dsn) == (again.pid, again.dsn)


def test_missing_server_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(localpg, "PREFERRED_BINDIR", tmp_path / "none")
    monkeypatch.setattr(localpg, "DEBIAN_BINDIRS", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteMissing, match="postgresql-15") as info:
        LocalPostgres()
    assert info.value.package == "postgresql-15"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres user")
def test_root_runs_server_as_postgres() -> None:
    with LocalPostgres() as pg:
        assert value(pg.dsn, "SELECT current_setting('data_directory')") == str(pg.data_dir)
        assert Path(pg.data_dir).stat().st_uid != 0
