"""Synchronous psycopg 3 client of the engine's SQL API (SPEC §6-§10, §19).

Values travel as exact decimal text (JSON written here, never through float) and come back as `Decimal`.
Dates and naive times used as read bounds are turned into instants in the register zone by PostgreSQL
itself (`AT TIME ZONE`), so DST gaps and overlaps resolve exactly as in the engine (SPEC §5.2, §5.4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import set_json_loads
from pydantic import BaseModel

from registers.errors import (
    AccumulatorError,
    InvalidCommand,
    InvalidDefinition,
    InvalidQuery,
    RegisterExists,
    RegisterNotFound,
    from_psycopg,
)
from registers.models import (
    ApplyResult,
    DeltaStatus,
    MovementRow,
    PartitionRow,
    RegisterDefinition,
    RegisterInfo,
    RegisterStats,
    RegisterSummary,
    TurnoverRow,
    VerifyRow,
    is_register_name,
)

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["Bound", "Recorder", "RegisterClient", "to_json"]

Bound: TypeAlias = datetime | date | str
"""A read bound: aware datetime (that instant), naive datetime or date (register zone), or a §5.2 string."""

Recorder: TypeAlias = str | int | UUID
Row: TypeAlias = tuple[Any, ...]

# SPEC §5.2: date, optional local time with 1-6 fraction digits, optional Z or ±HH[:MM].
_PERIOD_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?P<offset>Z|[+-]\d{2}(?::\d{2})?)?"
)
_MOVEMENT_KEYS = ("id", "recorded_at", "recorder", "period", "dim_hash")


def _json_loads(data: str | bytes) -> Any:
    """jsonb → Python with every fractional number as Decimal: a float would already have lost digits."""
    return json.loads(data, parse_float=Decimal)


# ---- JSON out ------------------------------------------------------------------------------------------


class _Unsendable(Exception):
    """A value JSON cannot carry exactly; turned into the caller's error class with register and path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _decimal_text(value: Decimal, path: str) -> str:
    if not value.is_finite():
        raise _Unsendable(path, f"{value} is not a finite number")
    text = str(value)
    # str() switches to exponent form for small or integral-exponent values; plain digits read the same
    # everywhere and keep the scale, so use them unless the number would need an absurd amount of zeros.
    exponent = value.as_tuple().exponent
    if "E" in text and isinstance(exponent, int) and abs(exponent) <= 1000:
        text = format(value, "f")
    return text


def _encode(value: Any, path: str, out: list[str]) -> None:
    """Write `value` as JSON into `out`; Decimal digit for digit, dates and times per SPEC §5.2."""
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value, path))
    elif isinstance(value, float):
        # repr() is the shortest text that reads back as this float: the digits the caller wrote.
        out.append(_decimal_text(Decimal(repr(value)), path))
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: psycopg could not even send it
            raise _Unsendable(path, "string is not valid Unicode (lone surrogate)") from None
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            # UTC keeps the instant and avoids offsets with seconds (LMT), which §5.2 does not accept.
            value = value.astimezone(UTC)
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, date):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, UUID):
        out.append(json.dumps(str(value)))
    elif isinstance(value, BaseModel):
        _encode(value.model_dump(mode="python", by_alias=True, exclude_none=True), path, out)
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise _Unsendable(path, f"object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(item, f"{path}.{key}" if path else key, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, f"{path}[{i}]", out)
        out.append("]")
    else:
        raise _Unsendable(path, f"cannot send a value of type {type(value).__name__}")


def to_json(
    value: Any,
    path: str = "",
    *,
    register: str | None = None,
    error: type[AccumulatorError] = InvalidCommand,
) -> str:
    """JSON text for the engine; NaN, Infinity and unknown types raise `error` (22023) with their path."""
    out: list[str] = []
    try:
        _encode(value, path, out)
    except _Unsendable as exc:
        raise _client_error(error, "22023", register, exc.problem, path=exc.path) from None
    return "".join(out)


def _client_error(
    cls: type[AccumulatorError], sqlstate: str, register: str | None, problem: str, *, path: str | None = None
) -> AccumulatorError:
    """An error found before any round trip, shaped like the engine's `<register>: [<path>: ]<problem>`."""
    name = (
        "(null)"
        if register is None
        else register
        if is_register_name(register)
        else json.dumps(register)[:64]
    )
    location = f"{path}: " if path else ""
    return cls(sqlstate, register, f"{name}: {location}{problem}", path=path or None)


# ---- typed values in ------------------------------------------------------------------------------------


def _typed(canonical: str, value: Any) -> Any:
    """A dimension value as JSON rendered it (SPEC §8), in the Python type of its column."""
    try:
        if value is None or isinstance(value, bool):
            return value
        if canonical in ("smallint", "integer", "bigint"):
            return int(value)
        if canonical.startswith("numeric"):
            return Decimal(value) if isinstance(value, int | str) else value
        if canonical == "uuid":
            return UUID(str(value))
        if canonical == "date":
            return date.fromisoformat(str(value))
    except (ValueError, ArithmeticError):
        return value
    return value


def _decimals(values: Mapping[str, Any] | None) -> dict[str, Decimal] | None:
    if values is None:
        return None
    return {k: v if isinstance(v, Decimal) else Decimal(v) for k, v in values.items()}


@dataclass(frozen=True)
class _Meta:
    """What reads need to know of a register; zone and kind never change, columns may be added."""

    time_zone: str
    kind: str
    dimensions: Mapping[str, str]
    resources: Mapping[str, str]

    def knows(self, keys: Iterable[str], extra: Iterable[str] = ()) -> bool:
        known = {*self.dimensions, *self.resources, *extra}
        return all(k in known for k in keys)

    def split(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Decimal]]:
        """(typed dimension values, Decimal resources) of a result object."""
        dims = {
            k: _typed(self.dimensions.get(k, ""), v) for k, v in values.items() if k not in self.resources
        }
        resources = _decimals({k: v for k, v in values.items() if k in self.resources}) or {}
        return dims, resources


