"""Wire contract of the Kafka command topics (SPEC §13.1): post / unpost / repost, decoded from message bytes.

Decoding is strict RFC 8259 JSON with every number kept as the `Decimal` it was written as (digits and
exponent), so amounts reach the engine digit for digit; the engine stays the authority on register names,
columns and types.
Bad input raises `Reject(error_class, reason)` with the dead-letter class of SPEC §13.3.
`python -m consumer.commands --schema` regenerates `consumer/schema/command.schema.json` from these models.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring  # C-accelerated when available
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias

import xxhash
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_MOVEMENTS",
    "OPS",
    "SCHEMA_PATH",
    "AnyCommand",
    "Command",
    "ErrorClass",
    "Post",
    "RegisterName",
    "Reject",
    "Repost",
    "Scalar",
    "Unpost",
    "canonical_json",
    "decode",
    "engine_json",
    "fingerprint",
    "json_schema",
    "main",
    "schema_text",
    "write_schema",
]

OPS: Final = ("post", "unpost", "repost")
MAX_MOVEMENTS: Final = 10_000
RECORDER_MAX_CHARS: Final = 1024
ID_MAX_CHARS: Final = 200
REGISTER_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]*$"  # SPEC §4.2
REGISTER_NAME_MAX: Final = 32
SCHEMA_PATH: Final = Path(__file__).parent / "schema" / "command.schema.json"

# PostgreSQL's numeric (and so jsonb) holds at most 131072 digits before the point and 16383 after it. A
# number outside that range would fail the parse of the whole batch's jsonb parameter, so it is refused here,
# per command.
_PG_MAX_ADJUSTED: Final = 131_071
_PG_MAX_SCALE: Final = 16_383

_OUT_OF_RANGE: Final = "outside PostgreSQL's numeric range (131072 digits before the point, 16383 after)"


def _pg_numeric(value: Decimal) -> bool:
    """Whether PostgreSQL's numeric (and so jsonb) can hold `value` exactly."""
    if not value.is_finite():
        return False
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    # the scale counts trailing zeros too (PostgreSQL keeps them); zero has no integer-digit limit
    return -exponent <= _PG_MAX_SCALE and (value.adjusted() <= _PG_MAX_ADJUSTED or not any(digits))


ErrorClass: TypeAlias = Literal["invalid_json", "schema_violation"]
# JSON numbers decode as Decimal; int is for commands built in Python
Scalar: TypeAlias = str | bool | int | Decimal
Movement: TypeAlias = dict[str, Scalar]

_REGISTER_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# PostgreSQL text holds neither U+0000 nor lone surrogates; both can only arrive as \u escapes.
_UNSTORABLE_RE: Final = re.compile("[\x00\ud800-\udfff]")
_RFC3339_RE: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class Reject(Exception):
    """A record that cannot become a command: `error_class` is its dead-letter class (SPEC §13.3).

    `op` and `register` are what the document named, when it named them in a valid shape (metric labels only).
    """

    def __init__(
        self, error_class: ErrorClass, reason: str, *, op: str | None = None, register: str | None = None
    ) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class: ErrorClass = error_class
        self.reason = reason
        self.op = op
        self.register = register


# --- field types --------------------------------------------------------------------------------------------


def _key_path(prefix: str, key: str) -> str:
    if _IDENT_RE.fullmatch(key):
        return f"{prefix}.{key}"
    return f"{prefix}[{json.dumps(key, ensure_ascii=False)}]"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | Decimal):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


_DECODED: Final = "decoded"  # validation context key: the value comes from `decode`, already range-checked
_JSON_SCALARS: Final = frozenset({str, Decimal, bool})  # what JSON parsing can give a movement value


def _fail(message: str) -> PydanticCustomError:
    # the message goes through a context value: keys written by producers may hold `{…}`
    return PydanticCustomError("movements", "{reason}", {"reason": message})


