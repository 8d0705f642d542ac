"""Register definitions (checked client-side, SPEC §4) and the typed results of the client (SPEC §19).

A definition is checked here so that a typo fails before any round trip, with the same rules the engine
applies; the engine stays the authority (reserved SQL keywords and time zone names are only known there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

__all__ = [
    "DIMENSION_MAX",
    "RESERVED_COLUMNS",
    "RESOURCE_MAX",
    "ApplyResult",
    "DeltaStatus",
    "MovementRow",
    "PartitionInfo",
    "PartitionRow",
    "RegisterDefinition",
    "RegisterInfo",
    "RegisterStats",
    "RegisterSummary",
    "RegisterTables",
    "TurnoverRow",
    "TypeSpec",
    "VerifyRow",
    "canonical_type",
    "check_column_name",
    "check_register_name",
    "is_register_name",
]

REGISTER_NAME_MAX = 32
COLUMN_NAME_MAX = 40
DIMENSION_MAX = 16
RESOURCE_MAX = 32
NUMERIC_PRECISION_MAX = 1000
VARCHAR_MAX = 1024

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")

# Columns every generated table already has (SPEC §4.2); a dimension or resource of that name would clash.
RESERVED_COLUMNS = frozenset(
    {
        "id",
        "recorder",
        "period",
        "recorded_at",
        "dim_hash",
        "bucket",
        "version",
        "last_movement_at",
        "created_at",
        "movement_type",
    }
)

_FIXED_TYPES: dict[str, tuple[str, bool, bool]] = {
    # declared -> (canonical, allowed as dimension, allowed as resource); SPEC §4.3
    "smallint": ("smallint", True, True),
    "int2": ("smallint", True, True),
    "integer": ("integer", True, True),
    "int": ("integer", True, True),
    "int4": ("integer", True, True),
    "bigint": ("bigint", True, True),
    "int8": ("bigint", True, True),
    "text": ("text", True, False),
    "uuid": ("uuid", True, False),
    "date": ("date", True, False),
    "boolean": ("boolean", True, False),
    "bool": ("boolean", True, False),
}
_NUMERIC_RE = re.compile(r"(?:numeric|decimal)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?")
_VARCHAR_RE = re.compile(r"(?:varchar|character\s+varying)\s*\(\s*(\d+)\s*\)")
ALLOWED_TYPES_TEXT = (
    "smallint, integer, bigint, numeric(p,s) (dimensions and resources); "
    "numeric, numeric(p) (resources only); text, varchar(n), uuid, date, boolean (dimensions only)"
)


class TypeSpec(BaseModel):
    """A type of the allow-list after canonicalisation, with where it may be used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    canonical: str
    dimension: bool
    resource: bool


def canonical_type(declared: str) -> TypeSpec:
    """Canonicalise a declared type as SPEC §4.3 does; ValueError names the allowed types otherwise."""
    text = declared.strip().lower()
    fixed = _FIXED_TYPES.get(text)
    if fixed is not None:
        return TypeSpec(canonical=fixed[0], dimension=fixed[1], resource=fixed[2])
    if m := _NUMERIC_RE.fullmatch(text):
        if m.group(1) is None:
            return TypeSpec(canonical="numeric", dimension=False, resource=True)
        precision = int(m.group(1))
        scale = int(m.group(2)) if m.group(2) is not None else None
        if not 1 <= precision <= NUMERIC_PRECISION_MAX:
            raise ValueError(f"type {declared!r}: precision must be 1..{NUMERIC_PRECISION_MAX}")
        if scale is None:
            # numeric(p) means scale 0, but only resources may use it: a dimension needs a declared scale
            return TypeSpec(canonical=f"numeric({precision},0)", dimension=False, resource=True)
        if scale > precision:
            raise ValueError(f"type {declared!r}: scale must be 0..{precision}")
        return TypeSpec(canonical=f"numeric({precision},{scale})", dimension=True, resource=True)
    if m := _VARCHAR_RE.fullmatch(text):
        length = int(m.group(1))
        if not 1 <= length <= VARCHAR_MAX:
            raise ValueError(f"type {declared!r}: varchar length must be 1..{VARCHAR_MAX}")
        return TypeSpec(canonical=f"varchar({length})", dimension=True, resource=False)
    raise ValueError(f"type {declared!r} is not allowed; allowed types: {ALLOWED_TYPES_TEXT}")


