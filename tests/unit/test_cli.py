"""The `accumulator` CLI without a database: parsing, settings, output, exit codes (SPEC §17-§18)."""

from __future__ import annotations

import argparse
import io
import json
import logging
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumer import cli
from consumer.cli import (
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SCHEMA,
    EXIT_UNEXPECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_parser,
    exit_code_for,
    main,
    read_movements,
    render_table,
    settings_from_args,
    to_json,
    typed_value,
)
from consumer.settings import ConfigError, Settings
from registers import errors


@pytest.fixture(autouse=True)
def _no_accumulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's ACCUMULATOR_* variables must not leak into these tests."""
    import os

    for key in list(os.environ):
        if key.startswith("ACCUMULATOR_"):
            monkeypatch.delenv(key)


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_spec_command_exists() -> None:
    names = {" ".join(p) for p in COMMANDS}
    expected = {
        "migrate", "register", "register create", "register alter", "register drop", "register list",
        "register info", "post", "unpost", "repost", "balance", "turnover", "verify", "rebuild", "merge",
        "demo", "consume", "compact", "send", "bench",
    }  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_of_every_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"usage: accumulator {' '.join(path)}")


def test_top_level_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "Exit codes" in capsys.readouterr().out
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("accumulator ")


USAGE_ERRORS = [
    pytest.param([], "required: COMMAND", id="no-command"),
    pytest.param(["nope"], "invalid choice", id="unknown-command"),
    pytest.param(["register"], "required: ACTION", id="register-no-action"),
    pytest.param(["balance"], "required: register", id="balance-no-register"),
    pytest.param(["balance", "r", "--at", "tomorrow"], "is not a date or time", id="bad-at"),
    pytest.param(["turnover", "r", "--from", "2026-13-01"], "is not a date or time", id="bad-from"),
    pytest.param(["balance", "r", "--dim", "warehouse"], "expected NAME=VALUE", id="dim-without-value"),
    pytest.param(["balance", "r", "--dim", "a=1", "a=2"], "given twice", id="dim-twice"),
    pytest.param(["turnover", "r", "--group-by", "a,,b"], "comma-separated", id="bad-group-by"),
    pytest.param(["post", "r", "doc"], "required: --movements", id="post-no-movements"),
    pytest.param(["merge", "--max-rows", "0"], "at least 1", id="merge-max-rows"),
    pytest.param(["merge", "--min-age-ms", "-1"], "must not be negative", id="merge-min-age"),
    pytest.param(["migrate", "--roles", "maybe"], "invalid choice", id="migrate-roles"),
    pytest.param(["balance", "r", "--format", "xml"], "invalid choice", id="bad-format"),
    pytest.param(["register", "create"], "--file or --name is required", id="create-nothing"),
    pytest.param(["register", "create", "--name", "r"], "at least one --dimension", id="create-no-columns"),
    pytest.param(
        ["register", "create", "--file", "x.yaml", "--name", "r"], "not both", id="create-file-and-flags"
    ),
    pytest.param(
        ["register", "create", "--file", "/nonexistent/r.yaml"], "no such file", id="create-no-file"
    ),
    pytest.param(
        ["register", "create", "--name", "r", "--dimension", "a"], "NAME=TYPE", id="dimension-no-type"
    ),
    pytest.param(["register", "alter", "r"], "nothing to change", id="alter-nothing"),
    pytest.param(
        ["register", "alter", "r", "--add-resource", "x=integer", "--backfill", "k=1"],
        "not being added",
        id="backfill-without-dimension",
    ),
    pytest.param(["verify", "r", "--all"], "not both", id="verify-names-and-all"),
    pytest.param(["demo", "--duration", "0"], "must be positive", id="demo-duration"),
    pytest.param(["demo", "--rate", "0"], "at least 1", id="demo-rate"),
    pytest.param(["register", "list"], "no database given", id="no-dsn"),
    pytest.param(["--log-level", "chatty", "register", "list"], "ACCUMULATOR_LOG_LEVEL", id="bad-log-level"),
    pytest.param(["register", "list", "--connect-timeout-ms", "0"], "connect-timeout-ms", id="bad-timeout"),
    pytest.param(["register", "list", "--dsn", "host=h port"], "invalid DSN", id="bad-dsn"),
    pytest.param(["--kafka-extra", "[1]", "consume"], "expected a JSON object", id="kafka-extra-not-object"),
    pytest.param(["compact", "--once"], "no database given", id="compact-no-dsn"),
    pytest.param(["send", "--topic", " "], "--topic must not be empty", id="send-empty-topic"),
    pytest.param(["bench", "--scale", "x"], "invalid float value", id="bench-bad-scale"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    error_lines = [line for line in err.splitlines() if line.startswith("accumulator: error: ")]
    assert len(error_lines) == 1, err


def test_invalid_definition_from_flags_is_a_data_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["register", "create", "--name", "Bad-Name", "--dimension", "a=text", "--resource", "q=integer"]
    assert main(argv) == EXIT_DATA
    assert "accumulator: error: Bad-Name: name" in capsys.readouterr().err


def test_invalid_definition_file_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ndimensions: {a: float}\nresources: {q: integer}\n")
    assert main(["register", "create", "--file", str(path)]) == EXIT_DATA
    assert "not allowed" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgres_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{_free_port()}/nothing"
    assert main(["register", "list", "--dsn", dsn, "--connect-timeout-ms", "2000"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith("accumulator: error: cannot connect to PostgreSQL:")
    assert len(err.strip().splitlines()) == 1


# ---- settings: flag > environment > default -------------------------------------------------------------


def _settings(argv: list[str]) -> Settings:
    return settings_from_args(build_parser().parse_args(argv))


def test_settings_defaults_match_spec() -> None:
    s = Settings()
    assert s.dsn is None
    assert s.dsn_file is None
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.kafka_group_id == "accumulator"
    assert s.kafka_client_id == f"accumulator-{socket.gethostname()}"
    assert s.kafka_topics == ("accumulator.commands",)
    assert s.kafka_dlq_topic == ""
    assert s.kafka_auto_offset_reset == "earliest"
    assert s.kafka_extra == {}
    assert s.consumer_extra == {}
    assert s.producer_extra == {}
    assert (s.batch_max_messages, s.batch_max_bytes, s.batch_max_wait_ms) == (1000, 8_388_608, 250)
    assert (s.retry_initial_ms, s.retry_max_ms) == (500, 30_000)
    assert s.connect_timeout_ms == 10_000
    assert s.dedupe_retention_hours == 168
    assert s.shutdown_grace_ms == 25_000
    assert s.migrate_on_start is False
    assert s.metrics_host == "0.0.0.0"
    assert (s.metrics_port_for("consume"), s.metrics_port_for("compact")) == (9400, 9401)
    assert s.liveness_timeout_ms == 120_000
    assert (s.merge_interval_ms, s.merge_delay_ms, s.merge_batch) == (5000, 2000, 10_000)
    assert s.partitions_ahead == 3
    assert (s.maintenance_interval_ms, s.leader_poll_ms) == (3_600_000, 5000)
    assert (s.verify_interval_ms, s.verify_timeout_ms) == (600_000, 300_000)
    assert s.verify_dsn is None
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert s.home == Path(".accumulator")


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(["register", "list"]).connect_timeout_ms == 10_000
    monkeypatch.setenv("ACCUMULATOR_CONNECT_TIMEOUT_MS", "5000")
    assert _settings(["register", "list"]).connect_timeout_ms == 5000
    assert _settings(["register", "list", "--connect-timeout-ms", "3000"]).connect_timeout_ms == 3000
    # Flags work before the command too.
    assert _settings(["--connect-timeout-ms", "4000", "register", "list"]).connect_timeout_ms == 4000


def test_environment_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCUMULATOR_KAFKA_TOPICS", "a, b,c")
    monkeypatch.setenv("ACCUMULATOR_KAFKA_EXTRA", '{"security.protocol": "SSL", "retries": 3}')
    monkeypatch.setenv("ACCUMULATOR_MIGRATE_ON_START", "true")
    monkeypatch.setenv("ACCUMULATOR_METRICS_PORT", "9555")
    monkeypatch.setenv("ACCUMULATOR_LOG_LEVEL", "debug")
    s = Settings()
    assert s.kafka_topics == ("a", "b", "c")
    assert s.kafka_extra == {"security.protocol": "SSL", "retries": 3}
    assert s.migrate_on_start is True
    assert s.metrics_port_for("compact") == 9555
    assert s.log_level == "DEBUG"


def test_settings_flags_of_every_kind() -> None:
    argv = ["--kafka-topics", "x,y", "--producer-extra", '{"linger.ms": 5}', "--migrate-on-start"]
    s = _settings([*argv, "--metrics-port", "0", "--home", "/tmp/h", "consume"])
    assert s.kafka_topics == ("x", "y")
    assert s.producer_extra == {"linger.ms": 5}
    assert s.migrate_on_start is True
    assert s.metrics_port_for("consume") == 0
    assert s.home == Path("/tmp/h")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]


def test_dsn_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://u@h/db\n")
    assert Settings(dsn_file=dsn_file).database_dsn() == "postgresql://u@h/db"
    assert Settings(dsn="host=a").database_dsn() == "host=a"
    assert "host=a" not in repr(Settings(dsn="host=a"))  # secret
    with pytest.raises(ValueError, match="not both"):
        Settings(dsn="host=a", dsn_file=dsn_file)
    with pytest.raises(ConfigError, match="no database given"):
        Settings().database_dsn()
    with pytest.raises(ConfigError, match="cannot read"):
        Settings(dsn_file=tmp_path / "missing").database_dsn()
    # A --dsn flag replaces ACCUMULATOR_DSN_FILE instead of conflicting with it.
    monkeypatch.setenv("ACCUMULATOR_DSN_FILE", str(dsn_file))
    assert _settings(["register", "list"]).database_dsn() == "postgresql://u@h/db"
    assert _settings(["register", "list", "--dsn", "host=b"]).database_dsn() == "host=b"
    assert Settings().verify_database_dsn() == "postgresql://u@h/db"
    assert Settings(verify_dsn="host=standby").verify_database_dsn() == "host=standby"


def test_connect_timeout_in_libpq_seconds() -> None:
    assert Settings(connect_timeout_ms=10_000).connect_timeout_s == 10
    assert Settings(connect_timeout_ms=2500).connect_timeout_s == 3
    assert Settings(connect_timeout_ms=100).connect_timeout_s == 2  # libpq's minimum


# ---- values and output --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "raw", "expected"),
    [
        ("integer", "42", 42),
        ("int8", "-7", -7),
        ("integer", "4x", "4x"),  # left for the engine to reject (22P02)
        ("numeric(18,3)", "1.500", Decimal("1.500")),
        ("decimal(5,2)", "NaN", "NaN"),
        ("boolean", "TRUE", True),
        ("bool", "false", False),
        ("boolean", "yes", "yes"),
        ("text", "007", "007"),
        ("date", "2026-04-18", "2026-04-18"),
        ("uuid", "C0F3E2A4-4C1E-4BB0-9D5B-1F2A3B4C5D6E", "C0F3E2A4-4C1E-4BB0-9D5B-1F2A3B4C5D6E"),
    ],
)
def test_typed_value(declared: str, raw: str, expected: Any) -> None:
    value = typed_value(declared, raw)
    assert value == expected
    assert type(value) is type(expected)


def test_read_movements_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    array = tmp_path / "a.json"
    array.write_text('[{"period": "2026-04-18", "q": 1.10}, {"period": "2026-04-19", "q": 2}]')
    assert read_movements(str(array)) == [
        {"period": "2026-04-18", "q": Decimal("1.10")},
        {"period": "2026-04-19", "q": 2},
    ]
    one = tmp_path / "o.json"
    one.write_text('{"period": "2026-04-18", "q": 1}')
    assert read_movements(str(one)) == [{"period": "2026-04-18", "q": 1}]
    lines = tmp_path / "l.jsonl"
    lines.write_text('{"q": 1}\n\n{"q": 2}\n')
    assert read_movements(str(lines)) == [{"q": 1}, {"q": 2}]
    monkeypatch.setattr("sys.stdin", io.StringIO("[]"))
    assert read_movements("-") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "movement objects"),
        ('{"q": NaN}', "invalid JSON"),
        ("{", "invalid JSON"),
        ('"x"', "movement"),
    ],
)
def test_read_movements_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(cli.CliError, match=message) as info:
        read_movements(str(path))
    assert info.value.code == EXIT_DATA