def _bad_movement(i: int, item: object, built: bool) -> str | None:
    """Why movement `i` is refused, or None. The slow path, run only when the fast check failed."""
    where = f"movements[{i}]"
    if not isinstance(item, Mapping):
        return f"{where}: expected an object, got {_json_type(item)}"
    if "period" not in item:
        return f"{where}.period: missing"
    if "recorder" in item:
        return f"{where}.recorder: not allowed; movements take the command's recorder"
    for key, v in item.items():
        if not isinstance(key, str):
            return f"{where}: keys must be strings, got {_json_type(key)}"
        if key == "period" and not isinstance(v, str):
            return f"{where}.period: expected a string, got {_json_type(v)}"
        # float is refused: it has already lost digits (bool is an int, and a JSON boolean)
        if not isinstance(v, str | int | Decimal):
            return f"{_key_path(where, key)}: expected a string, number or boolean, got {_json_type(v)}"
        if built and isinstance(v, Decimal) and not _pg_numeric(v):
            return f"{_key_path(where, key)}: {_OUT_OF_RANGE}"
    return None


def _movements(value: object, info: ValidationInfo, *, min_items: int) -> tuple[Movement, ...]:
    """Check the movement list by hand: one call per command, and errors that name `movements[i].key`.

    Decoded documents take a fast path (exact type checks, no copy: `decode` owns them); commands built in
    Python are checked in full and copied, so they cannot change under the caller's feet.
    """
    if not isinstance(value, list | tuple):
        raise _fail(f"movements: expected an array, got {_json_type(value)}")
    if not min_items <= len(value) <= MAX_MOVEMENTS:
        raise _fail(f"movements: {len(value)} items; expected {min_items} to {MAX_MOVEMENTS}")
    decoded = bool(info.context and info.context.get(_DECODED))
    for i, item in enumerate(value):
        if (
            decoded
            and type(item) is dict
            and type(item.get("period")) is str
            and "recorder" not in item
            and all(type(v) in _JSON_SCALARS for v in item.values())
        ):
            continue
        problem = _bad_movement(i, item, not decoded)
        if problem is not None:
            raise _fail(problem)
    if decoded:
        return tuple(value)
    return tuple(dict(item) for item in value)


_SCALAR_SCHEMA: Final[dict[str, Any]] = {"type": ["string", "number", "boolean"]}
_MOVEMENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "One movement: `period` (SPEC §5.2) and the register's dimensions and resources. "
    "The engine checks names and types.",
    "properties": {"period": {"type": "string"}},
    "required": ["period"],
    "propertyNames": {"not": {"const": "recorder"}},
    "additionalProperties": _SCALAR_SCHEMA,
}


def _movements_schema(min_items: int) -> dict[str, Any]:
    return {"type": "array", "items": _MOVEMENT_SCHEMA, "minItems": min_items, "maxItems": MAX_MOVEMENTS}


PostMovements = Annotated[
    tuple[Movement, ...],
    PlainValidator(lambda v, info: _movements(v, info, min_items=1)),
    WithJsonSchema(_movements_schema(1)),
]
RepostMovements = Annotated[
    tuple[Movement, ...],
    PlainValidator(lambda v, info: _movements(v, info, min_items=0)),
    WithJsonSchema(_movements_schema(0)),
]


def _rfc3339(value: object) -> object:
    """RFC 3339 date-time with an offset; other ISO 8601 forms (and numbers) are refused, not guessed."""
    if isinstance(value, datetime):
        return value  # commands built in Python; the aware check follows
    if not isinstance(value, str):
        got = {"got": _json_type(value)}
        raise PydanticCustomError("rfc3339", "expected an RFC 3339 date-time string, got {got}", got)
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise PydanticCustomError(
            "rfc3339", "expected an RFC 3339 date-time with an offset, like 2026-04-18T10:15:00Z"
        )
    day, hour_minute, second, fraction, offset = m.groups()
    fraction = (fraction or "")[:6]  # datetime keeps microseconds; sent_at is informational
    if second == "60":  # a leap second: RFC 3339 allows it, datetime does not
        second, fraction = "59", "999999"
    text = f"{day}T{hour_minute}:{second}{'.' + fraction if fraction else ''}{offset.upper()}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError("rfc3339", "impossible date or time") from None


RegisterName = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=REGISTER_NAME_MAX, pattern=REGISTER_NAME_PATTERN),
]
Recorder = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=RECORDER_MAX_CHARS)]
CommandId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=ID_MAX_CHARS)]
SentAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


