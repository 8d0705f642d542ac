"""Errors raised by ``registers`` (SPEC §19), mapped from PostgreSQL by SQLSTATE (SPEC §11).

Engine messages are shaped ``<register>: [<location>: ]<problem>``; the register and location are parsed from
that prefix for convenience only. Which class is raised depends on the SQLSTATE (and, for the generic data
errors, on what the caller was doing), never on message text.
"""

from __future__ import annotations

import json
import re
from typing import Final

import psycopg

__all__ = [
    "CONTEXTS",
    "AccumulatorError",
    "InvalidCommand",
    "InvalidDefinition",
    "InvalidQuery",
    "MigrationError",
    "NotSupported",
    "PermissionDenied",
    "RegisterExists",
    "RegisterNotEmpty",
    "RegisterNotFound",
    "SchemaNotReady",
    "TransientError",
    "from_psycopg",
    "is_data_error",
    "split_message",
]


class AccumulatorError(Exception):
    """Base of every error ``registers`` raises.

    ``sqlstate`` is PostgreSQL's code (None for errors found client-side or without a server answer),
    ``register`` the register named by the message prefix, ``message`` the full primary message.
    ``path`` is the location inside the request (``movements[3].qty``) where the engine gave one,
    ``detail`` PostgreSQL's DETAIL (the offending value, SPEC §11).
    """

    def __init__(
        self,
        sqlstate: str | None = None,
        register: str | None = None,
        message: str = "",
        *,
        path: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.register = register
        self.message = message
        self.path = path
        self.detail = detail

    @property
    def data_error(self) -> bool:
        """True when retrying cannot help (SPEC §11): dead-letter or report; else retry or stop."""
        return is_data_error(self.sqlstate)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sqlstate={self.sqlstate!r}, register={self.register!r}, "
            f"message={self.message!r}, path={self.path!r})"
        )


class RegisterNotFound(AccumulatorError):
    """42704: the register does not exist."""


class RegisterExists(AccumulatorError):
    """42P07: a register of that name already exists."""


class InvalidDefinition(AccumulatorError):
    """Data error of register_create/alter: names (42602, 42701, 42939), types, options (22xxx)."""


class InvalidCommand(AccumulatorError):
    """Data error of a write (post/unpost/repost/apply); ``path`` locates the bad value."""


class InvalidQuery(AccumulatorError):
    """Data error of a read: bad filter, bound or ``group_by``; 42809 on a turnover register."""


class NotSupported(AccumulatorError):
    """0A000: kind ``ledger``, unsupported alterations."""


class RegisterNotEmpty(AccumulatorError):
    """55000: dropping a register that holds movements without ``force``."""


class PermissionDenied(AccumulatorError):
    """42501: the connected role lacks a grant (an infrastructure error: retrying after a GRANT helps)."""


class SchemaNotReady(AccumulatorError):
    """The engine schema is missing or a bundled migration is pending (CLI exit 6)."""


class MigrationError(AccumulatorError):
    """A migration failed, or applied migrations conflict with this package (CLI exit 6)."""


class TransientError(AccumulatorError):
    """Infrastructure error (SPEC §11): connection, serialization, resources, engine fault. Retry."""


# SPEC §11 classification: data errors beyond class 22. Everything else is an infrastructure error.
_DATA_SQLSTATES: Final = frozenset(
    {"23502", "23514", "42602", "42701", "42703", "42704", "42809", "42939", "42P07", "0A000", "54000",
     "55000"}
)


def is_data_error(sqlstate: str | None) -> bool:
    """SPEC §11: class 22 and the listed codes are data errors (retrying cannot help); the rest is not.

    ``None`` (no server answer, e.g. a lost connection) is infrastructure.
    """
    if not sqlstate:
        return False
    code = sqlstate.upper()
    return code.startswith("22") or code in _DATA_SQLSTATES


