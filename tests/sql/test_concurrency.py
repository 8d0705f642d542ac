"""Concurrent writers on overlapping keys and recorders (SPEC §7.2, §9, §12).

Eight threads, each with its own connection, run random post / unpost / repost / register_apply calls on the
same few recorders and dimension combinations, documents listing their lines in random orders; on a
high-write register a merger thread folds the delta buffer meanwhile, and a verifier thread runs
``register_verify`` throughout (one snapshot: no false reports). Expected: no deadlock (40P01) and no other
error; afterwards every read equals the sums of the movements table, verify is clean, and each recorder's
movements are whole commands: a reposted document comes from exactly one repost, a posted one only from
posts that survived entirely.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import Conn
from psycopg import sql

WRITERS = 8
OPS_PER_WRITER = 100
ITEMS = ("a|b", "Склад", "q'\"\\")
WHS = (1, 2)
# Reposted documents are only reposted or unposted; posted ones only posted or unposted: then "whole
# commands" is checkable from the tags alone (a post appends to a document, a repost replaces it).
REPOST_RECORDERS = ("rep-1", "rep-2", "rep-3")
POST_RECORDERS = ("post-1", "post-2", "post-3")
RESOURCES = ("amount", "qty", "tag")


@dataclass
class Outcome:
    """What the threads saw: errors (thread, SQLSTATE, message), lines per command tag, op counts."""

    errors: list[tuple[str, str | None, str]] = field(default_factory=list)
    lines_per_tag: dict[int, int] = field(default_factory=dict)
    kind_of_tag: dict[int, str] = field(default_factory=dict)
    ops: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, who: str, exc: BaseException) -> None:
        state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        with self.lock:
            self.errors.append((who, state, str(exc).splitlines()[0] if str(exc) else repr(exc)))


def _connect(dsn: str) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True)
    # Deadlocks surface fast; a lock wait that never ends becomes an error instead of a hung test.
    conn.execute("SET deadlock_timeout = '100ms'")
    conn.execute("SET lock_timeout = '15s'")
    conn.execute("SET statement_timeout = '30s'")
    return conn


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class Writer:
    """One thread's random calls; every line of one command carries the command's tag."""

    def __init__(self, index: int, dsn: str, register: str, seed: int, outcome: Outcome) -> None:
        self.index, self.dsn, self.register, self.outcome = index, dsn, register, outcome
        self.rng = random.Random(seed)
        self.next_tag = index * 100_000

    def lines(self, tag: int, least: int) -> list[dict[str, Any]]:
        keys = [(self.rng.choice(ITEMS), self.rng.choice(WHS)) for _ in range(self.rng.randint(least, 5))]
        self.rng.shuffle(keys)  # lines in any order: the engine must lock in its own order
        out = []
        for n, (item, wh) in enumerate(keys):
            day = self.rng.choice(
                ("2025-01-31T23:30", "2025-02-01", "2026-12-31T23:59:59.5", "2027-01-01T00:00Z")
            )
            out.append(
                {
                    "period": day,
                    "item": item,
                    "wh": wh,
                    "amount": f"{self.rng.randint(-999, 999)}.{n:02d}",
                    "qty": self.rng.randint(-5, 5),
                    "tag": tag,
                }
            )
        return out

    def command(self) -> dict[str, Any]:
        self.next_tag += 1
        tag = self.next_tag
        op = self.rng.choices(("post", "repost", "unpost"), weights=(2, 2, 1))[0]
        if op == "post":
            rec, lines = self.rng.choice(POST_RECORDERS), self.lines(tag, 1)
        elif op == "repost":
            rec, lines = self.rng.choice(REPOST_RECORDERS), self.lines(tag, 0)
        else:
            rec, lines = self.rng.choice(POST_RECORDERS + REPOST_RECORDERS), []
        with self.outcome.lock:
            self.outcome.lines_per_tag[tag] = len(lines)
            self.outcome.kind_of_tag[tag] = op
        cmd: dict[str, Any] = {"op": op, "register": self.register, "recorder": rec}
        if op != "unpost":
            cmd["movements"] = lines
        return cmd

    def run(self, start: threading.Barrier) -> None:
        who = f"writer-{self.index}"
        try:
            with _connect(self.dsn) as conn:
                start.wait()
                for _ in range(OPS_PER_WRITER):
                    self.one_call(conn, who)
        except BaseException as exc:  # a thread must report, never die silently
            self.outcome.error(who, exc)

    def one_call(self, conn: Conn, who: str) -> None:
        shape = self.rng.random()
        try:
            if shape < 0.35:  # a batch, as the worker sends it
                cmds = [self.command() for _ in range(self.rng.randint(2, 6))]
                rows = conn.execute(
                    "SELECT outcome, sqlstate, message FROM accum.register_apply(%s::jsonb, 'skip')",
                    (_json(cmds),),
                ).fetchall()
                for outcome, state, message in rows:
                    if outcome != "applied":
                        self.outcome.error(who, RuntimeError(f"apply rejected ({state}): {message}"))
                kind = "apply"
            else:
                cmd = self.command()
                if cmd["op"] == "post":
                    data = [{"recorder": cmd["recorder"], **m} for m in cmd["movements"]]
                    conn.execute("SELECT accum.register_post(%s, %s::jsonb)", (self.register, _json(data)))
                elif cmd["op"] == "repost":
                    conn.execute(
                        "SELECT accum.register_repost(%s, %s, %s::jsonb)",
                        (self.register, cmd["recorder"], _json(cmd["movements"])),
                    )
                else:
                    conn.execute("SELECT accum.register_unpost(%s, %s)", (self.register, cmd["recorder"]))
                kind = cmd["op"]
            with self.outcome.lock:
                self.outcome.ops[kind] += 1
        except psycopg.Error as exc:
            self.outcome.error(who, exc)


def _background(
    name: str, dsn: str, stop: threading.Event, outcome: Outcome, step: Callable[[Conn], None]
) -> threading.Thread:
    def loop() -> None:
        try:
            with _connect(dsn) as conn:
                while not stop.is_set():
                    step(conn)
                    with outcome.lock:
                        outcome.ops[name] += 1
        except BaseException as exc:
            outcome.error(name, exc)

    return threading.Thread(target=loop, name=name, daemon=True)


def _run(db_dsn: str, register: str, high_write: bool, seed: int) -> Outcome:
    outcome = Outcome()
    stop = threading.Event()
    start = threading.Barrier(WRITERS)
    writers = [
        threading.Thread(
            target=Writer(i, db_dsn, register, seed + i, outcome).run,
            args=(start,),
            name=f"writer-{i}",
            daemon=True,
        )
        for i in range(WRITERS)
    ]
    rng = random.Random(seed)

    def merge(conn: Conn) -> None:
        conn.execute("SELECT accum.register_merge(%s, %s, '0')", (register, rng.randint(1, 40)))

    def verify(conn: Conn) -> None:
        rows = conn.execute(
            "SELECT to_jsonb(v)::text FROM accum.register_verify(%s, true) v", (register,)
        ).fetchall()
        if rows:
            outcome.error("verifier", RuntimeError(f"verify under concurrent writes: {rows[:3]}"))

    helpers = [_background("verifier", db_dsn, stop, outcome, verify)]
    if high_write:
        helpers.append(_background("merger", db_dsn, stop, outcome, merge))
    for t in helpers + writers:
        t.start()
    deadline = time.monotonic() + 60
    for t in writers:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in helpers:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    alive = [t.name for t in writers + helpers if t.is_alive()]
    assert not alive, f"threads still running after 60 s (a lock wait that never ends?): {alive}"
    return outcome


Sums = dict[str, Decimal]


def _fn(register: str, suffix: str) -> sql.Identifier:
    return sql.Identifier("accum", f"{register}_{suffix}")


def _read(conn: Conn, query: sql.Composed, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of one jsonb column, numbers as exact Decimals."""
    rows = conn.execute(query, params).fetchall()
    return [json.loads(r[0], parse_float=Decimal, parse_int=Decimal) for r in rows]