def is_register_name(name: str) -> bool:
    return len(name) <= REGISTER_NAME_MAX and _NAME_RE.fullmatch(name) is not None


def check_register_name(name: str) -> str:
    if not is_register_name(name):
        raise ValueError(
            f"register name {name!r} must match ^[a-z][a-z0-9_]*$ and have 1..{REGISTER_NAME_MAX} characters"
        )
    return name


def check_column_name(name: str, role: str) -> str:
    """Check a dimension or resource name (SPEC §4.2); reserved SQL keywords are left to the engine."""
    if len(name) > COLUMN_NAME_MAX or _NAME_RE.fullmatch(name) is None:
        raise ValueError(
            f"{role} name {name!r} must match ^[a-z][a-z0-9_]*$ and have 1..{COLUMN_NAME_MAX} characters"
        )
    if name in RESERVED_COLUMNS:
        raise ValueError(
            f"{role} name {name!r} is reserved (reserved: {', '.join(sorted(RESERVED_COLUMNS))})"
        )
    return name


def _canonical_columns(
    columns: Mapping[str, str], role: Literal["dimension", "resource"], most: int
) -> dict[str, str]:
    if not 1 <= len(columns) <= most:
        raise ValueError(f"a register needs 1..{most} {role}s, got {len(columns)}")
    out: dict[str, str] = {}
    for name in sorted(columns):  # bytewise name order, the engine's column order (SPEC §4.5)
        check_column_name(name, role)
        declared = columns[name]
        spec = canonical_type(declared)
        if role == "dimension" and not spec.dimension:
            raise ValueError(
                f"dimension {name!r}: type {declared!r} is allowed for resources only "
                "(dimensions need an exact key type: numeric(p,s) with both given)"
            )
        if role == "resource" and not spec.resource:
            raise ValueError(f"resource {name!r}: type {declared!r} is allowed for dimensions only")
        out[name] = spec.canonical
    return out


class RegisterDefinition(BaseModel):
    """What `register_create` takes (SPEC §4.1), types stored in canonical form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["balance", "turnover"] = "balance"
    dimensions: dict[str, str]
    resources: dict[str, str]
    totals_period: Literal["day", "month", "year"] = "day"
    partition_by: Literal["day", "month", "quarter", "year"] = "month"
    high_write: StrictBool = False
    time_zone: str = "UTC"
    recorder_type: Literal["text", "bigint", "uuid"] = "text"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_register_name(value)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: object) -> object:
        if value == "ledger":
            raise ValueError(
                "kind 'ledger' is not supported yet (planned for wave 2); use balance or turnover"
            )
        return value

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, value: dict[str, str]) -> dict[str, str]:
        return _canonical_columns(value, "dimension", DIMENSION_MAX)

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, str]) -> dict[str, str]:
        return _canonical_columns(value, "resource", RESOURCE_MAX)

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        # Only the engine knows pg_timezone_names; reject here what SPEC §4.1 names as never valid.
        folded = value.strip().casefold()
        if not folded or folded in {"localtime", "posixrules", "factory"} or folded.startswith("posix/"):
            raise ValueError(f"time_zone {value!r} is not allowed; use an IANA name such as 'Europe/Berlin'")
        return value

    @model_validator(mode="after")
    def _no_shared_names(self) -> RegisterDefinition:
        shared = sorted(set(self.dimensions) & set(self.resources))
        if shared:
            raise ValueError(f"names used as both dimension and resource: {', '.join(shared)}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> RegisterDefinition:
        """Read a definition from JSON (`.json`) or YAML (any other suffix; YAML also reads JSON)."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        data: object = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{p}: a register definition must be a mapping at the top level")
        return cls.model_validate(data)

    def same_as(self, other: RegisterDefinition) -> bool:
        """Equal as the engine sees it: zone names match case-insensitively (SPEC §4.1)."""
        mine = self.model_dump(exclude={"time_zone"})
        theirs = other.model_dump(exclude={"time_zone"})
        return mine == theirs and self.time_zone.casefold() == other.time_zone.casefold()


