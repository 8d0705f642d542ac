"""Every PostgreSQL call of the worker (SPEC §13.2, §14): stored offsets, and one batch = one transaction.

A batch transaction runs a fixed handful of statements whatever its size (sql/queries/worker.sql): advance
the offsets with the fencing rule, claim idempotency ids, `register_apply(…, 'skip')`, release the ids of
rejected commands, then the caller's `before_commit` (dead letters, flushed), then COMMIT. Errors are sorted
here: data errors never escape (they become outcomes), everything else is infrastructure and rolls back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import TupleRow

from consumer.batching import Plan, Planned, TopicPartition, engine_payload
from consumer.commands import fingerprint
from registers.errors import is_data_error
from registers.sqlfiles import queries

__all__ = ["Fenced", "Outcome", "RaceLost", "Writer"]

log = logging.getLogger("accumulator.writer")

Status = Literal["applied", "duplicate", "rejected", "id_reused"]
_SQL: Final = queries("worker")


class RaceLost(Exception):
    """A concurrent transaction changed what this batch read; rolled back, retry the batch."""


class Fenced(Exception):
    """Another worker moved a partition's stored offset: this batch was rolled back (SPEC §14.2)."""

    def __init__(self, partitions: Sequence[TopicPartition]) -> None:
        super().__init__(f"offsets moved by another worker: {sorted(partitions)}")
        self.partitions = tuple(partitions)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one planned command; `affected`: movements inserted (post, repost) or deleted."""

    status: Status
    affected: int | None = None
    sqlstate: str | None = None
    message: str | None = None


_DUPLICATE: Final = Outcome("duplicate")


def _q(name: str) -> bytes:
    return _SQL[name].encode("utf-8")  # bytes: psycopg takes them as a literal query


class Writer:
    """Owns the worker's PostgreSQL connection; reconnects after it breaks. Not thread-safe."""

    def __init__(self, dsn: str, group: str, *, connect_timeout_s: int = 10) -> None:
        self.dsn = dsn
        self.group = group
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[TupleRow] | None = None

    # --- connection --------------------------------------------------------------------------------------

    def connection(self) -> psycopg.Connection[TupleRow]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            conn = psycopg.connect(
                self.dsn,
                connect_timeout=self.connect_timeout_s,
                application_name="accumulator-consume",
                autocommit=True,
            )
            self._conn = conn
        return conn

    def cancel(self) -> None:
        """Cancel the running statement (shutdown grace exceeded); safe from another thread."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=2.0)
            except Exception as exc:  # best effort: the connection may be gone already
                log.debug("cancel failed: %s", exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- offsets -----------------------------------------------------------------------------------------

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        rows = self.connection().execute(
            _q("stored_offsets"),
            {"group": self.group, "topics": [t for t, _ in wanted], "partitions": [p for _, p in wanted]},
        )
        return {(topic, partition): offset for topic, partition, offset in rows.fetchall()}

    def insert_offsets(self, starts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Store first-sight offsets where no row exists yet; returns what is stored now (a racer may win)."""
        wanted = sorted(starts)
        if wanted:
            self.connection().execute(
                _q("insert_offsets"),
                {
                    "group": self.group,
                    "topics": [t for t, _ in wanted],
                    "partitions": [p for _, p in wanted],
                    "offsets": [starts[tp] for tp in wanted],
                },
            )
        return self.stored_offsets(wanted)

    def register_names(self) -> set[str]:
        return {name for (name,) in self.connection().execute(_q("register_names")).fetchall()}

    # --- one batch ---------------------------------------------------------------------------------------

    def write(
        self,
        batch: Plan,
        expected: Mapping[TopicPartition, int],
        before_commit: Callable[[list[Outcome]], None],
    ) -> list[Outcome]:
        """Apply `batch` in one transaction; `outcomes[i]` belongs to `batch.commands[i]`.

        `expected` holds, per partition of the batch, the stored offset its records start from. Raises
        `Fenced` (rolled back) when another worker moved one; psycopg errors are infrastructure errors
        (rolled back). `before_commit` runs inside the transaction, after every statement; raising there
        rolls back too.
        """
        conn = self.connection()
        with conn.transaction():
            self._advance(conn, batch.next_offsets, expected)  # first: fenced before any work
            outcomes = self._apply(conn, batch)
            before_commit(outcomes)
        return outcomes

    def _advance(
        self,
        conn: psycopg.Connection[TupleRow],
        next_offsets: Mapping[TopicPartition, int],
        expected: Mapping[TopicPartition, int],
    ) -> None:
        tps = sorted(next_offsets)
        if not tps:
            return
        rows = conn.execute(
            _q("advance_offsets"),
            {
                "group": self.group,
                "topics": [t for t, _ in tps],
                "partitions": [p for _, p in tps],
                "expected": [expected[tp] for tp in tps],
                "next": [next_offsets[tp] for tp in tps],
            },
        ).fetchall()
        moved = {(t, p) for t, p in rows}
        if len(moved) != len(tps):
            raise Fenced([tp for tp in tps if tp not in moved])

    def _apply(self, conn: psycopg.Connection[TupleRow], batch: Plan) -> list[Outcome]:
        commands = batch.commands
        outcomes: list[Outcome | None] = [None] * len(commands)
        # (register, id) -> index of the batch's first command carrying it; later ones mirror its outcome
        first_with_id: dict[tuple[str, str], int] = {}
        fingerprints: dict[int, str] = {}
        mirrors: list[tuple[int, int]] = []  # (later index, first index)
        for i, entry in enumerate(commands):
            cid = entry.command.id
            if cid is None:
                continue
            key = (entry.command.register_name, cid)
            fingerprints[i] = fingerprint(entry.command)
            first = first_with_id.setdefault(key, i)
            if first != i:
                if fingerprints[first] == fingerprints[i]:
                    mirrors.append((i, first))
                else:
                    outcomes[i] = _id_reused(key)
        claimed = self._claim(conn, commands, first_with_id, fingerprints)
        unclaimed = [key for key in first_with_id if key not in claimed]
        if unclaimed:
            recorded = self._recorded(conn, unclaimed)
            for key in unclaimed:
                i = first_with_id[key]
                if key not in recorded:
                    # Claimed by nobody and recorded nowhere: purged between our two statements. Rare; the
                    # batch retries and claims it then.
                    raise RaceLost(f"idempotency record {key} vanished between claim and read")
                outcomes[i] = _DUPLICATE if recorded[key] == fingerprints[i] else _id_reused(key)
        mirrored = {later for later, _ in mirrors}
        to_apply = [i for i in range(len(commands)) if outcomes[i] is None and i not in mirrored]
        for i, result in zip(to_apply, self._run_engine(conn, [commands[i] for i in to_apply]), strict=True):
            outcomes[i] = result
        released = [
            (commands[i].command.register_name, commands[i].command.id)
            for i in to_apply
            if i in fingerprints and (o := outcomes[i]) is not None and o.status == "rejected"
        ]
        if released:
            conn.execute(
                _q("release_ids"),
                {"registers": [r for r, _ in released], "ids": [cid for _, cid in released]},
            )
        for later, first in mirrors:
            first_outcome = outcomes[first]
            if first_outcome is not None and first_outcome.status in ("applied", "duplicate"):
                outcomes[later] = _DUPLICATE
            else:
                outcomes[later] = first_outcome
        return [o if o is not None else Outcome("rejected", message="internal: no outcome") for o in outcomes]

    def _claim(
        self,
        conn: psycopg.Connection[TupleRow],
        commands: Sequence[Planned],
        first_with_id: Mapping[tuple[str, str], int],
        fingerprints: Mapping[int, str],
    ) -> set[tuple[str, str]]:
        if not first_with_id:
            return set()
        keys = list(first_with_id)
        entries = [commands[first_with_id[k]] for k in keys]
        rows = conn.execute(
            _q("claim_ids"),
            {
                "registers": [r for r, _ in keys],
                "ids": [cid for _, cid in keys],
                "fingerprints": [fingerprints[first_with_id[k]] for k in keys],
                "topics": [e.record.topic for e in entries],
                "partitions": [e.record.partition for e in entries],
                "offsets": [e.record.offset for e in entries],
            },
        ).fetchall()
        return {(r, cid) for r, cid in rows}

    def _recorded(
        self, conn: psycopg.Connection[TupleRow], keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        rows = conn.execute(
            _q("recorded_fingerprints"),
            {"registers": [r for r, _ in keys], "ids": [cid for _, cid in keys]},
        ).fetchall()
        return {(r, cid): fp for r, cid, fp in rows}

    def _run_engine(self, conn: psycopg.Connection[TupleRow], entries: Sequence[Planned]) -> list[Outcome]:
        """`register_apply(…, 'skip')` over `entries`; if it still raises a data error, one by one."""
        if not entries:
            return []
        try:
            with conn.transaction():  # a savepoint: a data error here must not lose the batch's offsets
                return _outcomes(conn.execute(_q("apply"), {"commands": engine_payload(entries)}).fetchall())
        except psycopg.Error as exc:
            state = exc.sqlstate
            if not is_data_error(state):
                raise
            log.warning(
                "set-based apply raised a data error; applying the batch's commands one by one",
                extra={"action": "apply_fallback", "sqlstate": state, "commands": len(entries)},
            )
        return [self._run_one(conn, entry) for entry in entries]

    def _run_one(self, conn: psycopg.Connection[TupleRow], entry: Planned) -> Outcome:
        try:
            with conn.transaction():
                rows = conn.execute(_q("apply"), {"commands": engine_payload([entry])}).fetchall()
                (result,) = _outcomes(rows)
                return result
        except psycopg.Error as exc:
            if not is_data_error(exc.sqlstate):
                raise
            diag = exc.diag
            return Outcome("rejected", sqlstate=exc.sqlstate, message=diag.message_primary or str(exc))


def _outcomes(rows: Sequence[tuple[Any, ...]]) -> list[Outcome]:
    out: list[Outcome] = []
    for _ord, outcome, affected, sqlstate, message in rows:
        if outcome == "applied":
            out.append(Outcome("applied", affected=affected))
        else:
            out.append(Outcome("rejected", sqlstate=sqlstate, message=message))
    return out


def _id_reused(key: tuple[str, str]) -> Outcome:
    register, cid = key
    return Outcome(
        "id_reused",
        message=f"{register}: id {json.dumps(cid, ensure_ascii=False)} was already used by another command",
    )