# What the caller was doing decides which class the generic data errors (class 22, 23502, 23514, 42703,
# 42809, 54000) become: the same 22023 is a bad option in register_create and a bad value in a post.
_DEFINITION_CONTEXTS: Final = frozenset({"create", "alter", "definition"})
_READ_CONTEXTS: Final = frozenset({"read"})
CONTEXTS: Final = frozenset({"write", "drop", "maintenance"}) | _DEFINITION_CONTEXTS | _READ_CONTEXTS

_FIXED: Final[dict[str, type[AccumulatorError]]] = {
    "42704": RegisterNotFound,
    "42P07": RegisterExists,
    "0A000": NotSupported,
    "55000": RegisterNotEmpty,
    "42501": PermissionDenied,
    "42602": InvalidDefinition,
    "42701": InvalidDefinition,
    "42939": InvalidDefinition,
    "3F000": SchemaNotReady,  # invalid_schema_name: schema accum is missing
}


def _class_for(sqlstate: str | None, context: str) -> type[AccumulatorError]:
    if sqlstate is None:
        return TransientError
    fixed = _FIXED.get(sqlstate)
    if fixed is not None:
        return fixed
    if sqlstate == "42883":
        # A generated read function (<r>_balance …) only goes missing with its register; anywhere else a
        # missing function means the engine is not (fully) installed.
        return RegisterNotFound if context in _READ_CONTEXTS else SchemaNotReady
    if is_data_error(sqlstate):
        if context in _DEFINITION_CONTEXTS:
            return InvalidDefinition
        if context in _READ_CONTEXTS:
            return InvalidQuery
        return InvalidCommand
    # Infrastructure (SPEC §11): 08, 40, 53, 57, 58, XX, other 23 (racing 23505): retry, never dead-letter.
    return TransientError


_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUOTED: Final = r'"(?:[^"\\]|\\.)*"'
_REGISTER_RE: Final = re.compile(rf"(?P<name>{_IDENT}|\(null\)): ")
# A location is a path of names, quoted keys and 0-based indexes: movements[3].qty, commands[0].movements[2]
_LOCATION_RE: Final = re.compile(
    rf"(?P<loc>(?:{_IDENT}|{_QUOTED})(?:\[\d+\]|\.(?:{_IDENT}|{_QUOTED}))*): "
)


def split_message(message: str) -> tuple[str | None, str | None]:
    """Return (register, location) from an engine message ``<register>: [<location>: ]<problem>``.

    PostgreSQL's own messages ("permission denied for function …") have no such prefix: (None, None).
    """
    register: str | None
    if message.startswith('"'):
        try:
            decoded, end = json.JSONDecoder().raw_decode(message)
        except ValueError:  # a JSON-quoted name cut at 64 characters
            return None, None
        if not isinstance(decoded, str) or not message.startswith(": ", end):
            return None, None
        register, rest = decoded, message[end + 2 :]
    else:
        match = _REGISTER_RE.match(message)
        if match is None:
            return None, None
        name = match.group("name")
        register = None if name == "(null)" else name
        rest = message[match.end() :]
    loc = _LOCATION_RE.match(rest)
    return register, (loc.group("loc") if loc else None)


def from_psycopg(exc: psycopg.Error, *, context: str = "write") -> AccumulatorError:
    """Map a psycopg error to our hierarchy by SQLSTATE (SPEC §11, §19); the caller raises it ``from exc``.

    ``context`` is what the caller was doing: ``create``/``alter`` (definition), ``write``, ``read``,
    ``drop``, ``maintenance``. It only matters for the generic data errors.
    """
    if context not in CONTEXTS:
        raise ValueError(f"unknown error context {context!r}; expected one of {sorted(CONTEXTS)}")
    sqlstate = exc.sqlstate
    if sqlstate is None and not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # A client-side error (e.g. wrong parameter count): a bug, not a transient condition.
        return AccumulatorError(None, None, str(exc))
    message = exc.diag.message_primary or str(exc)
    register, location = split_message(message) if sqlstate else (None, None)
    cls = _class_for(sqlstate, context)
    return cls(sqlstate, register, message, path=location, detail=exc.diag.message_detail)