# ---- results -------------------------------------------------------------------------------------------
# Results ignore unknown keys: a newer engine may add fields without breaking older clients.


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class RegisterTables(_Result):
    """Generated table names of a register (`register_info` → `tables`); absent levels are None."""

    movements: str
    totals_day: str | None = None
    totals_month: str | None = None
    totals_year: str | None = None
    balance_cache: str | None = None
    delta: str | None = None


class PartitionInfo(_Result):
    """One partition in `register_info` → `partitions`; the default partition has no bounds."""

    name: str
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    is_default: bool = False


class RegisterInfo(_Result):
    """`register_info(name)` (SPEC §6)."""

    name: str
    kind: Literal["balance", "turnover"]
    dimensions: dict[str, str]
    resources: dict[str, str]
    totals_period: Literal["day", "month", "year"]
    partition_by: Literal["day", "month", "quarter", "year"]
    high_write: bool
    recorder_type: Literal["text", "bigint", "uuid"]
    time_zone: str
    created_at: datetime
    updated_at: datetime | None = None
    movements_count: int
    tables: RegisterTables
    partitions: list[PartitionInfo] = []

    def definition(self) -> RegisterDefinition:
        return RegisterDefinition(
            name=self.name,
            kind=self.kind,
            dimensions=self.dimensions,
            resources=self.resources,
            totals_period=self.totals_period,
            partition_by=self.partition_by,
            high_write=self.high_write,
            time_zone=self.time_zone,
            recorder_type=self.recorder_type,
        )


class RegisterSummary(_Result):
    """One row of `register_list()`."""

    name: str
    kind: str
    dimensions: int
    resources: int
    movements_count: int
    created_at: datetime
    high_write: bool
    time_zone: str


class VerifyRow(_Result):
    """One row of `register_verify`: `expected` is recomputed from movements, `actual` is stored."""

    check_type: str
    dim_hash: int | None = None
    period: date | None = None
    expected: dict[str, Any] | None = None
    actual: dict[str, Any] | None = None
    status: str
    dimensions: dict[str, Any] | None = None


class MovementRow(_Result):
    """One movement from `<r>_movements(...)`, split into dimension and resource values."""

    id: int
    recorded_at: datetime
    recorder: str | int
    period: datetime
    dim_hash: int
    dimensions: dict[str, Any]
    resources: dict[str, Decimal]


class TurnoverRow(_Result):
    """One row of `<r>_turnover(...)`: `group` holds the `group_by` dimension values ({} without group_by)."""

    group: dict[str, Any]
    resources: dict[str, Decimal]


class PartitionRow(_Result):
    """One row of `register_partitions`; `row_count` is the planner's estimate."""

    partition_name: str
    from_date: datetime | None = None
    to_date: datetime | None = None
    row_count: int
    total_size: str
    is_default: bool


class RegisterStats(_Result):
    """`register_stats(name)`; counts of levels a register does not keep may be None."""

    movements_count: int
    partitions_count: int
    default_partition_rows: int
    cache_rows: int | None = None
    totals_day_rows: int | None = None
    totals_month_rows: int | None = None
    totals_year_rows: int | None = None
    delta_pending_rows: int | None = None
    delta_oldest_at: datetime | None = None
    table_sizes: dict[str, int] = {}


class DeltaStatus(_Result):
    """One row of `register_delta_status`: pending delta rows of a high-write register and their age."""

    register_name: str = Field(alias="register")  # `register` would shadow BaseModel.register
    pending_rows: int
    oldest_created_at: datetime | None = None
    lag_seconds: float


class ApplyResult(_Result):
    """One row of `register_apply`, in command order; `affected` is None and `sqlstate` set when rejected."""

    ord: int
    outcome: Literal["applied", "rejected"]
    affected: int | None = None
    sqlstate: str | None = None
    message: str | None = None
