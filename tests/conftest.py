"""Session fixtures: one PostgreSQL server, cluster-wide test roles, a migrated template, a clone per test.

Server, in order: ``ACCUMULATOR_TEST_DSN`` (a superuser DSN); else a throwaway local cluster (the code
``accumulator demo`` uses); else a testcontainers PostgreSQL where a Docker engine answers. Tests never know
which. Roles are cluster-wide, so they are made once per session (and kept: other sessions may share them);
databases are per session (template) and per test (clone), and are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from typing import LiteralString

import psycopg
import pytest
from helpers import dsn_for_db
from psycopg import sql
from psycopg.rows import TupleRow

from consumer.localpg import LocalPostgres, PrerequisiteMissing
from registers.migrate import ensure_group_roles, migrate

logger = logging.getLogger(__name__)

OWNER_ROLE = "accum_owner"
# LOGIN test roles and the group role each belongs to (SPEC §21: privilege tests never run as a superuser).
TEST_ROLES: dict[str, str | None] = {
    "t_writer": "accum_writer",
    "t_reader": "accum_reader",
    "t_admin": "accum_admin",
    "t_nobody": None,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-catalog",
        action="store_true",
        default=False,
        help="rewrite tests/sql/expected_catalog.txt from the migrated schema (make catalog)",
    )


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # docker.errors.DockerException when there is no daemon
        return False


def _container_dsn() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer("postgres:15", username="postgres", dbname="postgres") as pg:
        host, port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        yield f"postgresql://{pg.username}:{pg.password}@{host}:{port}/{pg.dbname}"


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a superuser on the session's PostgreSQL server."""
    env = os.environ.get("ACCUMULATOR_TEST_DSN")
    if env:
        yield env
        return
    try:
        server = LocalPostgres(durable=False)
    except PrerequisiteMissing as missing:
        if not docker_available():
            pytest.fail(f"no PostgreSQL for the tests: {missing} (or set ACCUMULATOR_TEST_DSN)")
        yield from _container_dsn()
        return
    # close(): pg_ctl stop, then wait until the postmaster PID is gone; the temp dir is removed.
    with server:
        yield server.dsn


def _connect(dsn: str) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(dsn, autocommit=True)


def _create_role(conn: psycopg.Connection[TupleRow], role: str, options: LiteralString) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists is None:
        # Another session on a shared server may create it at the same moment.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def pg_roles(pg_dsn: str) -> dict[str, str | None]:
    """Group roles, a NOLOGIN non-superuser owner, LOGIN test roles t_writer/t_reader/t_admin/t_nobody."""
    with _connect(pg_dsn) as conn:
        ensure_group_roles(conn, "require")
        _create_role(conn, OWNER_ROLE, "NOLOGIN")
        for role, group in TEST_ROLES.items():
            _create_role(conn, role, "LOGIN")
            if group is not None:
                grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role))
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(grant)
    return dict(TEST_ROLES)


def _create_db(server_dsn: str, name: str, template: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(OWNER_ROLE))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with _connect(server_dsn) as conn:
        conn.execute(query)


def _drop_db(server_dsn: str, name: str) -> None:
    with _connect(server_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_db(pg_dsn: str, pg_roles: dict[str, str | None]) -> Iterator[str]:
    """Name of a database migrated once per session (owner ``accum_owner``), cloned by ``db_dsn``.

    The name is unique per session so two sessions can share a server (``ACCUMULATOR_TEST_DSN``).
    """
    name = f"accum_template_{uuid.uuid4().hex[:8]}"
    # The database owner has CREATE on it, which the owner role needs to create schema accum.
    _create_db(pg_dsn, name)
    try:
        with _connect(dsn_for_db(pg_dsn, name)) as conn:
            report = migrate(conn, owner=OWNER_ROLE, roles="require")
        logger.info("template migrated: %s", [m.version for m in report.applied])
        yield name
    finally:
        _drop_db(pg_dsn, name)


@pytest.fixture
def db_dsn(pg_dsn: str, template_db: str) -> Iterator[str]:
    """DSN (superuser) of this test's own clone of the migrated template; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    _create_db(pg_dsn, name, template=template_db)
    try:
        yield dsn_for_db(pg_dsn, name)
    finally:
        _drop_db(pg_dsn, name)


@pytest.fixture
def empty_db_dsn(pg_dsn: str, pg_roles: dict[str, str | None]) -> Iterator[str]:
    """DSN (superuser) of a fresh database without the engine (owner ``accum_owner``); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    _create_db(pg_dsn, name)
    try:
        yield dsn_for_db(pg_dsn, name)
    finally:
        _drop_db(pg_dsn, name)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """Autocommit superuser connection to this test's database."""
    with _connect(db_dsn) as c:
        yield c


# --- Kafka --------------------------------------------------------------------------------------------------
# Broker, in order: ``ACCUMULATOR_TEST_KAFKA`` (a bootstrap address); else a private KRaft broker on loopback
# (consumer.localkafka, the code ``accumulator demo`` uses; jars cached in <checkout>/.tools/kafka); else a
# testcontainers Kafka where a Docker engine answers. Session fixtures are lazy: only a session with a test
# that asks for ``kafka_bootstrap`` or ``kafka_topic`` starts a broker.


def _kafka_container_bootstrap() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer() as kafka:
        yield str(kafka.get_bootstrap_server())


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of the session's Kafka broker (topics are never auto-created on the local one)."""
    env = os.environ.get("ACCUMULATOR_TEST_KAFKA")
    if env:
        yield env
        return
    from pathlib import Path

    from consumer.localkafka import LocalKafka

    cache_dir = Path(__file__).resolve().parents[1] / ".tools" / "kafka"
    try:
        # die_with_parent: a test run killed half way leaves no JVM behind.
        broker = LocalKafka(cache_dir=cache_dir, die_with_parent=True)
    except PrerequisiteMissing as missing:
        if not docker_available():
            pytest.fail(f"no Kafka for the tests: {missing} (or set ACCUMULATOR_TEST_KAFKA)")
        yield from _kafka_container_bootstrap()
        return
    # close(): SIGTERM, wait until the broker's PID is gone (SIGKILL past a deadline); temp dir removed.
    with broker:
        yield broker.bootstrap


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A topic of 3 partitions made for this test only (unique name), deleted afterwards."""
    from consumer.localkafka import create_topics, delete_topics

    name = f"t_{uuid.uuid4().hex}"
    create_topics(kafka_bootstrap, [name], partitions=3)
    try:
        yield name
    finally:
        try:
            # with the dead-letter topic the worker creates (or a test made) for it
            delete_topics(kafka_bootstrap, [name, f"{name}.dlq"], timeout=10)
        except Exception as exc:  # cleanup only: a broker a test stopped must not fail the test here
            logger.warning("could not delete topic %s: %s", name, exc)