# --- models -------------------------------------------------------------------------------------------------


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    op: str
    # `register` would shadow BaseModel.register
    register_name: RegisterName = Field(alias="register", description="register name (SPEC §4.2)")
    recorder: Recorder = Field(
        description="document the movements belong to; also the message key. The engine adds the byte limit "
        "and the register's recorder type"
    )
    id: CommandId | None = Field(
        default=None, description="idempotency key (SPEC §13.2); null is the same as absent"
    )
    sent_at: SentAt | None = Field(
        default=None, description="RFC 3339 time with an offset, informational (command age); null is absent"
    )

    def to_engine(self) -> dict[str, Any]:
        """The element of `accum.register_apply`'s array: `{op, register, recorder[, movements]}`."""
        return {"op": self.op, "register": self.register_name, "recorder": self.recorder}


class Post(_Command):
    """Append movements to a recorder (document)."""

    op: Literal["post"]
    movements: PostMovements = Field(description="1 to 10,000 movements")

    def to_engine(self) -> dict[str, Any]:
        out = super().to_engine()
        out["movements"] = self.movements
        return out


class Unpost(_Command):
    """Remove every movement of a recorder."""

    op: Literal["unpost"]


class Repost(_Command):
    """Replace a recorder's movements; an empty list clears the document."""

    op: Literal["repost"]
    movements: RepostMovements = Field(description="0 to 10,000 movements; empty clears the document")

    def to_engine(self) -> dict[str, Any]:
        out = super().to_engine()
        out["movements"] = self.movements
        return out


AnyCommand: TypeAlias = Post | Unpost | Repost  # for annotations; `Command` is the validating form
Command = Annotated[AnyCommand, Field(discriminator="op")]
_ADAPTER: Final[TypeAdapter[AnyCommand]] = TypeAdapter(Command)


# --- decoding -----------------------------------------------------------------------------------------------


class _InvalidJson(Exception):
    pass


def _refuse_constant(token: str) -> Any:
    raise _InvalidJson(f"{token} is not JSON (RFC 8259 has no NaN or Infinity)")


