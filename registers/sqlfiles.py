"""Locate the SQL shipped in the wheel (package ``registers.sql``, the top-level ``sql/`` folder)."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def migrations_dir() -> Traversable:
    return resources.files("registers.sql").joinpath("migrations")
