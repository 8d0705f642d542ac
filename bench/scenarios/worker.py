"""worker: ``accumulator consume`` end to end (SPEC §21), against a naive consumer and a bare Kafka read.

- ``worker_single``: ``worker_commands`` single-movement post commands are produced to a 3-partition topic
  (key = recorder) before one worker (``python -m consumer consume``, a subprocess) starts; it is timed from
  its start until its stored offsets (``accum.consumer_offsets``) reach every partition's high watermark.
  Startup (to its first offsets row) is reported apart. Baselines in the same run, on the same kind of data:
  the *naive consumer* (in this process: one autocommitted ``register_apply`` of one command per message,
  over a sample, to a register of its own) and a plain consume of the worker's topic with no sink.
- ``worker_docs``: the same with 5-movement documents (``worker_doc_commands`` commands).
- ``worker_latency``: a running worker (batch wait 50 ms) gets commands at a steady 5k/s; a message is visible
  at the first poll of its partition's stored offset (every 5 ms) past its offset; p50/p95/p99 of
  produce-to-visible.

Where the time goes: the worker's and its PostgreSQL sessions' CPU time (``/proc``), the share of samples its
sessions were busy in PostgreSQL, the bare Kafka read as a share of the worker's time; with
``ACCUMULATOR_BENCH_PROFILE=1`` the ``worker_single`` worker runs under cProfile
(``bench/results/worker.prof``, top entries printed at the end; its figures are then slower than the
worker's own).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.context import Bench
from bench.db import Conn, connect
from bench.fixtures import create_register, recent_period
from bench.kafka import (
    Broker,
    Sent,
    assign_from_start,
    broker,
    high_watermarks,
    plain_consume,
    produce_all,
    produce_paced,
    reader,
    topics,
)
from bench.report import Result, Target, ratio
from bench.stats import summarize
from bench.waits import CPU, profile
from bench.workload import Workload

__all__ = [
    "WORKER_PARTS",
    "WORKER_SCENARIOS",
    "caught_up",
    "command",
    "cpu_seconds",
    "host_busy",
    "parts",
    "status_kb",
    "visible_latencies",
    "worker",
]

WORKER_PARTS: Final = ("worker_single", "worker_docs", "worker_latency")
WORKER_SCENARIOS: Final = ("worker", *WORKER_PARTS)  # "worker": all of its parts
PARTITIONS: Final = 3
DOC_LINES: Final = 5
LATENCY_RATE: Final = 5000.0  # commands/s (SPEC §21)
LATENCY_WAIT_MS: Final = 50
LATENCY_WARMUP: Final = 30  # commands the worker applies before the paced run (plans, connections)
P99_TARGET_MS: Final = 250.0
NAIVE_TARGET: Final = 20.0
STRETCH_MPS: Final = 50_000.0
POLL_S: Final = 0.02  # offsets poll and session sampling while a pre-produced topic drains
WATCH_S: Final = 0.005  # offsets poll of the latency run
STOP_TIMEOUT_S: Final = 40.0  # SIGTERM, then SIGKILL (the worker's own shutdown grace is 25 s)
PROFILE_ENV: Final = "ACCUMULATOR_BENCH_PROFILE"
ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS_DIR: Final = ROOT / "bench" / "results"
_OFFSETS: Final = (
    b"SELECT partition, next_offset FROM accum.consumer_offsets WHERE consumer_group = %s AND topic = %s"
)
_NAIVE_APPLY: Final = b"SELECT outcome FROM accum.register_apply(jsonb_build_array(%s::jsonb), 'skip')"
# The worker's sessions: every client backend of this run's database but the bench's own ones; for an active
# one, the start of its statement (comment lines dropped), to tell the engine call from the bookkeeping.
_SESSIONS: Final = rf"""
SELECT pid, CASE WHEN wait_event IS NOT NULL THEN wait_event_type || ':' || wait_event
                 WHEN state = 'active' THEN '{CPU}' ELSE coalesce(state, 'gone') END,
       CASE WHEN state = 'active' THEN
           left(regexp_replace(regexp_replace(query, '^(\s*--[^\n]*\n)*\s*', ''), '\s+', ' ', 'g'), 50) END
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> ALL (%s)
""".encode()


# --- pure parts ---------------------------------------------------------------------------------------------


def parts(wanted: Iterable[str]) -> list[str]:
    """PURE: the parts to run, in run order; ``worker`` stands for all of them."""
    chosen = set(wanted)
    return [p for p in WORKER_PARTS if p in chosen or "worker" in chosen]


def caught_up(stored: Mapping[int, int], high: Mapping[int, int]) -> bool:
    """PURE: every partition with messages has its stored next offset at (or past) its high watermark."""
    return all(stored.get(p, -1) >= end for p, end in high.items() if end > 0)


Seen = tuple[float, int, int]  # (poll time, partition, next_offset)


def visible_latencies(sent: Sequence[Sent], seen: Sequence[Seen]) -> tuple[list[float], int]:
    """PURE: seconds from each message's produce to the first poll that showed its partition's stored
    next offset past the message's offset; and how many messages no poll showed."""
    polls: dict[int, tuple[list[float], list[int]]] = {}
    for at, partition, next_offset in sorted(seen):
        times, offsets = polls.setdefault(partition, ([], []))
        if offsets and next_offset <= offsets[-1]:
            continue  # offsets only move forward; an equal poll adds nothing
        times.append(at)
        offsets.append(next_offset)
    latencies: list[float] = []
    unseen = 0
    for s in sent:
        times, offsets = polls.get(s.partition, ([], []))
        i = bisect.bisect_right(offsets, s.offset)  # first poll with next_offset > offset
        if i == len(offsets):
            unseen += 1
        else:
            latencies.append(times[i] - s.at)
    return latencies, unseen