class _Scan:
    """Parse hooks that note schema problems instead of raising, so broken JSON is still reported as such."""

    __slots__ = ("problem",)

    def __init__(self) -> None:
        self.problem: str | None = None

    def note(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.note(f"duplicate key {json.dumps(key, ensure_ascii=False)[:80]}")
                    break
                seen.add(key)
        return out

    def number(self, text: str) -> Decimal:
        try:
            value = Decimal(text)  # exact whatever the context precision: digits and exponent as written
        except InvalidOperation:  # an exponent beyond Decimal's own range (about 10**18)
            self.note(f"number {text[:40]}: {_OUT_OF_RANGE}")
            return Decimal(0)
        # without an exponent, a short text cannot leave the range: skip the digit count
        if (len(text) > 1000 or "e" in text or "E" in text) and not _pg_numeric(value):
            self.note(f"number {text[:40]}: {_OUT_OF_RANGE}")
        return value


def _unstorable(value: object) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _key_path(out, part) if out else part
    return out


def _summary(err: ValidationError, limit: int = 5) -> str:
    """Pydantic errors as `loc: message` lines, without echoing input values."""
    lines = []
    for e in err.errors(include_url=False, include_input=False, include_context=False)[:limit]:
        loc = list(e["loc"])
        if loc and loc[0] in OPS:  # the union tag pydantic puts first
            loc = loc[1:]
        if e["type"] == "movements":  # our validator names its own location
            lines.append(e["msg"])
        else:
            lines.append(f"{_loc(loc)}: {e['msg']}" if loc else e["msg"])
    more = err.error_count() - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def decode(value: bytes | None) -> AnyCommand:
    """One Kafka message value → a command, or `Reject` (`invalid_json` before `schema_violation`)."""
    if value is None:
        raise Reject("invalid_json", "tombstone (no value)")
    if not value:
        raise Reject("invalid_json", "empty value")
    try:
        text = value.decode("utf-8")  # strict: json.loads(bytes) would also guess UTF-16 and UTF-32
    except UnicodeDecodeError as e:
        raise Reject("invalid_json", f"not UTF-8: {e.reason} at byte {e.start}") from None
    scan = _Scan()
    try:
        doc = json.loads(
            text,
            object_pairs_hook=scan.pairs,
            parse_float=scan.number,
            parse_int=scan.number,  # no int: 4,300-digit limit, and one number type for the engine
            parse_constant=_refuse_constant,
        )
    except _InvalidJson as e:
        raise Reject("invalid_json", str(e)) from None
    except json.JSONDecodeError as e:
        raise Reject("invalid_json", f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # valid or not, no command nests this deep
        raise Reject("schema_violation", "nested too deeply") from None

    if not isinstance(doc, dict):
        raise Reject("schema_violation", f"expected a JSON object, got {_json_type(doc)}")
    op = doc.get("op")
    hint_op = op if op in OPS else None
    reg = doc.get("register")
    named = isinstance(reg, str) and len(reg) <= REGISTER_NAME_MAX and _REGISTER_RE.fullmatch(reg) is not None
    hint_register = reg if named else None

    def reject(reason: str) -> Reject:
        return Reject("schema_violation", reason, op=hint_op, register=hint_register)

    if scan.problem is not None:
        raise reject(scan.problem)
    if "\\u" in text and _unstorable(doc):  # only \u escapes can produce these
        raise reject("strings must not hold U+0000 or unpaired surrogates (PostgreSQL text cannot)")
    try:
        return _ADAPTER.validate_python(doc, context={_DECODED: True})
    except ValidationError as e:
        raise reject(_summary(e)) from None


# --- writing ------------------------------------------------------------------------------------------------


def _write(value: object, out: list[str], number: Callable[[Decimal], str], sort_keys: bool) -> None:
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Decimal):
        out.append(number(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Mapping):
        out.append("{")
        items = sorted(value.items()) if sort_keys else value.items()
        for n, (k, v) in enumerate(items):
            if n:
                out.append(",")
            out.append(encode_basestring(k))
            out.append(":")
            _write(v, out, number, sort_keys)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, v in enumerate(value):
            if n:
                out.append(",")
            _write(v, out, number, sort_keys)
        out.append("]")
    elif value is None:
        out.append("null")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as command JSON")


def _plain(value: Decimal) -> str:
    """Plain notation, no trailing fractional zeros, -0 as 0: one text per numeric value."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).lstrip("0")
    if not text:
        return "0"
    while exponent < 0 and text.endswith("0"):
        text, exponent = text[:-1], exponent + 1
    if exponent >= 0:
        text += "0" * exponent
    elif len(text) > -exponent:
        text = f"{text[:exponent]}.{text[exponent:]}"
    else:
        text = "0." + "0" * (-exponent - len(text)) + text
    return "-" + text if sign else text


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, UTF-8 text, numbers in plain notation (SPEC §13.2)."""
    out: list[str] = []
    _write(value, out, _plain, True)
    return "".join(out)


def fingerprint(command: AnyCommand) -> str:
    """xxh3_128 (hex) of the canonical `{op, register, recorder, movements}`; `id` and `sent_at` excluded."""
    text: str = xxhash.xxh3_128_hexdigest(canonical_json(command.to_engine()).encode("utf-8"))
    return text


def engine_json(commands: Iterable[AnyCommand]) -> str:
    """`p_commands` of `accum.register_apply`; Decimals written as received (`1.50` stays `1.50`)."""
    out: list[str] = []
    _write([c.to_engine() for c in commands], out, str, False)
    return "".join(out)


# --- JSON Schema --------------------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """JSON Schema 2020-12 of one command message, generated from the models."""
    body = _ADAPTER.json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pg-accumulator command",
        "description": "One Kafka message of a command topic (SPEC §13.1): UTF-8 JSON, "
        "message key = recorder. "
        "Numbers are exact decimals; duplicate keys and NaN/Infinity are rejected. "
        "Generated from consumer/commands.py by `python -m consumer.commands --schema`.",
        **body,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--schema" or len(args) > 2:
        print("usage: python -m consumer.commands --schema [PATH]", file=sys.stderr)
        return 2
    print(write_schema(Path(args[1]) if len(args) == 2 else SCHEMA_PATH))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
