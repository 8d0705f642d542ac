"""`accumulator` command line (SPEC §17): parse, build the settings once, connect, call `registers`, print.

This is the only module that reads the environment (through `Settings`). Every command is a small handler
`(ctx, args) -> exit code`; errors travel as exceptions and `exit_code_for` turns them into §17 exit codes.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO, get_args, get_origin

import psycopg
import pydantic
from psycopg.conninfo import conninfo_to_dict

from consumer import send
from consumer.settings import ConfigError, Settings
from registers import errors
from registers import migrate as migrations
from registers.client import RegisterClient
from registers.models import RegisterDefinition, canonical_type

__all__ = [
    "EXIT_DATA",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SCHEMA",
    "EXIT_UNEXPECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "EXIT_VERIFY",
    "build_parser",
    "exit_code_for",
    "main",
]

log = logging.getLogger("accumulator.cli")

PROG = "accumulator"
EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_UNREACHABLE = 4
EXIT_DATA = 5
EXIT_SCHEMA = 6
EXIT_INTERRUPTED = 130

# Settings every command takes; the others are on the top-level parser (and on the service commands).
COMMON_SETTINGS = ("dsn", "dsn_file", "connect_timeout_ms", "log_level", "log_format")
DEMO_SETTINGS = ("home", "log_level", "log_format")

Handler = Callable[["Context", argparse.Namespace], int]


# ---------------------------------------------------------------------------------------------------------
# Errors and exit codes


class CliError(Exception):
    """An error with its exit code, reported as one line on stderr."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _connect_failure(exc: psycopg.Error) -> CliError:
    """Wrong credentials or database are configuration (2); anything else means unreachable (4)."""
    state = exc.sqlstate or ""
    message = _one_line(str(exc)) or type(exc).__name__
    if state.startswith("28") or state == "3D000":
        return CliError(f"cannot connect to PostgreSQL: {message}", EXIT_USAGE)
    return CliError(f"cannot connect to PostgreSQL: {message}", EXIT_UNREACHABLE)


def exit_code_for(exc: BaseException) -> tuple[int, str]:
    """Map any exception to a §17 exit code and its one-line message."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, errors.AccumulatorError):
        return _accumulator_exit(exc), _one_line(str(exc))
    if isinstance(exc, psycopg.OperationalError):
        return EXIT_UNREACHABLE, f"PostgreSQL connection failed: {_one_line(str(exc))}"
    if isinstance(exc, psycopg.Error):
        return _sqlstate_exit(exc.sqlstate), _one_line(str(exc))
    return EXIT_UNEXPECTED, f"unexpected {type(exc).__name__}: {_one_line(str(exc))}"


_DATA_ERRORS = (
    errors.RegisterNotFound,
    errors.RegisterExists,
    errors.InvalidDefinition,
    errors.InvalidCommand,
    errors.InvalidQuery,
    errors.NotSupported,
    errors.RegisterNotEmpty,
)


def _accumulator_exit(exc: errors.AccumulatorError) -> int:
    if isinstance(exc, errors.SchemaNotReady | errors.MigrationError):
        return EXIT_SCHEMA
    if isinstance(exc, errors.PermissionDenied):
        return EXIT_USAGE  # the DSN's role lacks a grant: a configuration problem, not bad data
    if isinstance(exc, errors.TransientError):
        state = exc.sqlstate or ""
        return EXIT_UNREACHABLE if not state or state.startswith(("08", "57P")) else EXIT_UNEXPECTED
    if isinstance(exc, _DATA_ERRORS) or errors.is_data_error(exc.sqlstate):
        return EXIT_DATA
    return EXIT_UNEXPECTED


def _sqlstate_exit(state: str | None) -> int:
    """Classify a raw driver error by SQLSTATE (SPEC §11)."""
    if state is None:
        return EXIT_UNEXPECTED
    if state in ("3F000", "42883"):  # schema accum or an API function missing: not migrated
        return EXIT_SCHEMA
    if state == "42501":
        return EXIT_USAGE
    if errors.is_data_error(state):
        return EXIT_DATA
    if state.startswith("08"):
        return EXIT_UNREACHABLE
    return EXIT_UNEXPECTED


# ---------------------------------------------------------------------------------------------------------
# Output: aligned tables by default, JSON (exact decimals) for scripts


def plain(value: Any) -> Any:
    """Models, dataclasses and enums as plain dicts, lists and scalars (decimals, dates and UUIDs kept)."""
    if isinstance(value, pydantic.BaseModel):
        return plain(value.model_dump(mode="python", by_alias=True))
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """Compact JSON; `Decimal` is written digit for digit as a JSON number (never through float)."""
    value = plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return json.dumps(str(value))
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return json.dumps(value.isoformat())
    if isinstance(value, timedelta):
        return json.dumps(value.total_seconds())
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _cell(value: Any) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return to_json(value)
    return str(value)


def _numeric_column(values: Sequence[Any]) -> bool:
    """Right-align a column whose values are all numbers (blanks allowed)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | Decimal) and not isinstance(v, bool) for v in present)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table; numbers right-aligned. No rows: the header only."""
    rows = [plain(r) for r in rows]
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    if not columns:
        return ""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    numeric = [_numeric_column([row.get(c) for row in rows]) for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


@dataclass(frozen=True)
class Output:
    """Where and how a command prints its result."""

    fmt: str
    stream: TextIO

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def text(self, text: str) -> None:
        print(text, file=self.stream)

    def data(self, value: Any) -> None:
        print(to_json(value), file=self.stream)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        text = render_table(rows, columns)
        if text:
            print(text, file=self.stream)

    def result(self, value: Any, text: str) -> None:
        """A command's result: `value` as JSON, or the sentence `text`."""
        if self.json:
            self.data(value)
        else:
            self.text(text)

    def rows(self, rows: Sequence[Mapping[str, Any]], empty: str) -> None:
        """Rows as JSON, or as a table; `empty` says so in text mode when there are none."""
        if self.json:
            self.data(rows)
        elif rows:
            self.table(rows)
        else:
            self.text(empty)