def status_kb(text: str, name: str) -> int | None:
    """PURE: a ``kB`` line of ``/proc/<pid>/status`` (``VmHWM``: peak resident set), None if absent."""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            fields = rest.split()
            return int(fields[0]) if fields else None
    return None


def cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """PURE: user + system CPU seconds of a process (all its threads) from ``/proc/<pid>/stat``."""
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / ticks_per_second  # utime, stime (fields 14, 15)


def host_busy(before: str, after: str) -> float:
    """PURE: share of all CPUs' time not idle between two readings of the first line of ``/proc/stat``."""
    a = [int(x) for x in before.split()[1:]]
    b = [int(x) for x in after.split()[1:]]
    delta = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    return (total - idle) / total if total > 0 else 0.0


def command(register: str, recorder: str, movements: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    """PURE: (key, value) of one SPEC §13.1 post command; movements take the command's recorder."""
    items = [{k: v for k, v in m.items() if k != "recorder"} for m in movements]
    value = {"op": "post", "register": register, "recorder": recorder, "movements": items}
    return recorder.encode(), json.dumps(value, separators=(",", ":")).encode()


# --- /proc readings (None where the process is not ours to read or not on this host) ------------------------

_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpu(pid: int | None) -> float | None:
    text = None if pid is None else _read(f"/proc/{pid}/stat")
    return None if text is None else cpu_seconds(text, _TICKS)


def _postgres_cpu(pids: Iterable[int]) -> float | None:
    """CPU seconds of these backends if they run on this host (a --dsn server elsewhere: None)."""
    total, found = 0.0, False
    for pid in pids:
        if "postgres" not in (_read(f"/proc/{pid}/cmdline") or ""):
            continue
        cpu = _cpu(pid)
        if cpu is not None:
            total, found = total + cpu, True
    return total if found else None


def _host_stat() -> str:
    return (_read("/proc/stat") or "cpu 0 0 0 0").splitlines()[0]


# --- the worker process -------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """``python -m consumer consume`` as a subprocess; its output goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float  # perf_counter() just before the spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        text = _read(str(self.log_path)) or ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def peak_rss_kb(self) -> int | None:
        text = _read(f"/proc/{self.pid}/status")
        return None if text is None else status_kb(text, "VmHWM")

    def stop(self) -> int:
        """SIGTERM, wait for the PID; SIGKILL past the deadline. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(30)


def start_worker(
    b: Bench, k: Broker, topic: str, group: str, *, wait_ms: int | None, log_path: Path, prof: Path | None
) -> WorkerProcess:
    env = {key: v for key, v in os.environ.items() if not key.startswith("ACCUMULATOR_")}
    env |= {
        "ACCUMULATOR_DSN": b.dsn,
        "ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS": k.bootstrap,
        "ACCUMULATOR_KAFKA_TOPICS": topic,
        "ACCUMULATOR_KAFKA_GROUP_ID": group,
        "ACCUMULATOR_KAFKA_CLIENT_ID": f"bench-{group}",
        "ACCUMULATOR_METRICS_PORT": "0",
    }
    if wait_ms is not None:
        env["ACCUMULATOR_BATCH_MAX_WAIT_MS"] = str(wait_ms)
    argv = [sys.executable, "-m", "consumer", "consume"]
    if prof is not None:
        argv[1:1] = ["-m", "cProfile", "-o", str(prof)]
    if setpriv := shutil.which("setpriv"):
        argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]  # a killed bench leaves no worker (same PID)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the bench reaches the worker once, as our SIGTERM
        )  # fmt: skip
    return WorkerProcess(proc, log_path, started)


@contextlib.contextmanager
def running_worker(
    b: Bench, k: Broker, topic: str, group: str, *, wait_ms: int | None, log_path: Path, prof: Path | None
) -> Iterator[tuple[WorkerProcess, list[int]]]:
    """A started worker, stopped at exit; the list receives its exit code."""
    exit_code: list[int] = []
    w = start_worker(b, k, topic, group, wait_ms=wait_ms, log_path=log_path, prof=prof)
    try:
        yield w, exit_code
    finally:
        exit_code.append(w.stop())


def stored_offsets(conn: Conn, group: str, topic: str) -> dict[int, int]:
    return {int(p): int(o) for p, o in conn.execute(_OFFSETS, (group, topic)).fetchall()}


def _check_alive(w: WorkerProcess, what: str) -> None:
    if not w.alive():
        raise RuntimeError(f"worker exited {w.proc.returncode} {what}: {w.tail(5)}")


# --- sampling the worker's PostgreSQL sessions -------------------------------------------------------------


class SessionSampler(threading.Thread):
    """Samples ``pg_stat_activity`` of the worker's sessions every ``POLL_S``: what they were doing."""

    def __init__(self, b: Bench, exclude: Sequence[int]) -> None:
        super().__init__(daemon=True)
        self.dsn = b.dsn
        self.exclude = list(exclude)
        self.states: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()  # samples of active sessions, by statement start
        self.pids: set[int] = set()
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.dsn) as conn:
                exclude = [*self.exclude, conn.info.backend_pid]
                while not self.halt.wait(POLL_S):
                    for pid, state, statement in conn.execute(_SESSIONS, (exclude,)).fetchall():
                        self.pids.add(int(pid))
                        self.states[str(state)] += 1
                        if statement is not None:
                            self.statements[str(statement)] += 1
        except BaseException as exc:  # reported with the figures; sampling must not kill the run
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


