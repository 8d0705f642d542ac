"""What every scenario gets: the database, the plan, the data shape, shared fixtures built once per run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.db import Conn, connect
from bench.plan import Plan
from bench.workload import Shape

__all__ = ["Bench"]


@dataclass
class Bench:
    dsn: str
    plan: Plan
    shape: Shape
    conn: Conn
    # --dsn was given: use that server as it is (a scenario wanting its own cluster must not start one)
    external_server: bool = False
    keep: bool = False  # --keep: leave databases and clusters behind
    # fixtures shared by scenarios (e.g. the write register), built on first use
    state: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def connect(self) -> Conn:
        return connect(self.dsn)

    def log(self, message: str) -> None:
        print(f"bench [{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query.encode(), params).fetchone()  # bytes: a query built at run time
        return None if row is None else row[0]