def _expected(conn: Conn, register: str) -> dict[tuple[str, int], Sums]:
    """The model: sums of the movements table per combination."""
    query = sql.SQL("SELECT item, wh, sum(amount), sum(qty), sum(tag) FROM {} GROUP BY item, wh").format(
        _fn(register, "movements")
    )
    rows = conn.execute(query).fetchall()
    return {(r[0], r[1]): dict(zip(RESOURCES, (Decimal(v) for v in r[2:]), strict=True)) for r in rows}


def _add(rows: list[Sums]) -> Sums:
    return {k: sum((r[k] for r in rows), Decimal(0)) for k in RESOURCES}


def _check_final_state(conn: Conn, register: str) -> None:
    """Every read equals the sums of the movements table; verify is clean."""
    model = _expected(conn, register)
    problems = []
    for item in ITEMS:
        for wh in WHS:
            expected = model.get((item, wh), _add([]))
            [got] = _read(
                conn,
                sql.SQL("SELECT {}(%s::jsonb)::text").format(_fn(register, "balance")),
                (json.dumps({"item": item, "wh": wh}),),
            )
            if got != expected:
                problems.append(f"balance {item}/{wh}: expected {expected}, got {got}")
    [got] = _read(conn, sql.SQL("SELECT {}()::text").format(_fn(register, "balance")))
    if got != _add(list(model.values())):
        problems.append(f"balance: expected {_add(list(model.values()))}, got {got}")
    for dim, pos in (("item", 0), ("wh", 1)):
        groups: dict[Any, list[Sums]] = defaultdict(list)
        for key, sums in model.items():
            groups[key[pos]].append(sums)
        expected_rows = {k: _add(v) for k, v in groups.items() if any(_add(v).values())}
        got_rows = {
            r.pop(dim): r
            for r in _read(
                conn,
                sql.SQL("SELECT t::text FROM {}(group_by => %s::jsonb) t").format(_fn(register, "turnover")),
                (json.dumps([dim]),),
            )
        }
        if got_rows != expected_rows:
            problems.append(f"turnover by {dim}: expected {expected_rows}, got {got_rows}")
    verify = conn.execute(
        "SELECT to_jsonb(v)::text FROM accum.register_verify(%s, true) v", (register,)
    ).fetchall()
    if verify:
        problems.append(f"verify: {verify[:5]}")
    assert not problems, "\n".join(problems)