# --- a timed drain of a pre-produced topic -----------------------------------------------------------------


@dataclass
class Drain:
    seconds: float  # worker start to caught up
    startup: float | None  # worker start to its first offsets row
    exit_code: int | None = None
    peak_rss_kb: int | None = None
    worker_cpu: float | None = None  # seconds, whole run (startup included)
    worker_cpu_startup: float | None = None
    postgres_cpu: float | None = None  # the worker's backends
    broker_cpu: float | None = None  # local broker only
    host_busy: float | None = None  # share of all CPUs over the run
    states: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    sessions: int = 0

    @property
    def after_startup(self) -> float:
        return self.seconds - (self.startup or 0.0)


def drain(
    b: Bench,
    k: Broker,
    topic: str,
    group: str,
    high: Mapping[int, int],
    movements: int,
    log_path: Path,
    prof: Path | None,
) -> Drain:
    """Start a worker on a pre-produced topic and time it until it has caught up; then stop it."""
    deadline_s = 60.0 + movements / 1000.0  # generous: a 1k movements/s worker still finishes
    host_before = _host_stat()
    broker_before = _cpu(k.pid)
    sampler = SessionSampler(b, [b.conn.info.backend_pid])
    with running_worker(b, k, topic, group, wait_ms=None, log_path=log_path, prof=prof) as (w, exit_code):
        sampler.start()
        try:
            startup: float | None = None
            cpu_startup: float | None = None
            next_note = time.monotonic() + 10
            while True:
                stored = stored_offsets(b.conn, group, topic)
                now = time.perf_counter()
                if stored and startup is None:
                    startup, cpu_startup = now - w.started, _cpu(w.pid)
                if caught_up(stored, high):
                    break
                _check_alive(w, "before catching up")
                if now - w.started > deadline_s:
                    raise RuntimeError(f"worker not caught up after {deadline_s:.0f}s: {stored} of {high}")
                if time.monotonic() > next_note:
                    done = sum(stored.values())
                    b.log(f"{topic}: worker at {done:,} of {sum(high.values()):,} commands")
                    next_note += 10
                time.sleep(POLL_S)  # the poll cadence of a wait bounded by deadline_s
            result = Drain(
                seconds=now - w.started,
                startup=startup,
                peak_rss_kb=w.peak_rss_kb(),
                worker_cpu=_cpu(w.pid),
                worker_cpu_startup=cpu_startup,
                host_busy=host_busy(host_before, _host_stat()),
            )
            after = _cpu(k.pid)
            if broker_before is not None and after is not None:
                result.broker_cpu = after - broker_before
        finally:
            sampler.stop()
        result.postgres_cpu = _postgres_cpu(sampler.pids)  # before the stop: the backends still exist
        result.states, result.statements = sampler.states, sampler.statements
        result.sessions = len(sampler.pids)
    result.exit_code = exit_code[0]
    return result