def test_post_with_unreadable_file_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["post", "r", "doc", "--movements", "/nonexistent/m.json", "--dsn", "host=x"]) == EXIT_USAGE
    assert "cannot read movements" in capsys.readouterr().err


def test_to_json_keeps_decimals_exact() -> None:
    value = {"a": Decimal("1.10"), "b": [1, True, None], "c": "é", "d": Decimal("-0.000")}
    text = to_json(value)
    assert text == '{"a":1.10,"b":[1,true,null],"c":"é","d":-0.000}'
    assert json.loads(text, parse_float=Decimal) == value


def test_render_table_aligns_numbers_right() -> None:
    text = render_table([{"name": "a", "qty": Decimal("1.5")}, {"name": "bbb", "qty": Decimal("10.25")}])
    assert text.splitlines() == [
        "name    qty",
        "----  -----",
        "a       1.5",
        "bbb   10.25",
    ]
    assert render_table([], ["x"]).splitlines() == ["x", "-"]


# ---- exit codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.RegisterNotFound("42704", "r", "r: nope"), EXIT_DATA),
        (errors.InvalidCommand("22023", "r", "r: movements[0].q: bad"), EXIT_DATA),
        (errors.InvalidQuery("42809", "r", "r: turnover"), EXIT_DATA),
        (errors.RegisterNotEmpty("55000", "r", "r: not empty"), EXIT_DATA),
        (errors.RegisterExists("42P07", "r", "r: exists"), EXIT_DATA),
        (errors.NotSupported("0A000", "r", "r: ledger"), EXIT_DATA),
        (errors.SchemaNotReady(message="schema not migrated"), EXIT_SCHEMA),
        (errors.MigrationError(message="checksum"), EXIT_SCHEMA),
        (errors.TransientError("08006", None, "connection lost"), EXIT_UNREACHABLE),
        (errors.TransientError("40P01", None, "deadlock"), EXIT_UNEXPECTED),
        (errors.PermissionDenied("42501", None, "permission denied"), EXIT_USAGE),
        (ConfigError("no dsn"), EXIT_USAGE),
        (psycopg.OperationalError("server closed the connection"), EXIT_UNREACHABLE),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (RuntimeError("boom"), EXIT_UNEXPECTED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exit_code_for(exc: BaseException, code: int) -> None:
    got, message = exit_code_for(exc)
    assert got == code
    assert "\n" not in message


def test_keyboard_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(ctx: cli.Context, args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_verify", interrupted)
    assert main(["verify"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "accumulator: error: interrupted"


def test_json_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    cli.configure_logging(Settings(log_format="json", log_level="DEBUG"))
    try:
        logging.getLogger("accumulator.test").info("batch done", extra={"action": "batch", "rows": 3})
        doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert doc["msg"] == "batch done"
        assert doc["action"] == "batch"
        assert doc["rows"] == 3
        assert doc["level"] == "INFO"
        assert doc["logger"] == "accumulator.test"
        assert "ts" in doc
    finally:
        cli.configure_logging(Settings())