def _check_whole_commands(conn: Conn, register: str, outcome: Outcome) -> None:
    """A reposted document is one repost's lines; a posted one holds whole posts only (SPEC §7.2, §12)."""
    tags: dict[str, Counter[int]] = defaultdict(Counter)
    query = sql.SQL("SELECT recorder, tag, count(*) FROM {} GROUP BY recorder, tag").format(
        _fn(register, "movements")
    )
    for recorder, tag, n in conn.execute(query).fetchall():
        tags[recorder][int(tag)] += n
    problems = []
    for recorder, counts in sorted(tags.items()):
        for tag, n in counts.items():
            if n != outcome.lines_per_tag.get(tag):
                problems.append(
                    f"{recorder}: {n} movements of command {tag}, which had {outcome.lines_per_tag.get(tag)}"
                )
        if recorder in REPOST_RECORDERS and len(counts) != 1:
            problems.append(f"{recorder}: movements of {len(counts)} reposts survive: {sorted(counts)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("high_write", [False, True], ids=["standard", "high_write"])
def test_concurrent_writers_never_deadlock(conn: Conn, db_dsn: str, high_write: bool) -> None:
    register = "cc"
    conn.execute(
        "SELECT accum.register_create(%s, %s::jsonb, %s::jsonb, high_write => %s, time_zone => %s)",
        (
            register,
            '{"item": "text", "wh": "integer"}',
            '{"amount": "numeric(18,2)", "qty": "integer", "tag": "bigint"}',
            high_write,
            "Asia/Kathmandu",
        ),
    )
    seed = random.SystemRandom().randrange(1 << 30)
    outcome = _run(db_dsn, register, high_write, seed)

    assert not outcome.errors, f"seed {seed}: {len(outcome.errors)} errors, first ones: {outcome.errors[:5]}"
    done = sum(outcome.ops[k] for k in ("apply", "post", "repost", "unpost"))
    assert done == WRITERS * OPS_PER_WRITER, f"seed {seed}: {done} calls completed, {dict(outcome.ops)}"
    assert outcome.ops["verifier"] > 0, dict(outcome.ops)
    assert outcome.ops["merger"] > 0 or not high_write, dict(outcome.ops)

    _check_whole_commands(conn, register, outcome)
    _check_final_state(conn, register)  # high-write: pending deltas included in every read
    if high_write:
        conn.execute("SELECT accum.register_merge(%s, 2147483647, '0')", (register,))
        pending = conn.execute(
            "SELECT pending_rows FROM accum.register_delta_status(%s)", (register,)
        ).fetchone()
        assert pending == (0,)
        _check_final_state(conn, register)