def _columns(*names: str) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


class RegisterClient:
    """The engine's SQL API over one connection or a pool (`psycopg_pool.ConnectionPool`).

    Writes run in `conn.transaction()`, so inside a caller's transaction they are a savepoint and an error
    leaves the caller's transaction usable. Reads are single statements (one snapshot each); they join a
    transaction the caller has open and never leave one open themselves. Results are frozen models with
    `Decimal` resources. Register zone, kind and columns are cached per name for reads (zone and kind cannot
    be altered; columns are refetched when a result holds an unknown key).
    """

    def __init__(self, conn_or_pool: psycopg.Connection[Any] | ConnectionPool[Any], *, schema: str = "accum"):
        self._source = conn_or_pool
        self._schema = schema
        self._meta_cache: dict[str, _Meta] = {}

    # ---- plumbing --------------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if isinstance(self._source, psycopg.Connection):
            yield self._source
        else:  # a pool: one connection per call, returned (and committed) when the call ends
            with self._source.connection() as conn:
                yield conn

    def _fn(self, name: str) -> sql.Identifier:
        return sql.Identifier(self._schema, name)

    def _run(
        self, query: sql.Composed, params: Sequence[Any], *, context: str, write: bool = False
    ) -> list[Row]:
        """Run one statement and fetch its rows; psycopg errors become AccumulatorError by SQLSTATE.

        A write gets `conn.transaction()` (a savepoint inside the caller's transaction). So does a read on
        an idle non-autocommit connection of the caller's, which would otherwise be left inside a transaction
        that swallows later writes as savepoints; a pool ends the transaction itself.
        """
        with self._connection() as conn:
            own = write or (
                conn is self._source
                and not conn.autocommit
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            )
            try:
                if own:
                    with conn.transaction():
                        return self._fetch(conn, query, params)
                return self._fetch(conn, query, params)
            except psycopg.Error as exc:
                raise from_psycopg(exc, context=context) from exc

    @staticmethod
    def _fetch(conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any]) -> list[Row]:
        with conn.cursor(row_factory=tuple_row) as cur:
            set_json_loads(_json_loads, cur)  # on this cursor only: the caller's adapters stay untouched
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def _scalar(
        self, query: sql.Composed, params: Sequence[Any], *, context: str, write: bool = False
    ) -> Any:
        rows = self._run(query, params, context=context, write=write)
        return rows[0][0] if rows else None

    def _call(self, function: str, **args: sql.Composable) -> sql.Composed:
        """`SELECT schema.function(name => expr, …)`: named notation, as SPEC §6 promises it works."""
        named = sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(k), v) for k, v in args.items())
        return sql.SQL("SELECT {}({})").format(self._fn(function), named)

    def _meta(self, register: str, *, refresh: bool = False) -> _Meta:
        meta = self._meta_cache.get(register)
        if meta is None or refresh:
            self.register_info(register)  # fills the cache
            meta = self._meta_cache[register]
        return meta

    def _read(
        self, register: str, suffix: str, args: Sequence[sql.Composable], params: Sequence[Any]
    ) -> list[Row]:
        """Call a generated read function `<register>_<suffix>`, the name checked first (SPEC §4.2)."""
        if not is_register_name(register):
            raise _client_error(InvalidQuery, "42602", register, "invalid register name")
        function = self._fn(f"{register}_{suffix}")
        query = sql.SQL("SELECT r FROM {}({}) AS r").format(function, sql.SQL(", ").join(args))
        try:
            return self._run(query, params, context="read")
        except RegisterNotFound as exc:
            if exc.sqlstate != "42883":
                raise
            # The function is missing: normally it went with its register (dropped meanwhile); if the
            # register still exists, the engine's signature differs from ours and the error says so.
            self._meta_cache.pop(register, None)
            self.register_info(register)  # raises RegisterNotFound (42704) in the usual case
            raise AccumulatorError(exc.sqlstate, register, exc.message, detail=exc.detail) from exc

    def _bound(self, register: str, value: Bound | None, what: str) -> tuple[sql.Composable, list[Any]]:
        """SQL for a timestamptz bound; PostgreSQL places local dates and times in the register zone."""
        if value is None:
            return sql.SQL("NULL::timestamptz"), []
        local: datetime | str
        if isinstance(value, datetime):
            if value.tzinfo is not None and value.utcoffset() is not None:
                return sql.SQL("%s::timestamptz"), [value]
            local = value
        elif isinstance(value, date):
            local = datetime.combine(value, time())
        elif isinstance(value, str):
            m = _PERIOD_RE.fullmatch(value)
            if m is None:
                raise _client_error(
                    InvalidQuery,
                    "22007",
                    register,
                    f"{value!r} is not YYYY-MM-DD[THH:MM[:SS[.f]]][Z|±HH[:MM]]",
                    path=what,
                )
            if m.group("offset"):
                return sql.SQL("%s::timestamptz"), [value]
            local = value
        else:
            problem = f"expected a datetime, date or string, got {type(value).__name__}"
            raise _client_error(InvalidQuery, "22023", register, problem, path=what)
        zone = self._meta(register).time_zone
        return sql.SQL("(%s::timestamp AT TIME ZONE %s::text)"), [local, zone]

    # ---- registry (SPEC §6) ----------------------------------------------------------------------------

    def create_register(self, defn: RegisterDefinition, *, if_not_exists: bool = False) -> bool:
        """Create a register; True when created.

        With `if_not_exists`, an existing register of that name with the same definition is a no-op (False);
        one with another definition raises RegisterExists.
        """
        p, j = sql.SQL("%s"), sql.SQL("%s::jsonb")
        query = self._call(
            "register_create",
            name=p,
            dimensions=j,
            resources=j,
            kind=p,
            totals_period=p,
            partition_by=p,
            high_write=sql.SQL("%s::boolean"),
            recorder_type=p,
            time_zone=p,
        )
        params = [
            defn.name,
            to_json(defn.dimensions),
            to_json(defn.resources),
            defn.kind,
            defn.totals_period,
            defn.partition_by,
            defn.high_write,
            defn.recorder_type,
            defn.time_zone,
        ]
        self._meta_cache.pop(defn.name, None)
        try:
            self._run(query, params, context="create", write=True)
        except RegisterExists:
            if not if_not_exists:
                raise
            existing = self.register_info(defn.name).definition()
            if not existing.same_as(defn):
                problem = (
                    f"a register of this name exists with another definition: {existing.model_dump_json()}"
                )
                raise _client_error(RegisterExists, "42P07", defn.name, problem) from None
            return False
        return True

    def alter_register(
        self,
        name: str,
        *,
        add_dimensions: Mapping[str, str] | None = None,
        backfill: Mapping[str, Any] | None = None,
        add_resources: Mapping[str, str] | None = None,
        high_write: bool | None = None,
    ) -> None:
        """Add dimensions (old movements take `backfill`) or resources (0 on old rows); switch high_write."""

        def js(value: Mapping[str, Any] | None, path: str) -> str | None:
            return None if value is None else to_json(value, path, register=name, error=InvalidDefinition)

        j = sql.SQL("%s::jsonb")
        query = self._call(
            "register_alter",
            p_name=sql.SQL("%s"),
            add_dimensions=j,
            add_resources=j,
            high_write=sql.SQL("%s::boolean"),
            backfill=j,
        )
        params = [
            name,
            js(add_dimensions, "add_dimensions"),
            js(add_resources, "add_resources"),
            high_write,
            js(backfill, "backfill"),
        ]
        self._meta_cache.pop(name, None)
        self._run(query, params, context="alter", write=True)

    def drop_register(self, name: str, *, force: bool = False) -> None:
        """Drop a register; one holding movements needs `force` (else RegisterNotEmpty)."""
        self._meta_cache.pop(name, None)
        query = self._call("register_drop", name=sql.SQL("%s"), force=sql.SQL("%s::boolean"))
        self._run(query, [name, force], context="drop", write=True)

    def list_registers(self) -> list[RegisterSummary]:
        cols = (
            "name",
            "kind",
            "dimensions",
            "resources",
            "movements_count",
            "created_at",
            "high_write",
            "time_zone",
        )
        query = sql.SQL("SELECT {} FROM {}()").format(_columns(*cols), self._fn("register_list"))
        rows = self._run(query, [], context="read")
        return [RegisterSummary.model_validate(dict(zip(cols, row, strict=True))) for row in rows]

    def register_info(self, name: str) -> RegisterInfo:
        query = self._call("register_info", p_name=sql.SQL("%s"))
        info = RegisterInfo.model_validate(self._scalar(query, [name], context="read"))
        self._meta_cache[name] = _Meta(info.time_zone, info.kind, info.dimensions, info.resources)
        return info

    # ---- writes (SPEC §7) ------------------------------------------------------------------------------

    def post(self, register: str, recorder: Recorder, movements: Iterable[Mapping[str, Any]]) -> int:
        """Append movements to `recorder`'s document; returns movements inserted.

        Each item gets `"recorder"`; an item naming another recorder raises InvalidCommand. Items hold
        `period` (datetime, date or a SPEC §5.2 string; naive means the register zone), every dimension and
        resource (Decimal, int or decimal string; floats are sent as their shortest repr).
        """
        recorder_json: str | int = str(recorder) if isinstance(recorder, UUID) else recorder
        items: list[dict[str, Any]] = []
        for i, movement in enumerate(movements):
            if "recorder" in movement and str(movement["recorder"]) != str(recorder):
                problem = f"recorder {movement['recorder']!r} differs from {recorder!r}"
                raise _client_error(
                    InvalidCommand, "22023", register, problem, path=f"movements[{i}].recorder"
                )
            items.append({**movement, "recorder": recorder_json})
        data = to_json(items, "movements", register=register)
        query = self._call("register_post", p_register=sql.SQL("%s"), p_data=sql.SQL("%s::jsonb"))
        return int(self._scalar(query, [register, data], context="write", write=True))

    def repost(self, register: str, recorder: Recorder, movements: Iterable[Mapping[str, Any]]) -> int:
        """Replace the document of `recorder` by `movements` (empty clears it); returns rows inserted."""
        data = to_json(list(movements), "movements", register=register)
        query = self._call(
            "register_repost", p_register=sql.SQL("%s"), p_recorder=sql.SQL("%s"), p_data=sql.SQL("%s::jsonb")
        )
        return int(self._scalar(query, [register, str(recorder), data], context="write", write=True))

    def unpost(self, register: str, recorder: Recorder) -> int:
        """Remove `recorder`'s movements; returns movements deleted (0 for an unknown recorder)."""
        query = self._call("register_unpost", p_register=sql.SQL("%s"), p_recorder=sql.SQL("%s"))
        return int(self._scalar(query, [register, str(recorder)], context="write", write=True))

    def apply(
        self,
        commands: Sequence[Mapping[str, Any] | BaseModel],
        *,
        on_error: Literal["abort", "skip"] = "abort",
    ) -> list[ApplyResult]:
        """Run `{op, register, recorder, movements}` commands in one call, one result per command (SPEC §7.1).

        `abort`: the first bad command raises and nothing changes; `skip`: bad commands come back `rejected`.
        """
        data = to_json(list(commands), "commands")
        cols = ("ord", "outcome", "affected", "sqlstate", "message")
        query = sql.SQL("SELECT {} FROM {}(p_commands => %s::jsonb, p_on_error => %s)").format(
            _columns(*cols), self._fn("register_apply")
        )
        rows = self._run(query, [data, on_error], context="write", write=True)
        return [ApplyResult.model_validate(dict(zip(cols, row, strict=True))) for row in rows]

    # ---- reads (SPEC §8) -------------------------------------------------------------------------------

    @staticmethod
    def _filter(register: str, dimensions: Mapping[str, Any] | None) -> str | None:
        return (
            None
            if dimensions is None
            else to_json(dimensions, "dimensions", register=register, error=InvalidQuery)
        )

    def balance(
        self, register: str, dimensions: Mapping[str, Any] | None = None, at: Bound | None = None
    ) -> dict[str, Decimal]:
        """Balance per resource of the matching combinations at `at` (None: current, future movements too)."""
        filt = self._filter(register, dimensions)
        at_sql, at_params = self._bound(register, at, "at")
        args = [sql.SQL("dimensions => %s::jsonb"), sql.SQL("at_date => {}").format(at_sql)]
        rows = self._read(register, "balance", args, [filt, *at_params])
        return _decimals(rows[0][0] if rows else None) or {}

    def turnover(
        self,
        register: str,
        start: Bound | None = None,
        end: Bound | None = None,
        dimensions: Mapping[str, Any] | None = None,
        group_by: Sequence[str] | None = None,
    ) -> list[TurnoverRow]:
        """Sums over `start <= period <= end` (None: unbounded).

        Without `group_by`: exactly one row, `group` == {}, zeros when nothing matches. With it: one row per
        group with a non-zero resource, `group` holding that group's dimension values, ordered by them.
        """
        filt = self._filter(register, dimensions)
        groups = (
            None
            if group_by is None
            else to_json(list(group_by), "group_by", register=register, error=InvalidQuery)
        )
        from_sql, from_params = self._bound(register, start, "start")
        to_sql, to_params = self._bound(register, end, "end")
        args = [
            sql.SQL("from_date => {}").format(from_sql),
            sql.SQL("to_date => {}").format(to_sql),
            sql.SQL("dimensions => %s::jsonb"),
            sql.SQL("group_by => %s::jsonb"),
        ]
        rows = self._read(register, "turnover", args, [*from_params, *to_params, filt, groups])
        meta = self._meta(register)
        if not meta.knows(k for (value,) in rows for k in value):
            meta = self._meta(register, refresh=True)  # a column was added since the cache was filled
        out = []
        for (value,) in rows:
            group, resources = meta.split(value)
            if group_by:  # keys in the caller's order (jsonb keeps its own key order)
                group = {k: group[k] for k in group_by if k in group} | group
            out.append(TurnoverRow(group=group, resources=resources))
        return out

    def movements(
        self,
        register: str,
        recorder: Recorder | None = None,
        start: Bound | None = None,
        end: Bound | None = None,
        dimensions: Mapping[str, Any] | None = None,
    ) -> list[MovementRow]:
        """Movements by `period`, `id`, filtered by recorder, `start <= period <= end` and dimensions."""
        filt = self._filter(register, dimensions)
        from_sql, from_params = self._bound(register, start, "start")
        to_sql, to_params = self._bound(register, end, "end")
        args = [
            sql.SQL("p_recorder => %s::text"),
            sql.SQL("from_date => {}").format(from_sql),
            sql.SQL("to_date => {}").format(to_sql),
            sql.SQL("dimensions => %s::jsonb"),
        ]
        params = [None if recorder is None else str(recorder), *from_params, *to_params, filt]
        rows = self._read(register, "movements", args, params)
        meta = self._meta(register)
        if not meta.knows((k for (value,) in rows for k in value), _MOVEMENT_KEYS):
            meta = self._meta(register, refresh=True)
        out = []
        for (value,) in rows:
            dims, resources = meta.split({k: v for k, v in value.items() if k not in _MOVEMENT_KEYS})
            fixed = {k: value.get(k) for k in _MOVEMENT_KEYS}
            out.append(MovementRow.model_validate({**fixed, "dimensions": dims, "resources": resources}))
        return out

    # ---- merging and maintenance (SPEC §9, §10) --------------------------------------------------------

    def verify(self, register: str, *, problems_only: bool = True) -> list[VerifyRow]:
        """Recompute derived data from movements and compare; by default only problems (empty = clean)."""
        cols = ("check_type", "dim_hash", "period", "expected", "actual", "status", "dimensions")
        query = sql.SQL("SELECT {} FROM {}(p_name => %s, problems_only => %s::boolean)").format(
            _columns(*cols), self._fn("register_verify")
        )
        rows = self._run(query, [register, problems_only], context="read")
        meta = self._meta(register) if rows else None
        out = []
        for row in rows:
            values = dict(zip(cols, row, strict=True))
            values["expected"] = _decimals(values["expected"])
            values["actual"] = _decimals(values["actual"])
            if meta is not None and values["dimensions"] is not None:
                values["dimensions"] = meta.split(values["dimensions"])[0]
            out.append(VerifyRow.model_validate(values))
        return out

    def merge(
        self, register: str | None = None, *, max_rows: int = 10000, min_age: timedelta = timedelta(0)
    ) -> int:
        """One merge of the delta buffer (every high-write register when None); returns delta rows used."""
        query = self._call(
            "register_merge",
            name=sql.SQL("%s::text"),
            max_rows=sql.SQL("%s::integer"),
            min_age=sql.SQL("%s::interval"),
        )
        return int(self._scalar(query, [register, max_rows, min_age], context="maintenance", write=True))

    def rebuild(self, register: str, *, totals: bool = True, cache: bool = True) -> int:
        """Recompute totals and/or the balance cache from movements; returns rows written.

        A turnover register has no cache, so `cache` is skipped for it (the engine would raise 42809).
        """
        written = 0
        if totals:
            query = self._call("register_rebuild_totals", p_name=sql.SQL("%s"))
            written += int(self._scalar(query, [register], context="maintenance", write=True))
        if cache and self._meta(register).kind == "balance":
            query = self._call("register_rebuild_cache", p_name=sql.SQL("%s"))
            written += int(self._scalar(query, [register], context="maintenance", write=True))
        return written

    def delta_status(self, name: str | None = None) -> list[DeltaStatus]:
        """Pending delta rows per high-write register (or of `name`) and the age of the oldest."""
        cols = ("register", "pending_rows", "oldest_created_at", "lag_seconds")
        query = sql.SQL("SELECT {} FROM {}(name => %s::text)").format(
            _columns(*cols), self._fn("register_delta_status")
        )
        rows = self._run(query, [name], context="read")
        return [DeltaStatus.model_validate(dict(zip(cols, row, strict=True))) for row in rows]

    def stats(self, name: str) -> RegisterStats:
        query = self._call("register_stats", p_name=sql.SQL("%s"))
        return RegisterStats.model_validate(self._scalar(query, [name], context="read"))

    def partitions(self, name: str) -> list[PartitionRow]:
        cols = ("partition_name", "from_date", "to_date", "row_count", "total_size", "is_default")
        query = sql.SQL("SELECT {} FROM {}(p_name => %s)").format(
            _columns(*cols), self._fn("register_partitions")
        )
        rows = self._run(query, [name], context="read")
        return [PartitionRow.model_validate(dict(zip(cols, row, strict=True))) for row in rows]

    def create_partitions(self, name: str, periods: int = 3, *, ahead: timedelta | None = None) -> int:
        """Ensure the current period and the next `periods` (or up to now() + `ahead`); returns count made."""
        query = self._call(
            "register_create_partitions",
            p_name=sql.SQL("%s"),
            p_ahead=sql.SQL("%s::interval"),
            p_periods=sql.SQL("%s::integer"),
        )
        return int(self._scalar(query, [name, ahead, periods], context="maintenance", write=True))