# ---------------------------------------------------------------------------------------------------------
# Context: settings, output, connections


@dataclass(frozen=True)
class Context:
    settings: Settings
    out: Output

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        """One autocommit connection bounded by `connect_timeout_ms` (exit 4 when unreachable)."""
        dsn = self.settings.database_dsn()
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise CliError(f"invalid DSN: {_one_line(str(exc))}", EXIT_USAGE) from exc
        extra: dict[str, Any] = {"connect_timeout": self.settings.connect_timeout_s}
        if "application_name" not in params:
            extra["application_name"] = PROG
        try:
            conn = psycopg.connect(dsn, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            raise _connect_failure(exc) from exc
        with conn:
            yield conn

    @contextmanager
    def client(self) -> Iterator[RegisterClient]:
        """A RegisterClient on a fresh connection, after checking that the schema is migrated (exit 6)."""
        with self.connect() as conn:
            require_schema(conn)
            yield RegisterClient(conn)


def require_schema(conn: psycopg.Connection[Any]) -> None:
    """Exit 6 unless every bundled migration is applied without conflict (the API may differ otherwise)."""
    migrations.ensure_ready(conn)


# ---------------------------------------------------------------------------------------------------------
# Argument types


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


def _key_type(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=TYPE, got {text!r}")
    return key.strip(), value.strip()


def _instant(text: str) -> date | datetime:
    """`YYYY-MM-DD` or an ISO 8601 time; without an offset it is read in the register zone by the client."""
    s = text.strip()
    try:
        if len(s) == 10:
            return date.fromisoformat(s)
        return datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time (YYYY-MM-DD, YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|+HH:MM])"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def typed_value(declared: str, raw: str) -> Any:
    """A CLI string as the JSON value the engine expects for a dimension of type `declared` (SPEC §4.3).

    Values that do not parse are sent as strings, so the engine judges them with its own error (exit 5).
    """
    try:
        t = canonical_type(declared).canonical
    except ValueError:
        t = declared.strip().lower()
    if t in ("smallint", "integer", "bigint"):
        try:
            return int(raw)
        except ValueError:
            return raw
    if t.startswith("numeric"):
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return raw
        return value if value.is_finite() else raw
    if t == "boolean":
        lowered = raw.strip().lower()
        return {"true": True, "false": False}.get(lowered, raw)
    return raw


def _pairs_to_dict(pairs: Sequence[tuple[str, str]] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in pairs or ():
        if key in result:
            raise UsageError(f"{what} {key!r} given twice")
        result[key] = value
    return result


# ---------------------------------------------------------------------------------------------------------
# Parser


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `accumulator: error: …` on stderr and exit code 2 raised as UsageError."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _setting_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str], title: str) -> None:
    """One flag per setting, defaulting to "absent" so the environment and the defaults still apply."""
    group = parser.add_argument_group(title)
    fields = Settings.model_fields
    for name in names:
        field = fields[name]
        env = "ACCUMULATOR_" + name.upper()
        default = (
            "" if field.default_factory is not None or field.default is None else f"; default {field.default}"
        )
        help_text = f"{field.description} (env {env}{default})"
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(
                _setting_flag(name),
                dest=f"setting_{name}",
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        kind: Callable[[str], Any] = str
        metavar = "VALUE"
        if name.endswith("_extra"):
            kind, metavar = _json_object, "JSON"
        elif get_origin(annotation) is Literal:
            metavar = "{" + ",".join(str(a) for a in get_args(annotation)) + "}"
        elif annotation is int or name == "metrics_port":
            metavar = "N"
        elif name in ("dsn_file", "home"):
            metavar = "PATH"
        elif name in ("dsn", "verify_dsn"):
            metavar = "DSN"
        group.add_argument(
            _setting_flag(name),
            dest=f"setting_{name}",
            type=kind,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=help_text,
        )


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default=argparse.SUPPRESS,
        help="output: aligned table (default) or JSON for scripts",
    )


def _command(
    sub: Any, name: str, handler: Handler, help_text: str, settings: Sequence[str] = COMMON_SETTINGS
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    _add_output(parser)
    _add_settings(parser, settings, "settings")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        usage="%(prog)s [--version] [--format {table,json}] [SETTING ...] COMMAND ...",
        description="Balances and turnovers over any dimensions, kept in PostgreSQL (pg-accumulator).",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage/configuration, 3 verify found problems, "
        "4 PostgreSQL unreachable, 5 data error, 6 schema not migrated or migration conflict, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_output(parser)
    _add_settings(
        parser, list(Settings.model_fields), "settings (flag > environment ACCUMULATOR_* > default)"
    )
    # `prog` given: argparse would derive it from the top-level usage line, which is abbreviated.
    sub = parser.add_subparsers(
        prog=PROG, dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )

    p = _command(sub, "migrate", cmd_migrate, "apply the bundled SQL migrations (schema accum)")
    p.add_argument(
        "--status", action="store_true", help="list applied and pending migrations, change nothing"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be applied, change nothing")
    p.add_argument(
        "--owner", metavar="ROLE", help="role to own schema accum (the connecting role may SET ROLE to)"
    )
    p.add_argument(
        "--roles",
        choices=("create", "skip", "require"),
        default="create",
        help="group roles accum_admin/writer/reader: create when allowed (default), skip, or require",
    )

    _add_register_commands(sub)

    writes: list[tuple[str, Handler, str, bool]] = [
        ("post", cmd_post, "append a document's movements", True),
        ("unpost", cmd_unpost, "remove a document's movements", False),
        ("repost", cmd_repost, "replace a document's movements ([] clears it)", True),
    ]
    for name, handler, summary, takes_movements in writes:
        p = _command(sub, name, handler, summary)
        p.add_argument("register")
        p.add_argument("recorder")
        if takes_movements:
            p.add_argument(
                "--movements",
                required=True,
                metavar="FILE",
                help="JSON array (or JSON lines) of movements; - = stdin",
            )

    p = _command(sub, "balance", cmd_balance, "balance of a register, current or at a time")
    p.add_argument("register")
    _add_dims(p)
    p.add_argument("--at", type=_instant, metavar="T", help="balance at T (inclusive); default: current")

    p = _command(sub, "turnover", cmd_turnover, "turnover between two instants, both inclusive")
    p.add_argument("register")
    p.add_argument(
        "--from", dest="start", type=_instant, metavar="T", help="from T (inclusive); default unbounded"
    )
    p.add_argument("--to", dest="end", type=_instant, metavar="T", help="to T (inclusive); default unbounded")
    _add_dims(p)
    p.add_argument("--group-by", type=_name_list, metavar="A,B", help="dimensions to group by")

    p = _command(
        sub, "verify", cmd_verify, "recompute derived tables from movements and report problems (exit 3)"
    )
    p.add_argument("registers", nargs="*", metavar="REGISTER", help="registers to verify (default: all)")
    p.add_argument("--all", action="store_true", help="verify every register")

    p = _command(sub, "rebuild", cmd_rebuild, "recompute totals and/or the balance cache from movements")
    p.add_argument("register")
    p.add_argument("--totals", action="store_true", help="rebuild the totals")
    p.add_argument("--cache", action="store_true", help="rebuild the balance cache")

    p = _command(sub, "merge", cmd_merge, "merge the high-write delta buffer into totals and cache")
    p.add_argument("register", nargs="?", help="register to merge (default: every high-write register)")
    p.add_argument(
        "--max-rows", type=_positive_int, default=10_000, metavar="N", help="delta rows per register"
    )
    p.add_argument(
        "--min-age-ms", type=_non_negative_int, default=0, metavar="N", help="only deltas older than N ms"
    )

    p = _command(
        sub,
        "demo",
        cmd_demo,
        "local PostgreSQL and Kafka, worker, compactor, a producer, live summary",
        DEMO_SETTINGS,
    )
    p.add_argument(
        "--rate", type=_positive_int, default=200, metavar="N", help="commands per second (default 200)"
    )
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    p.add_argument(
        "--reset", action="store_true", help="delete the demo's PostgreSQL and Kafka data first (jars kept)"
    )

    all_settings = list(Settings.model_fields)
    _command(
        sub, "consume", cmd_consume, "Kafka worker: apply the command topics to PostgreSQL", all_settings
    )
    p = _command(
        sub,
        "compact",
        cmd_compact,
        "compaction sidecar: merge the high-write buffer, keep partitions ahead, purge, verify",
        all_settings,
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="run one pass of every task and exit (0; 3 when verify finds problems); "
        "does nothing when another compactor leads",
    )
    p = _command(
        sub,
        "send",
        cmd_send,
        "validate JSON lines of commands, then produce them to a Kafka topic (key = recorder)",
        all_settings,
    )
    p.add_argument("--topic", help="topic to produce to (default: the first of ACCUMULATOR_KAFKA_TOPICS)")
    p.add_argument("--file", metavar="FILE", default="-", help="JSON lines, one command each; - = stdin")
    p.add_argument("--generate-ids", action="store_true", help="add a random UUID id where none is given")
    p.add_argument(
        "--skip-invalid", action="store_true", help="send the valid lines even when some are invalid"
    )
    p = _command(sub, "bench", cmd_bench, "benchmark suite (SPEC §21; needs bench/ of a source checkout)")
    p.add_argument("--scale", type=float, help="fraction of the default load (1 = 1M history movements)")
    p.add_argument("--only", type=_name_list)
    p.add_argument("--out", metavar="FILE")
    p.add_argument("--check", action="store_true")
    return parser


def _add_dims(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dim",
        dest="dims",
        type=_key_value,
        action="extend",
        nargs="+",
        metavar="K=V",
        help="dimension filter, typed as the register declares it",
    )


def _add_register_commands(sub: Any) -> None:
    reg = sub.add_parser(
        "register",
        prog=f"{PROG} register",
        help="create, alter, drop and inspect registers",
        description="registry",
    )
    _add_output(reg)
    _add_settings(reg, COMMON_SETTINGS, "settings")
    rsub = reg.add_subparsers(
        prog=f"{PROG} register",
        dest="register_command",
        metavar="ACTION",
        required=True,
        parser_class=ArgumentParser,
    )

    p = _command(rsub, "create", cmd_register_create, "create a register from a file or from flags")
    p.add_argument("--file", type=Path, metavar="F.yaml|F.json", help="register definition (YAML or JSON)")
    p.add_argument("--name")
    p.add_argument(
        "--dimension", dest="dimensions", type=_key_type, action="extend", nargs="+", metavar="K=TYPE"
    )
    p.add_argument(
        "--resource", dest="resources", type=_key_type, action="extend", nargs="+", metavar="K=TYPE"
    )
    p.add_argument("--kind", help="balance (default) or turnover")
    p.add_argument("--time-zone", help="IANA zone for day/month/year boundaries (default UTC)")
    p.add_argument("--partition-by", help="day, month (default), quarter or year")
    p.add_argument("--totals-period", help="finest totals level: day (default), month or year")
    p.add_argument("--high-write", action="store_true", default=None, help="buffer derived changes (SPEC §9)")
    p.add_argument("--recorder-type", help="text (default), bigint or uuid")
    p.add_argument(
        "--if-not-exists",
        action="store_true",
        help="succeed if an identical register exists (exit 5 if it differs)",
    )

    p = _command(rsub, "alter", cmd_register_alter, "add dimensions or resources, switch high-write mode")
    p.add_argument("name")
    p.add_argument(
        "--add-dimension", dest="add_dimensions", type=_key_type, action="extend", nargs="+", metavar="K=TYPE"
    )
    p.add_argument(
        "--backfill",
        type=_key_value,
        action="extend",
        nargs="+",
        metavar="K=VALUE",
        help="value of a new dimension on existing movements",
    )
    p.add_argument(
        "--add-resource", dest="add_resources", type=_key_type, action="extend", nargs="+", metavar="K=TYPE"
    )
    p.add_argument(
        "--high-write", action=argparse.BooleanOptionalAction, default=None, help="switch high-write mode"
    )

    p = _command(rsub, "drop", cmd_register_drop, "drop a register and all its objects")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="drop even when movements exist")

    _command(rsub, "list", cmd_register_list, "list registers")

    p = _command(rsub, "info", cmd_register_info, "show a register's definition, tables and partitions")
    p.add_argument("name")


def _version() -> str:
    try:
        return metadata.version("pg-accumulator")
    except metadata.PackageNotFoundError:
        return "unknown"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flag > environment > default: only flags actually given are passed as arguments."""
    overrides = {
        key.removeprefix("setting_"): value for key, value in vars(args).items() if key.startswith("setting_")
    }
    # A DSN flag replaces the other DSN source from the environment instead of conflicting with it.
    if "dsn" in overrides and "dsn_file" not in overrides:
        overrides["dsn_file"] = None
    if "dsn_file" in overrides and "dsn" not in overrides:
        overrides["dsn"] = None
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        raise UsageError(_settings_problem(exc)) from None


def _settings_problem(exc: pydantic.ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{_setting_flag(loc)} / ACCUMULATOR_{loc.upper()}: " if loc else ""
        problems.append(f"{where}{err['msg']}")
    return "invalid configuration: " + "; ".join(problems)


# ---------------------------------------------------------------------------------------------------------
# Logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, action and the facts passed in `extra`."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return to_json(doc)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record (pytest swaps it per test)."""

    _accumulator = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: msg key=value …`: the facts passed in `extra` follow the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        facts = " ".join(
            f"{k}={_cell(v)}" for k, v in record.__dict__.items() if k not in JsonFormatter._STANDARD
        )
        if not facts:
            return text
        head, sep, rest = text.partition("\n")  # keep a traceback below the facts
        return f"{head} {facts}{sep}{rest}"


def configure_logging(settings: Settings) -> None:
    """Route `accumulator.*` and library logs to stderr; replaces the handler of a previous call."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_accumulator", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)


# ---------------------------------------------------------------------------------------------------------
# Commands


def cmd_compact(ctx: Context, args: argparse.Namespace) -> int:
    from consumer import compactor  # imported here: only the sidecar needs the loop machinery

    return compactor.run(ctx.settings, once=args.once)


def cmd_consume(ctx: Context, args: argparse.Namespace) -> int:
    from consumer import loop  # imported here: only the worker needs the Kafka and batching machinery

    return loop.run(ctx.settings)


def cmd_send(ctx: Context, args: argparse.Namespace) -> int:
    """Validate every line before producing any (§17): invalid input sends nothing unless --skip-invalid."""
    # imported here: confluent_kafka loads only for the commands that use it
    from consumer.kafka import KafkaConfigError, client_logger, producer_config

    settings = ctx.settings
    topic = args.topic if args.topic is not None else settings.kafka_topics[0]
    if not topic.strip():
        raise UsageError("send: --topic must not be empty")
    checked = _read_commands(args.file, generate_ids=args.generate_ids)
    for invalid in checked.invalid:
        print(invalid, file=sys.stderr)
    skipped = len(checked.invalid)
    if skipped and not args.skip_invalid:
        total = skipped + len(checked.messages)
        raise CliError(
            f"send: {skipped} of {total} line(s) invalid; nothing sent (--skip-invalid sends the valid ones)",
            EXIT_DATA,
        )
    try:
        config = producer_config(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            kafka_extra=settings.kafka_extra,
            producer_extra=settings.producer_extra,
        )
    except KafkaConfigError as exc:
        raise UsageError(str(exc)) from exc
    sent = 0
    if checked.messages:  # nothing to send: no need to reach the broker
        try:
            delivery = send.produce(
                checked.messages,
                topic,
                config,
                timeout_ms=settings.connect_timeout_ms,
                progress=send.Progress(sys.stderr, len(checked.messages)),
                logger=client_logger("send"),
            )
        except (send.KafkaSetupError, send.TopicMissing) as exc:
            raise UsageError(f"send: {exc}") from exc
        except send.KafkaUnreachable as exc:
            raise CliError(f"send: {exc}", EXIT_UNREACHABLE) from exc
        if not delivery.ok:
            raise CliError(
                f"send: {delivery.failed} of {delivery.total} command(s) not delivered to {topic} "
                f"({delivery.first_error}); {delivery.sent} delivered, {delivery.unsent} not attempted",
                EXIT_UNREACHABLE,
            )
        sent = delivery.sent
    if ctx.out.json:
        ctx.out.data({"sent": sent, "skipped": skipped, "topic": topic})
    else:
        ctx.out.text(f"sent {sent} command(s) to {topic}")
        if skipped:
            ctx.out.text(f"skipped {skipped} invalid line(s)")
    return EXIT_OK


def _read_commands(source: str, *, generate_ids: bool) -> send.Checked:
    """`send.check_lines` over a file or stdin (`-`), read as bytes: values are produced as written."""
    try:
        if source == "-":
            return send.check_lines(send.read_lines(sys.stdin.buffer), generate_ids=generate_ids)
        with open(source, "rb") as stream:
            return send.check_lines(send.read_lines(stream), generate_ids=generate_ids)
    except OSError as exc:
        raise UsageError(f"send: cannot read {source}: {exc.strerror or exc}") from None


def cmd_bench(ctx: Context, args: argparse.Namespace) -> int:
    """Hand over to the suite in bench/ (a source checkout only: the wheel does not ship it)."""
    try:
        from bench.cli import main as bench_main  # optional: source checkout only
    except ImportError as exc:
        raise UsageError("bench: the suite is in bench/ of a source checkout: run `make bench`") from exc
    argv: list[str] = []
    if args.scale is not None:
        argv += ["--scale", str(args.scale)]
    if args.only:
        argv += ["--only", ",".join(args.only)]
    if args.out:
        argv += ["--out", args.out]
    if args.check:
        argv.append("--check")
    if ctx.settings.dsn is not None or ctx.settings.dsn_file is not None:
        argv += ["--dsn", ctx.settings.database_dsn()]
    return bench_main(argv)


def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as conn:
        if args.status:
            return _print_migration_status(ctx.out, migrations.status(conn))
        report = migrations.migrate(conn, owner=args.owner, roles=args.roles, dry_run=args.dry_run)
    if ctx.out.json:
        ctx.out.data(report)
        return EXIT_OK
    if report.dry_run:
        names = [_migration_name(s) for s in report.pending]
        ctx.out.text(f"dry run: would apply {', '.join(names)}" if names else "dry run: nothing to apply")
        if report.roles_created:
            ctx.out.text(f"dry run: would create roles {', '.join(report.roles_created)}")
        return EXIT_OK
    if report.applied:
        ctx.out.text(f"applied {', '.join(_migration_name(s) for s in report.applied)}")
    else:
        ctx.out.text(f"schema accum is up to date (package {report.package_version})")
    if report.roles_created:
        ctx.out.text(f"created roles {', '.join(report.roles_created)}")
    return EXIT_OK


def _migration_name(status: migrations.MigrationStatus) -> str:
    return f"{status.version:04d}_{status.name}"


def _print_migration_status(out: Output, statuses: Sequence[migrations.MigrationStatus]) -> int:
    """Applied and pending migrations; exit 6 when the database conflicts with the package."""
    rows = [
        {
            "migration": _migration_name(s),
            "state": s.state,
            "applied_at": s.applied_at,
            "package_version": s.applied_package_version,
        }
        for s in statuses
    ]
    if out.json:
        out.data(statuses)
    else:
        out.table(rows, ["migration", "state", "applied_at", "package_version"])
    conflicts = [_migration_name(s) for s in statuses if s.state in ("changed", "unknown")]
    if conflicts:
        raise CliError(f"migrations conflict with the database: {', '.join(conflicts)}", EXIT_SCHEMA)
    return EXIT_OK


def cmd_register_create(ctx: Context, args: argparse.Namespace) -> int:
    defn = _definition_from_args(args)
    with ctx.client() as client:
        created = client.create_register(defn, if_not_exists=args.if_not_exists)
    was_created = created is not False  # None (void) counts as created
    if ctx.out.json:
        ctx.out.data({"register": defn.name, "created": was_created})
    elif was_created:
        ctx.out.text(f"created register {defn.name}")
    else:
        ctx.out.text(f"register {defn.name} already exists (identical)")
    return EXIT_OK


def _definition_from_args(args: argparse.Namespace) -> RegisterDefinition:
    flags = {
        "name": args.name,
        "kind": args.kind,
        "time_zone": args.time_zone,
        "partition_by": args.partition_by,
        "totals_period": args.totals_period,
        "high_write": args.high_write,
        "recorder_type": args.recorder_type,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if args.file is not None:
        if given or args.dimensions or args.resources:
            raise UsageError("register create: give either --file or --name/--dimension/--resource, not both")
        if not args.file.is_file():
            raise UsageError(f"register create: no such file: {args.file}")
        try:
            return RegisterDefinition.from_file(args.file)
        except pydantic.ValidationError as exc:
            raise CliError(f"{args.file}: {_validation_problem(exc)}", EXIT_DATA) from None
    if not args.name:
        raise UsageError("register create: --file or --name is required")
    if not args.dimensions or not args.resources:
        raise UsageError("register create: at least one --dimension and one --resource are required")
    try:
        return RegisterDefinition(
            **given,
            dimensions=_pairs_to_dict(args.dimensions, "dimension"),
            resources=_pairs_to_dict(args.resources, "resource"),
        )
    except pydantic.ValidationError as exc:
        raise CliError(f"{args.name}: {_validation_problem(exc)}", EXIT_DATA) from None


def _validation_problem(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)


def cmd_register_alter(ctx: Context, args: argparse.Namespace) -> int:
    add_dimensions = _pairs_to_dict(args.add_dimensions, "dimension")
    add_resources = _pairs_to_dict(args.add_resources, "resource")
    raw_backfill = _pairs_to_dict(args.backfill, "backfill")
    if not (add_dimensions or add_resources or args.high_write is not None):
        raise UsageError(
            "register alter: nothing to change (--add-dimension, --add-resource, --[no-]high-write)"
        )
    unknown = sorted(set(raw_backfill) - set(add_dimensions))
    if unknown:
        raise UsageError(f"register alter: --backfill for dimensions not being added: {', '.join(unknown)}")
    backfill = {k: typed_value(add_dimensions[k], v) for k, v in raw_backfill.items()}
    with ctx.client() as client:
        client.alter_register(
            args.name,
            add_dimensions=add_dimensions or None,
            backfill=backfill or None,
            add_resources=add_resources or None,
            high_write=args.high_write,
        )
    ctx.out.result({"register": args.name, "altered": True}, f"altered register {args.name}")
    return EXIT_OK


def cmd_register_drop(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        client.drop_register(args.name, force=args.force)
    ctx.out.result({"register": args.name, "dropped": True}, f"dropped register {args.name}")
    return EXIT_OK


def cmd_register_list(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        rows = plain(client.list_registers())
    ctx.out.rows(rows, empty="no registers")
    return EXIT_OK


def cmd_register_info(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        info = client.register_info(args.name)
    if ctx.out.json:
        ctx.out.data(info)
        return EXIT_OK
    scalars = info.model_dump(exclude={"dimensions", "resources", "tables", "partitions"})
    ctx.out.table([{"field": k, "value": v} for k, v in scalars.items()], ["field", "value"])
    columns = [{"column": n, "role": "dimension", "type": t} for n, t in info.dimensions.items()]
    columns += [{"column": n, "role": "resource", "type": t} for n, t in info.resources.items()]
    ctx.out.text("")
    ctx.out.table(columns, ["column", "role", "type"])
    tables = [{"table": k, "name": v} for k, v in info.tables.model_dump().items() if v is not None]
    ctx.out.text("")
    ctx.out.table(tables, ["table", "name"])
    partitions = [
        {"partition": p.name, "from": p.from_, "to": p.to, "default": p.is_default} for p in info.partitions
    ]
    ctx.out.text("")
    ctx.out.table(partitions, ["partition", "from", "to", "default"])
    return EXIT_OK


def read_movements(source: str) -> list[dict[str, Any]]:
    """Movements from a file or stdin: a JSON array, one object, or JSON lines; numbers kept exact."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read movements from {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{source}: not UTF-8", EXIT_DATA) from None
    try:
        value = _loads(text)
    except ValueError as whole_error:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            value = [_loads(ln) for ln in lines]
        except ValueError:
            raise CliError(f"{source}: invalid JSON: {whole_error}", EXIT_DATA) from None
        if not lines:
            raise CliError(f"{source}: no movements", EXIT_DATA) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise CliError(f"{source}: expected a JSON array of movement objects", EXIT_DATA)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def _print_count(ctx: Context, verb: str, register: str, recorder: str, count: int) -> None:
    ctx.out.result(
        {"register": register, "recorder": recorder, verb: count},
        f"{verb} {count} movement(s): {register} {recorder}",
    )


def cmd_post(ctx: Context, args: argparse.Namespace) -> int:
    movements = read_movements(args.movements)
    with ctx.client() as client:
        count = client.post(args.register, args.recorder, movements)
    _print_count(ctx, "posted", args.register, args.recorder, count)
    return EXIT_OK


def cmd_repost(ctx: Context, args: argparse.Namespace) -> int:
    movements = read_movements(args.movements)
    with ctx.client() as client:
        count = client.repost(args.register, args.recorder, movements)
    _print_count(ctx, "reposted", args.register, args.recorder, count)
    return EXIT_OK


def cmd_unpost(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        count = client.unpost(args.register, args.recorder)
    _print_count(ctx, "unposted", args.register, args.recorder, count)
    return EXIT_OK


def _dimension_filter(client: RegisterClient, register: str, raw: Mapping[str, str]) -> dict[str, Any] | None:
    """`--dim k=v` typed as the register declares its dimensions (unknown names: the engine says 42703)."""
    if not raw:
        return None
    declared = client.register_info(register).dimensions
    return {k: typed_value(declared.get(k, "text"), v) for k, v in raw.items()}


def cmd_balance(ctx: Context, args: argparse.Namespace) -> int:
    raw_dims = _pairs_to_dict(args.dims, "--dim")
    with ctx.client() as client:
        dims = _dimension_filter(client, args.register, raw_dims)
        balance = client.balance(args.register, dims, args.at)
    result = {k: balance[k] for k in sorted(balance)}  # columns by name, as the engine orders them
    if ctx.out.json:
        ctx.out.data(result)
    else:
        ctx.out.table([result])
    return EXIT_OK


def cmd_turnover(ctx: Context, args: argparse.Namespace) -> int:
    raw_dims = _pairs_to_dict(args.dims, "--dim")
    with ctx.client() as client:
        dims = _dimension_filter(client, args.register, raw_dims)
        result = client.turnover(args.register, args.start, args.end, dims, args.group_by)
    # Group columns in the order asked for, then resources by name.
    order = list(args.group_by or [])
    rows = [
        {
            **{k: r.group[k] for k in order if k in r.group},
            **{k: v for k, v in sorted(r.group.items()) if k not in order},
            **{k: r.resources[k] for k in sorted(r.resources)},
        }
        for r in result
    ]
    ctx.out.rows(rows, empty="no turnover")
    return EXIT_OK


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    if args.all and args.registers:
        raise UsageError("verify: give register names or --all, not both")
    problems: dict[str, list[dict[str, Any]]] = {}
    with ctx.client() as client:
        names = list(args.registers) or [plain(r)["name"] for r in client.list_registers()]
        for name in names:
            problems[name] = plain(client.verify(name, problems_only=True))
    bad = {name: rows for name, rows in problems.items() if rows}
    if ctx.out.json:
        ctx.out.data([{"register": n, "ok": not rows, "problems": rows} for n, rows in problems.items()])
    else:
        for name, rows in problems.items():
            ctx.out.text(f"{name}: ok" if not rows else f"{name}: {len(rows)} problem(s)")
        if bad:
            ctx.out.table([{"register": n, **row} for n, rows in bad.items() for row in rows])
        if not names:
            ctx.out.text("no registers")
    return EXIT_VERIFY if bad else EXIT_OK


def cmd_rebuild(ctx: Context, args: argparse.Namespace) -> int:
    totals, cache = args.totals, args.cache
    with ctx.client() as client:
        if not totals and not cache:
            totals = True
            # Without flags: everything the register has (a turnover register has no cache).
            cache = plain(client.register_info(args.register)).get("kind") != "turnover"
        written = client.rebuild(args.register, totals=totals, cache=cache)
    parts = [p for p, on in (("totals", totals), ("cache", cache)) if on]
    ctx.out.result(
        {"register": args.register, "totals": totals, "cache": cache, "rows_written": written},
        f"rebuilt {' and '.join(parts)} of {args.register} ({written} rows written)",
    )
    return EXIT_OK


def cmd_merge(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        consumed = client.merge(
            args.register, max_rows=args.max_rows, min_age=timedelta(milliseconds=args.min_age_ms)
        )
    target = args.register or "all high-write registers"
    ctx.out.result(
        {"register": args.register, "merged_rows": consumed}, f"merged {consumed} delta row(s): {target}"
    )
    return EXIT_OK


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from consumer import demo  # imported here: only `demo` needs the local server machinery

    if args.duration is not None and args.duration <= 0:
        raise UsageError("demo: --duration must be positive")
    options = demo.DemoOptions(
        home=ctx.settings.home, rate=args.rate, duration=args.duration, reset=args.reset
    )
    try:
        return demo.run(options, ctx.out.stream)
    except demo.DemoError as exc:
        raise CliError(str(exc), exc.code) from exc


# ---------------------------------------------------------------------------------------------------------
# Entry point


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `accumulator` command; returns its exit code (SPEC §17)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        settings = settings_from_args(args)
        configure_logging(settings)
        out = Output(getattr(args, "format", "table"), sys.stdout)
        handler: Handler = args.handler
        return handler(Context(settings, out), args)
    except SystemExit as exc:  # --help and --version end through argparse's exit()
        return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()  # `accumulator … | head`: the reader left, nothing more to say
        return EXIT_UNEXPECTED
    except (Exception, KeyboardInterrupt) as exc:  # every failure becomes one line and an exit code
        code, message = exit_code_for(exc)
        if code == EXIT_UNEXPECTED:
            log.debug("unexpected error", exc_info=exc)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return code
