"""SQLSTATE classification (SPEC §11) and mapping to registers.errors (SPEC §19)."""

from __future__ import annotations

import psycopg
import pytest

from registers import errors as e

# Every SQLSTATE named in SPEC §11, plus the infrastructure examples it lists: (sqlstate, data error?).
CLASSIFICATION = [
    ("22001", True),
    ("22003", True),
    ("22004", True),
    ("22007", True),
    ("22008", True),
    ("22023", True),
    ("22P02", True),
    ("22012", True),  # any other class 22 code
    ("42602", True),
    ("42701", True),
    ("42939", True),
    ("42703", True),
    ("42704", True),
    ("42809", True),
    ("42P07", True),
    ("0A000", True),
    ("54000", True),
    ("55000", True),
    ("23502", True),
    ("23514", True),
    ("42501", False),
    ("42883", False),
    ("23505", False),  # other class 23, e.g. a racing unique violation
    ("23503", False),
    ("08006", False),
    ("08001", False),
    ("40001", False),
    ("40P01", False),
    ("53300", False),
    ("53200", False),
    ("57014", False),
    ("57P01", False),
    ("58030", False),
    ("XX000", False),
    ("3F000", False),
    ("42P01", False),
    ("42601", False),
    ("55P03", False),  # lock_not_available: same class as 55000 but infrastructure
    ("54001", False),  # statement_too_complex: same class as 54000 but infrastructure
]


@pytest.mark.parametrize(("sqlstate", "data"), CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION])
def test_classification(sqlstate: str, data: bool) -> None:
    assert e.is_data_error(sqlstate) is data
    assert e.is_data_error(sqlstate.lower()) is data


def test_no_sqlstate_is_infrastructure() -> None:
    assert e.is_data_error(None) is False
    assert e.is_data_error("") is False


def _pg_error(sqlstate: str, message: str) -> psycopg.Error:
    return e_lookup(sqlstate)(message)


def e_lookup(sqlstate: str) -> type[psycopg.Error]:
    return psycopg.errors.lookup(sqlstate)


MAPPING = [
    # sqlstate, context, class
    ("42704", "write", e.RegisterNotFound),
    ("42704", "read", e.RegisterNotFound),
    ("42P07", "create", e.RegisterExists),
    ("0A000", "alter", e.NotSupported),
    ("55000", "drop", e.RegisterNotEmpty),
    ("42501", "write", e.PermissionDenied),
    ("42602", "create", e.InvalidDefinition),
    ("42701", "alter", e.InvalidDefinition),
    ("42939", "create", e.InvalidDefinition),
    ("22023", "create", e.InvalidDefinition),
    ("22023", "alter", e.InvalidDefinition),
    ("22023", "write", e.InvalidCommand),
    ("22023", "read", e.InvalidQuery),
    ("42703", "write", e.InvalidCommand),
    ("42703", "read", e.InvalidQuery),
    ("22007", "write", e.InvalidCommand),
    ("22P02", "read", e.InvalidQuery),
    ("42809", "read", e.InvalidQuery),
    ("42809", "maintenance", e.InvalidCommand),
    ("54000", "write", e.InvalidCommand),
    ("23502", "write", e.InvalidCommand),
    ("23514", "write", e.InvalidCommand),
    ("42883", "read", e.RegisterNotFound),
    ("42883", "write", e.SchemaNotReady),
    ("3F000", "write", e.SchemaNotReady),
    ("08006", "write", e.TransientError),
    ("40001", "write", e.TransientError),
    ("40P01", "write", e.TransientError),
    ("53300", "write", e.TransientError),
    ("57014", "read", e.TransientError),
    ("58030", "write", e.TransientError),
    ("XX000", "write", e.TransientError),
    ("23505", "write", e.TransientError),
]


