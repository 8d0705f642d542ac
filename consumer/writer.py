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

__all__ = ["Fenced", "Outcome", "RaceLost", "Writer", "cancel_running"]

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
        cancel_running(self._conn)

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
        fingerprints: dict[int, str] = {}
        carrying: dict[tuple[str, str], list[int]] = {}  # (register, id) -> indices in batch order
        for i, entry in enumerate(commands):
            cid = entry.command.id
            if cid is not None:
                fingerprints[i] = fingerprint(entry.command)
                carrying.setdefault((entry.command.register_name, cid), []).append(i)
        first_with_id = {key: indices[0] for key, indices in carrying.items()}
        claimed = self._claim(conn, commands, first_with_id, fingerprints)
        unclaimed = [key for key in carrying if key not in claimed]
        recorded = self._recorded(conn, unclaimed) if unclaimed else {}
        owners: dict[tuple[str, str], int] = {}  # ids this batch claimed -> index of the command owning it
        pending: dict[tuple[str, str], list[int]] = {}  # later carriers waiting on their owner's outcome
        mirrors: dict[int, int] = {}  # index -> the in-batch owner whose payload it repeats
        for key, indices in carrying.items():
            if key in claimed:
                owners[key] = indices[0]
                pending[key] = indices[1:]
            elif key in recorded:
                for i in indices:  # the recorded command owns the id for good: it was applied
                    outcomes[i] = _DUPLICATE if fingerprints[i] == recorded[key] else _id_reused(key)
            else:
                # Claimed by nobody and recorded nowhere: purged between our two statements. Rare; the
                # batch retries and claims it then.
                raise RaceLost(f"idempotency record {key} vanished between claim and read")
        while True:
            deferred = self._judge(owners, pending, fingerprints, outcomes, mirrors)
            to_apply = [i for i in range(len(commands)) if outcomes[i] is None and i not in mirrors]
            if not deferred:
                results = self._run_engine(conn, [commands[i] for i in to_apply])
                break
            # Some later carrier differs from its owner: whether it is `id_reused` depends on the owner being
            # applied. Try inside a savepoint; an owner rejected hands the id over and the batch runs again
            # without it (a rejected command changes nothing, so the others' results stand).
            with conn.transaction() as attempt:
                results = self._run_engine(conn, [commands[i] for i in to_apply])
                rejected_owners = {
                    key: owners[key]
                    for key in deferred
                    if results[to_apply.index(owners[key])].status == "rejected"
                }
                if not rejected_owners:
                    break
                raise psycopg.Rollback(attempt)
            handed: list[tuple[tuple[str, str], int]] = []
            for key, owner in rejected_owners.items():
                outcomes[owner] = results[to_apply.index(owner)]
                successor = next(i for i in pending[key] if i not in mirrors)
                pending[key] = [i for i in pending[key] if i != successor and mirrors.get(i) != owner]
                owners[key] = successor
                outcomes[successor] = None
                handed.append((key, successor))
            self._hand_over(conn, commands, handed, fingerprints)
        for i, result in zip(to_apply, results, strict=True):
            outcomes[i] = result
        released = [key for key, owner in owners.items() if (o := outcomes[owner]) and o.status == "rejected"]
        if released:
            conn.execute(
                _q("release_ids"),
                {"registers": [r for r, _ in released], "ids": [cid for _, cid in released]},
            )
        for later, owner in mirrors.items():
            owner_outcome = outcomes[owner]
            if owner_outcome is not None and owner_outcome.status == "applied":
                outcomes[later] = _DUPLICATE
            else:
                outcomes[later] = owner_outcome
        return [o if o is not None else Outcome("rejected", message="internal: no outcome") for o in outcomes]

    @staticmethod
    def _judge(
        owners: Mapping[tuple[str, str], int],
        pending: Mapping[tuple[str, str], list[int]],
        fingerprints: Mapping[int, str],
        outcomes: list[Outcome | None],
        mirrors: dict[int, int],
    ) -> list[tuple[str, str]]:
        """Later carriers of an id this batch owns: a repeat mirrors its owner, another payload is `id_reused`
        unless the owner may still be rejected. Returns the ids with such undecided carriers."""
        deferred = []
        for key, owner in owners.items():
            for i in pending[key]:
                if i in mirrors:
                    continue
                if fingerprints[i] == fingerprints[owner]:
                    mirrors[i] = owner
                else:
                    outcomes[i] = _id_reused(key)
                    if key not in deferred:
                        deferred.append(key)
        return deferred

    def _hand_over(
        self,
        conn: psycopg.Connection[TupleRow],
        commands: Sequence[Planned],
        handed: Sequence[tuple[tuple[str, str], int]],
        fingerprints: Mapping[int, str],
    ) -> None:
        entries = [commands[i] for _, i in handed]
        conn.execute(
            _q("hand_over_ids"),
            {
                "registers": [r for (r, _), _ in handed],
                "ids": [cid for (_, cid), _ in handed],
                "fingerprints": [fingerprints[i] for _, i in handed],
                "topics": [e.record.topic for e in entries],
                "partitions": [e.record.partition for e in entries],
                "offsets": [e.record.offset for e in entries],
            },
        )

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


def cancel_running(conn: psycopg.Connection[Any] | None) -> None:
    """Ask the server to cancel `conn`'s running statement; best effort, safe from another thread."""
    if conn is not None and not conn.closed:
        try:
            conn.cancel_safe(timeout=2.0)
        except Exception as exc:  # the connection may be gone already
            log.debug("cancel failed: %s", exc)


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
