"""Locate the SQL shipped in the wheel (package ``registers.sql``, the top-level ``sql/`` folder)."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def migrations_dir() -> Traversable:
    return resources.files("registers.sql").joinpath("migrations")


def queries(name: str) -> dict[str, str]:
    """The named statements of ``sql/queries/<name>.sql``: blocks headed ``-- name: <name>``."""
    text = resources.files("registers.sql").joinpath("queries").joinpath(f"{name}.sql").read_text("utf-8")
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: "]:
        if line.startswith("-- name:"):
            if current is not None:
                found[current] = "\n".join(lines).strip()
            current = line.removeprefix("-- name:").strip() or None
            lines = []
        elif current is not None and not line.lstrip().startswith("--"):
            lines.append(line)
    return found