# --- the naive consumer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Naive:
    commands: int
    seconds: float
    rejected: int


def naive_consume(b: Bench, bootstrap: str, topic: str, n: int, *, timeout: float = 300.0) -> Naive:
    """One ``register_apply`` of one command per message, each its own autocommitted transaction; the raw
    message text goes to the engine (no client-side decoding: a kinder baseline than a real one)."""
    consumer = reader(bootstrap, "bench-naive")
    assign_from_start(consumer, topic, range(PARTITIONS))
    done = rejected = 0
    first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        with b.connect() as conn:
            while done < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{topic}: naive consumer at {done} of {n} after {timeout}s")
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                if msg.error() is not None:
                    raise RuntimeError(f"{topic}: {msg.error()}")
                if first is None:
                    first = time.perf_counter()
                row = conn.execute(_NAIVE_APPLY, ((msg.value() or b"").decode(),)).fetchone()
                rejected += 0 if row is not None and row[0] == "applied" else 1
                done += 1
            seconds = time.perf_counter() - (first or time.perf_counter())
    finally:
        consumer.close()
    return Naive(done, seconds, rejected)


# --- the parts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Names of one worker run: topics, group and files are unique per bench run."""

    stamp: str
    part: str

    @property
    def topic(self) -> str:
        return f"bench.{self.stamp}.{self.part}"

    @property
    def group(self) -> str:
        return f"bench-{self.stamp}-{self.part}"

    @property
    def log_path(self) -> Path:
        return RESULTS_DIR / f"{self.stamp}-{self.part}-worker.log"


def _commands(register: str, prefix: str, n: int, lines: int, gen: Workload) -> Iterator[tuple[bytes, bytes]]:
    now = datetime.now(UTC)
    for i in range(n):
        recorder = f"{prefix}:{i + 1}"
        period = recent_period(gen.rnd.random(), now)
        yield command(register, recorder, gen.document(recorder, period, lines))


def _error(part: str, what: str, exc: BaseException) -> Result:
    return Result(
        part,
        what,
        None,
        note=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
        target=Target("==", 0, on="value", label="runs"),
    )


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


def _where(d: Drain) -> str:
    """One line: CPU of each party as a share of one core over the run, and the worker sessions' states."""
    s = d.seconds
    parts_ = [
        f"worker process {_pct(None if d.worker_cpu is None else d.worker_cpu / s)} of a core",
        f"its PostgreSQL backends {_pct(None if d.postgres_cpu is None else d.postgres_cpu / s)}",
    ]
    if d.broker_cpu is not None:
        parts_.append(f"broker {_pct(d.broker_cpu / s)}")
    parts_.append(f"host {_pct(d.host_busy)} of {os.cpu_count()} CPUs busy")
    return (
        ", ".join(parts_)
        + f"; worker sessions: {profile(d.states)}; active in: {profile(d.statements, top=2)}"
    )


