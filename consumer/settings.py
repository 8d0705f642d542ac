"""Configuration of every `accumulator` command (SPEC §18): environment `ACCUMULATOR_*`, flags, defaults.

Only `consumer.cli` builds a `Settings` (flag > environment > default); everything else receives the
pieces it needs as arguments, so library code never reads the environment.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_METRICS_PORTS", "ConfigError", "Settings"]

# `consume` and `compact` share one pod (and one ConfigMap), so their default ports differ (SPEC §16).
DEFAULT_METRICS_PORTS: dict[str, int] = {"consume": 9400, "compact": 9401}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# librdkafka's pass-through values: JSON scalars, rendered as strings when the client is built.
KafkaConfig = dict[str, str | int | float | bool]


class ConfigError(ValueError):
    """A setting is missing or unusable; the CLI exits 2."""


def _default_client_id() -> str:
    return f"accumulator-{socket.gethostname()}"


class Settings(BaseSettings):
    """Every setting of SPEC §18: field `x_y` = variable `ACCUMULATOR_X_Y` = flag `--x-y`."""

    model_config = SettingsConfigDict(env_prefix="ACCUMULATOR_", frozen=True, extra="forbid")

    dsn: SecretStr | None = Field(
        default=None,
        description="libpq DSN or URI (required except for demo); passwords may come from PGPASSWORD",
    )
    dsn_file: Path | None = Field(default=None, description="file holding the DSN (instead of --dsn)")

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092", min_length=1, description="Kafka broker list"
    )
    kafka_group_id: str = Field(default="accumulator", min_length=1, description="consumer group")
    kafka_client_id: str = Field(
        default_factory=_default_client_id, min_length=1, description="Kafka client id"
    )
    kafka_topics: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("accumulator.commands",), min_length=1, description="comma-separated command topics"
    )
    kafka_dlq_topic: str = Field(default="", description="one dead-letter topic for all (empty: <topic>.dlq)")
    kafka_auto_offset_reset: Literal["earliest", "latest", "error"] = Field(
        default="earliest", description="start without stored or committed offset"
    )
    kafka_extra: KafkaConfig = Field(default_factory=dict, description="JSON object of librdkafka settings")
    consumer_extra: KafkaConfig = Field(default_factory=dict, description="JSON object, consumer only")
    producer_extra: KafkaConfig = Field(default_factory=dict, description="JSON object, producer only")

    batch_max_messages: int = Field(default=1000, gt=0, description="records per batch")
    batch_max_bytes: int = Field(default=8_388_608, gt=0, description="value bytes per batch")
    batch_max_wait_ms: int = Field(default=250, ge=0, description="wait after the first record of a batch")
    retry_initial_ms: int = Field(default=500, gt=0, description="first infrastructure backoff")
    retry_max_ms: int = Field(default=30_000, gt=0, description="backoff cap")
    connect_timeout_ms: int = Field(
        default=10_000, gt=0, description="one-shot commands give up connecting after this (exit 4)"
    )
    dedupe_retention_hours: int = Field(default=168, gt=0, description="idempotency record retention")
    shutdown_grace_ms: int = Field(default=25_000, ge=0, description="time to finish a batch on SIGTERM")
    migrate_on_start: bool = Field(default=False, description="migrate before consume/compact")

    metrics_host: str = Field(default="0.0.0.0", description="metrics and health endpoint address")
    # None = the command's own default (consume 9400, compact 9401); 0 disables the endpoint.
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="metrics port (default 9400, compact 9401; 0 disables)"
    )
    liveness_timeout_ms: int = Field(default=120_000, gt=0, description="/healthz threshold")

    merge_interval_ms: int = Field(default=5000, gt=0, description="merge cadence")
    merge_delay_ms: int = Field(default=2000, ge=0, description="minimum delta age before a merge")
    merge_batch: int = Field(default=10_000, gt=0, description="delta rows per merge call")
    partitions_ahead: int = Field(default=3, ge=0, description="partitions kept ahead")
    maintenance_interval_ms: int = Field(default=3_600_000, gt=0, description="partitions and purge cadence")
    leader_poll_ms: int = Field(default=5000, gt=0, description="standby retry of the leader lock")
    verify_interval_ms: int = Field(default=600_000, ge=0, description="verify cadence (0 disables)")
    verify_timeout_ms: int = Field(default=300_000, gt=0, description="per-register verify statement timeout")
    verify_dsn: SecretStr | None = Field(
        default=None, description="where verify runs (default: the main DSN)"
    )

    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text or json (one object per line)"
    )
    home: Path = Field(default=Path(".accumulator"), description="demo data and downloaded jars")

    @field_validator("kafka_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", "kafka_auto_offset_reset", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dsn", "verify_dsn", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # ACCUMULATOR_DSN= (set but empty) means "not given", as libpq treats an empty variable.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _one_dsn_source(self) -> Settings:
        if self.dsn is not None and self.dsn_file is not None:
            raise ValueError("give the DSN or a DSN file, not both (ACCUMULATOR_DSN / ACCUMULATOR_DSN_FILE)")
        if self.retry_initial_ms > self.retry_max_ms:
            raise ValueError("retry_initial_ms must not exceed retry_max_ms")
        return self

    def database_dsn(self) -> str:
        """The DSN to connect with, read from `dsn_file` when that is the source; ConfigError when none."""
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        if self.dsn_file is not None:
            try:
                text = self.dsn_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the DSN file {self.dsn_file}: {exc.strerror}") from exc
            if not text:
                raise ConfigError(f"the DSN file {self.dsn_file} is empty")
            return text
        raise ConfigError("no database given: set ACCUMULATOR_DSN (or ACCUMULATOR_DSN_FILE) or pass --dsn")

    def verify_database_dsn(self) -> str:
        """Where verify runs: `verify_dsn` (e.g. a hot standby) or the main DSN."""
        if self.verify_dsn is not None:
            return self.verify_dsn.get_secret_value()
        return self.database_dsn()

    def metrics_port_for(self, command: str) -> int:
        """The metrics port of `consume` or `compact`: the explicit setting, else that command's default."""
        if self.metrics_port is not None:
            return self.metrics_port
        return DEFAULT_METRICS_PORTS.get(command, DEFAULT_METRICS_PORTS["consume"])

    @property
    def connect_timeout_s(self) -> int:
        """`connect_timeout_ms` in whole seconds for libpq (which counts seconds, at least 2)."""
        return max(2, -(-self.connect_timeout_ms // 1000))