@pytest.mark.parametrize(
    ("sqlstate", "context", "cls"), MAPPING, ids=[f"{s}-{c}" for s, c, _ in MAPPING]
)
def test_from_psycopg_class(sqlstate: str, context: str, cls: type[e.AccumulatorError]) -> None:
    err = e.from_psycopg(_pg_error(sqlstate, "inventory: problem"), context=context)
    assert type(err) is cls
    assert err.sqlstate == sqlstate
    assert err.data_error is e.is_data_error(sqlstate)


def test_lost_connection_is_transient() -> None:
    err = e.from_psycopg(psycopg.OperationalError("connection failed: server closed the connection"))
    assert type(err) is e.TransientError
    assert err.sqlstate is None
    assert not err.data_error
    assert type(e.from_psycopg(psycopg.InterfaceError("the connection is closed"))) is e.TransientError


def test_client_side_error_is_not_transient() -> None:
    err = e.from_psycopg(psycopg.ProgrammingError("the query has 2 placeholders but 1 parameter was passed"))
    assert type(err) is e.AccumulatorError
    assert err.sqlstate is None


def test_unknown_context_is_rejected() -> None:
    with pytest.raises(ValueError, match="context"):
        e.from_psycopg(_pg_error("22023", "x: y"), context="wirte")


SPLIT = [
    ("inventory: movements[3].qty: 1.23456 has 5 decimal places", "inventory", "movements[3].qty"),
    ('nope: register "nope" does not exist', "nope", None),
    ("stock: commands[2].movements[0].period: not a date", "stock", "commands[2].movements[0].period"),
    ("stock: time_zone: unknown zone", "stock", "time_zone"),
    ('"Bad Name": register name must match ^[a-z][a-z0-9_]*$', "Bad Name", None),
    ('"a\\"b": dimensions.x: bad', 'a"b', "dimensions.x"),
    ("(null): name must not be NULL", None, None),
    ("permission denied for function register_post", None, None),
    ('invalid input syntax for type integer: "abc"', None, None),
    ('"cut-at-64-characters-without-closing-quote', None, None),
    ('stock: movements[0]."odd key": unknown key', "stock", 'movements[0]."odd key"'),
]


@pytest.mark.parametrize(("message", "register", "location"), SPLIT)
def test_split_message(message: str, register: str | None, location: str | None) -> None:
    assert e.split_message(message) == (register, location)


def test_fields_from_message() -> None:
    err = e.from_psycopg(_pg_error("22023", "inventory: movements[3].qty: 1.23456 has 5 decimal places"))
    assert isinstance(err, e.InvalidCommand)
    assert (err.register, err.path) == ("inventory", "movements[3].qty")
    assert err.message == "inventory: movements[3].qty: 1.23456 has 5 decimal places"
    assert str(err) == err.message


@pytest.mark.integration
@pytest.mark.parametrize(
    ("context", "cls"),
    [("create", e.InvalidDefinition), ("write", e.InvalidCommand), ("read", e.InvalidQuery)],
)
def test_real_server_error(empty_db_dsn: str, context: str, cls: type[e.AccumulatorError]) -> None:
    """A real server error: SQLSTATE, primary message and DETAIL come from the diagnostics, not str(exc)."""
    with psycopg.connect(empty_db_dsn) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'inventory: movements[3].qty: 1.23456 has 5 decimal places'"
            " USING ERRCODE = '22023', DETAIL = '1.23456'; END $$"
        )
    err = e.from_psycopg(info.value, context=context)
    assert type(err) is cls
    assert (err.sqlstate, err.register, err.path) == ("22023", "inventory", "movements[3].qty")
    assert err.detail == "1.23456"
    assert err.message == "inventory: movements[3].qty: 1.23456 has 5 decimal places"


@pytest.mark.integration
def test_real_permission_error(empty_db_dsn: str) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE secret (x int)")
        conn.execute("SET ROLE t_nobody")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT * FROM secret")
    err = e.from_psycopg(info.value, context="read")
    assert type(err) is e.PermissionDenied
    assert (err.sqlstate, err.register, err.data_error) == ("42501", None, False)