def _throughput(b: Bench, k: Broker, stamp: str, part: str) -> list[Result]:
    lines = DOC_LINES if part == "worker_docs" else 1
    n = b.plan.worker_doc_commands if part == "worker_docs" else b.plan.worker_commands
    naive_n = max(200, b.plan.worker_naive_movements // lines)
    reg, naive_reg = f"wk{lines}", f"wk{lines}_naive"
    run = Run(stamp, part)
    create_register(b.conn, reg)
    create_register(b.conn, naive_reg)
    naive_topic = f"{run.topic}.naive"
    out: list[Result] = []
    names = [run.topic, naive_topic, f"{run.topic}.dlq"]
    with topics(k.bootstrap, names, partitions=PARTITIONS, keep=b.keep):
        gen = Workload(b.shape, stream=40 + lines)
        produced = produce_all(k.bootstrap, run.topic, _commands(reg, f"{part}", n, lines, gen))
        high = high_watermarks(k.bootstrap, run.topic)
        b.log(f"{part}: {n:,} commands x {lines} produced in {produced.seconds:.1f}s; partitions {high}")
        plain = plain_consume(k.bootstrap, run.topic, high)
        plain_rate = plain.rate
        produce_all(k.bootstrap, naive_topic, _commands(naive_reg, f"{part}:naive", naive_n, lines, gen))
        naive = naive_consume(b, k.bootstrap, naive_topic, naive_n)
        naive_mps = naive.commands * lines / naive.seconds
        b.log(f"{part}: plain consume {plain_rate:,.0f} msg/s, naive consumer {naive_mps:,.0f} movements/s")
        out += [
            Result(
                part,
                "naive consumer movements/s",
                naive_mps,
                "/s",
                note=f"{naive.commands:,} commands, one autocommitted register_apply each"
                + (f"; {naive.rejected} rejected" if naive.rejected else ""),
                details={"commands": naive.commands, "seconds": naive.seconds, "rejected": naive.rejected},
            ),
            Result(
                part,
                "plain consume messages/s (no sink)",
                plain_rate,
                "/s",
                note=f"{plain.messages:,} messages of {plain.value_bytes / plain.messages:.0f} B; the first "
                f"after {plain.first:.2f}s (client start, left out)",
                details={
                    "messages": plain.messages,
                    "bytes": plain.value_bytes,
                    "seconds": plain.seconds,
                    "first_message_s": plain.first,
                },
            ),
        ]
        profiling = part == "worker_single" and os.environ.get(PROFILE_ENV) == "1"
        prof = RESULTS_DIR / "worker.prof" if profiling else None
        b.log(f"{part}: worker draining {n:,} commands" + (" (under cProfile)" if profiling else ""))
        try:
            d = drain(b, k, run.topic, run.group, high, n * lines, run.log_path, prof)
        except Exception as exc:
            traceback.print_exc()
            return [*out, _error(part, "worker run", exc)]
    out += _drain_results(b, part, reg, d, n, lines, naive_mps, plain.seconds, run, profiling)
    if prof is not None:
        _print_profile(b, prof)
    return out


def _drain_results(
    b: Bench,
    part: str,
    reg: str,
    d: Drain,
    n: int,
    lines: int,
    naive_mps: float,
    plain_seconds: float,
    run: Run,
    profiling: bool,
) -> list[Result]:
    movements = n * lines
    mps = movements / d.seconds
    mps_run = movements / d.after_startup if d.after_startup > 0 else None
    stored = int(b.scalar(f"SELECT count(*) FROM accum.{reg}_movements"))
    problems = int(b.scalar("SELECT count(*) FROM accum.register_verify(%s, true)", (reg,)))
    kafka_share = plain_seconds / d.after_startup if d.after_startup > 0 else None
    how = f"{n:,} commands x {lines}" + ("; UNDER cProfile" if profiling else "")
    details: dict[str, Any] = {
        "commands": n,
        "movements": movements,
        "seconds": d.seconds,
        "startup_s": d.startup,
        "peak_rss_kb": d.peak_rss_kb,
        "worker_cpu_s": d.worker_cpu,
        "worker_cpu_startup_s": d.worker_cpu_startup,
        "postgres_cpu_s": d.postgres_cpu,
        "broker_cpu_s": d.broker_cpu,
        "host_busy": d.host_busy,
        "worker_sessions": d.sessions,
        "session_states": dict(d.states.most_common()),
        "active_statements": dict(d.statements.most_common()),
        "exit_code": d.exit_code,
        "log": str(run.log_path),
        "profiled": profiling,
    }
    return [
        Result(
            part,
            "movements/s start to caught-up, 1 worker",
            mps,
            "/s",
            naive_mps,
            "naive consumer",
            ratio(mps, naive_mps),
            # on single movements only: a naive consumer of 5-movement documents already batches 5 to a call
            Target(">=", NAIVE_TARGET, label=f">= {NAIVE_TARGET:.0f}x naive consumer")
            if lines == 1
            else None,
            note=how if lines == 1 else f"{how}; info (the naive-consumer target is on worker_single)",
            details=details,
        ),
        Result(
            part,
            "movements/s start to caught-up (stretch)",
            mps,
            "/s",
            target=Target(">=", STRETCH_MPS, on="value", label=f">= {STRETCH_MPS:,.0f}/s (stretch)"),
            note=f"stretch target: at {mps / STRETCH_MPS:.0%} of it",
        ),
        Result(
            part,
            "movements/s after startup",
            mps_run,
            "/s",
            note=f"a bare Kafka read of the topic (client start included) takes {_pct(kafka_share)} of it",
            details={"kafka_share": kafka_share},
        ),
        Result(part, "worker startup (to first offsets row)", d.startup, "s"),
        Result(
            part,
            "worker peak RSS",
            None if d.peak_rss_kb is None else d.peak_rss_kb / 1024,
            "MiB",
            note="VmHWM" + (", cProfile included" if profiling else ""),
        ),
        Result(
            part,
            "worker CPU over the run",
            None if d.worker_cpu is None else d.worker_cpu / d.seconds,
            "cores",
            note=_where(d),
        ),
        Result(
            part,
            "movements stored - produced, verify problems",
            abs(stored - movements) + problems,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details={"stored": stored, "produced": movements, "verify_problems": problems},
        ),
        Result(
            part,
            "worker exit code after SIGTERM",
            d.exit_code,
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            note=f"log: {run.log_path.name}",
        ),
    ]


def _print_profile(b: Bench, prof: Path) -> None:
    if not prof.is_file():
        b.log(f"no profile written at {prof} (did the worker exit through SystemExit?)")
        return
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.strip_dirs().sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    text = buf.getvalue()
    prof.with_suffix(".txt").write_text(text)
    print(f"\nworker profile ({prof}):\n{text}", file=sys.stderr, flush=True)


class OffsetWatcher(threading.Thread):
    """Polls the worker's stored offsets every ``WATCH_S``; records each change with the poll's end time."""

    def __init__(self, dsn: str, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.group, self.topic = dsn, group, topic
        self.seen: list[Seen] = []
        self.latest: dict[int, int] = {}
        self.polls = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.dsn) as conn:
                while not self.halt.is_set():
                    stored = stored_offsets(conn, self.group, self.topic)
                    at = time.perf_counter()  # after the answer: visibility happened before it
                    self.polls += 1
                    for p, o in stored.items():
                        if self.latest.get(p) != o:
                            self.seen.append((at, p, o))
                    self.latest = stored
                    self.halt.wait(WATCH_S)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def _wait_caught_up(w: WorkerProcess, read: Any, high: Mapping[int, int], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not caught_up(read(), high):
        _check_alive(w, what)
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not caught up {what} after {within:.0f}s: {read()} of {dict(high)}")
        time.sleep(POLL_S)  # poll cadence of a wait bounded by the deadline


def _cores(
    before: Mapping[str, float | None], after: Mapping[str, float | None], seconds: float
) -> dict[str, float | None]:
    """Each process's CPU seconds between two readings, as a share of one core over ``seconds``."""
    out: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        out[name] = None if start is None or end is None or seconds <= 0 else (end - start) / seconds
    return out


def _latency(b: Bench, k: Broker, stamp: str) -> list[Result]:
    part = "worker_latency"
    run = Run(stamp, part)
    reg = "wkl"
    create_register(b.conn, reg)
    gen = Workload(b.shape, stream=49)
    total = round(LATENCY_RATE * b.plan.worker_latency_seconds)
    warmup = list(_commands(reg, "warm", LATENCY_WARMUP, 1, gen))
    paced_messages = list(_commands(reg, "lat", total, 1, gen))  # built before the clock starts
    with (
        topics(k.bootstrap, [run.topic, f"{run.topic}.dlq"], partitions=PARTITIONS, keep=b.keep),
        running_worker(
            b, k, run.topic, run.group, wait_ms=LATENCY_WAIT_MS, log_path=run.log_path, prof=None
        ) as (w, exit_code),
    ):
        warm = produce_all(k.bootstrap, run.topic, warmup)
        _wait_caught_up(
            w, lambda: stored_offsets(b.conn, run.group, run.topic), warm.next_offsets, 120, "on warm-up"
        )
        ready = time.perf_counter() - w.started
        b.log(f"{part}: worker ready after {ready:.1f}s; {total:,} commands at {LATENCY_RATE:,.0f}/s")
        watcher = OffsetWatcher(b.dsn, run.group, run.topic)
        watcher.start()
        cpu_before = {"worker": _cpu(w.pid), "bench": _cpu(os.getpid()), "broker": _cpu(k.pid)}
        host_before = _host_stat()
        try:
            paced = produce_paced(k.bootstrap, run.topic, paced_messages, LATENCY_RATE)
            high = high_watermarks(k.bootstrap, run.topic)
            _wait_caught_up(w, lambda: watcher.latest, high, 120, "after the paced run")
        finally:
            watcher.stop()
        cpu_after = {"worker": _cpu(w.pid), "bench": _cpu(os.getpid()), "broker": _cpu(k.pid)}
        cpu = _cores(cpu_before, cpu_after, paced.seconds)
        host = host_busy(host_before, _host_stat())
        rss = w.peak_rss_kb()
    if watcher.error is not None:
        raise RuntimeError(f"offset watcher failed: {watcher.error}")
    latencies, unseen = visible_latencies(paced.sent, watcher.seen)
    if not latencies:
        raise RuntimeError("no message became visible")
    s = summarize(latencies)
    kept = paced.achieved_rate >= 0.95 * LATENCY_RATE and paced.max_lag <= 0.1
    producer = f"producer {paced.achieved_rate:,.0f}/s, max lag {paced.max_lag * 1000:.0f} ms" + (
        "" if kept else " (COULD NOT KEEP THE RATE)"
    )
    details = {
        **s.as_dict(),
        "messages": total,
        "unseen": unseen,
        "delivery_errors": len(paced.errors),
        "achieved_rate": paced.achieved_rate,
        "max_lag_s": paced.max_lag,
        "kept_rate": kept,
        "polls": watcher.polls,
        # polls that saw an offset move: about the worker's commits (two within one poll count once)
        "commits_seen": len({at for at, _, _ in watcher.seen}),
        "batch_max_wait_ms": LATENCY_WAIT_MS,
        "peak_rss_kb": rss,
        "cores_during_paced_run": cpu,
        "host_busy": host,
        "exit_code": exit_code[0],
        "log": str(run.log_path),
    }
    busy = ", ".join(f"{name} {_pct(x)}" for name, x in cpu.items() if x is not None)
    wait = (
        f"batch wait {LATENCY_WAIT_MS} ms, poll {WATCH_S * 1000:.0f} ms; CPU (of a core) {busy}, "
        f"host {_pct(host)} of {os.cpu_count()} CPUs busy"
    )
    return [
        Result(
            part,
            f"produce-to-visible p99 at {LATENCY_RATE:,.0f} commands/s",
            s.p99_ms,
            "ms",
            target=Target("<=", P99_TARGET_MS, on="value", label=f"<= {P99_TARGET_MS:.0f} ms"),
            note=f"{wait}; {producer}",
            details=details,
        ),
        Result(part, "produce-to-visible p50", s.p50_ms, "ms", note=f"{s.n:,} messages"),
        Result(part, "produce-to-visible p95", s.p95_ms, "ms", note=f"max {s.max_ms:.0f} ms"),
        Result(
            part,
            "producer rate achieved",
            paced.achieved_rate,
            "/s",
            LATENCY_RATE,
            "asked",
            ratio(paced.achieved_rate, LATENCY_RATE),
            note="kept" if kept else producer,
        ),
        Result(
            part,
            "messages never visible, worker exit code",
            unseen + abs(exit_code[0]),
            "count",
            target=Target("==", 0, on="value", label="= 0"),
            details={"unseen": unseen, "exit_code": exit_code[0]},
        ),
    ]


def worker(b: Bench, wanted: Iterable[str], kafka: str | None = None) -> list[Result]:
    """Run the chosen parts on one broker (``kafka``: a bootstrap address, else env or a local broker)."""
    chosen = parts(wanted)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    results: list[Result] = []
    with broker(kafka, keep=b.keep, log=b.log) as k:
        b.log(f"worker: Kafka at {k.bootstrap}" + (" (local)" if k.local else ""))
        for part in chosen:
            b.log(f"{part} ...")
            try:
                if part == "worker_latency":
                    results += _latency(b, k, stamp)
                else:
                    results += _throughput(b, k, stamp, part)
            except Exception as exc:  # one broken part must not hide the others' figures
                traceback.print_exc()
                results.append(_error(part, "error", exc))
    return results
