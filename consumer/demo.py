"""`accumulator demo` (SPEC §17): PostgreSQL and Kafka on loopback, the worker and the compactor as child
processes, a producer streaming documents, a live summary; at the end balances, checks and a clean stop.

A run, one method each:
1. home: `<home>/pg` (cluster), `<home>/kafka` (broker log dir), `<home>/cache` (Kafka jars), `<home>/logs`;
   data is kept between runs, `--reset` deletes the cluster and the broker's data, never the jars;
2. servers: PostgreSQL and Kafka on free ports; migrate; registers and topics when absent;
3. children: `accumulator consume` and `accumulator compact`; wait until the worker is ready and has drained
   what an earlier run left in the topic, then read the starting balances (the model's baseline);
4. stream: the producer thread sends `--rate` commands/s; the summary refreshes every second;
5. end (`--duration`, Ctrl-C or SIGTERM): stop the producer, wait for the worker to catch up, print balances
   and the checks (balances = start + what was sent, dead letters, verify), write `<home>/last-run.json`;
6. stop the children (SIGTERM, SIGKILL past a deadline), Kafka and PostgreSQL by PID, whatever happened.

Exit: 0 all checks passed (also after Ctrl-C: it is how a run without `--duration` ends); 3 a check failed
(balances, dead letters, verify, catch-up); 1 a process failed; 2 a prerequisite is missing; 6 the kept data
belongs to another version; 130 a second Ctrl-C skipped the checks, or the first came while starting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self, TextIO

import psycopg
from confluent_kafka import KafkaException

from consumer.demo_model import Expected
from consumer.demo_processes import Child, kafka_cache_dir, metrics_port
from consumer.demo_producer import DemoProducer
from consumer.demo_report import Report, print_balances, read_dead_letters, read_totals, verify_registers
from consumer.demo_stream import DEMO_REGISTERS, DocumentStream
from consumer.demo_summary import LiveView, render, render_line
from consumer.demo_watch import Snapshot, Watcher, ready
from consumer.kafka import client_logger, producer_config
from consumer.localkafka import KAFKA_VERSION, LocalKafka, LocalKafkaError, create_topics, jars_ready
from consumer.localpg import LocalPostgres, LocalPostgresError, PrerequisiteMissing, free_port
from registers import migrate as migrations
from registers.client import RegisterClient
from registers.errors import MigrationError

__all__ = ["DemoError", "DemoOptions", "DemoPaths", "prepare_home", "run"]

log = logging.getLogger("accumulator.demo")

TOPIC: Final = "demo.commands"
DLQ_TOPIC: Final = "demo.commands.dlq"
GROUP: Final = "demo"
PARTITIONS: Final = 3
WORKER_PORT: Final = 9400
COMPACTOR_PORT: Final = 9401
HOST: Final = "127.0.0.1"
READY_WITHIN_S: Final = 60.0
CATCH_UP_WITHIN_S: Final = 30.0
STOP_WITHIN_S: Final = 30.0
REFRESH_S: Final = 1.0
RATE_WINDOW_S: Final = 5.0
RESULT_FILE: Final = "last-run.json"
INTERRUPTED: Final = "interrupted before the checks"


class DemoError(Exception):
    """The demo cannot run; `code` is the exit code (2 prerequisite missing, 6 old data, 1 server failed)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    rate: int = 200
    duration: float | None = None
    reset: bool = False
    seed: int = 20260418


@dataclass(frozen=True)
class DemoPaths:
    home: Path
    pg: Path
    kafka: Path
    cache: Path
    logs: Path


# ---- home -------------------------------------------------------------------------------------------------


def prepare_home(home: Path, reset: bool, out: TextIO) -> DemoPaths:
    """The demo's folders; `--reset` deletes the cluster and the broker's data, nothing else under home.

    As root the server runs as user postgres, which cannot enter a checkout under /root: the cluster
    then lives in /var/tmp, in a folder named after the home, and the demo says so.
    """
    home = home.resolve()
    pg = home / "pg"
    if not LocalPostgres.server_can_reach(home):
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        pg = Path("/var/tmp") / f"accumulator-{digest}" / "pg"
        print(f"note: user postgres cannot enter {home}; the cluster lives in {pg}", file=out)
    kafka = home / "kafka"
    if reset:
        for path in (pg, kafka):
            if path.exists():
                shutil.rmtree(path)
                print(f"reset: deleted {path}", file=out)
    home.mkdir(parents=True, exist_ok=True)
    return DemoPaths(home, pg, kafka, kafka_cache_dir(home), home / "logs")


def migrate_schema(conn: psycopg.Connection[Any], out: TextIO) -> None:
    try:
        report = migrations.migrate(conn, roles="skip")
    except MigrationError as exc:
        # Kept data made by another package version: the demo's data is disposable.
        raise DemoError(
            f"{exc}; the demo data was made by another version: run `accumulator demo --reset`", 6
        ) from exc
    if report.applied:
        print(f"migrated: {', '.join(f'{s.version:04d}_{s.name}' for s in report.applied)}", file=out)


def ensure_registers(client: RegisterClient, out: TextIO) -> None:
    for defn in DEMO_REGISTERS:
        if client.create_register(defn, if_not_exists=True):
            print(f"created register {defn.name}", file=out)


# ---- signals and logs -------------------------------------------------------------------------------------


class Signals:
    """Ctrl-C and SIGTERM. While starting they interrupt (KeyboardInterrupt, the servers are then stopped);
    once streaming the first ends the stream (`stop`), a second skips waiting and reporting (`hurry`).
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.raising = True
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.raising:
            raise KeyboardInterrupt
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    def __enter__(self) -> Self:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """The demo's own log lines go to `path`; the terminal keeps errors only, so the summary stays readable
    (the demo prints what matters itself: a broker coming up, for one, makes its clients warn and retry).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    quietened = [h for h in root.handlers if getattr(h, "_accumulator", False) and h.level < logging.ERROR]
    if root.level <= logging.DEBUG:
        quietened = []  # asked for debug output: show it
    levels = [h.level for h in quietened]
    root.addHandler(handler)
    for h in quietened:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for h, level in zip(quietened, levels, strict=True):
            h.setLevel(level)
        root.removeHandler(handler)
        handler.close()


# ---- the run ----------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Demo:
    """One run's servers, children and clients, so `teardown` can stop whatever was started."""

    def __init__(self, options: DemoOptions, paths: DemoPaths, out: TextIO) -> None:
        self.options = options
        self.paths = paths
        self.out = out
        try:
            self.pg = LocalPostgres(paths.pg, durable=False)
            self.kafka = LocalKafka(paths.kafka, cache_dir=paths.cache, die_with_parent=True)
        except PrerequisiteMissing as exc:
            raise DemoError(str(exc), 2) from exc
        self.today = datetime.now(UTC).date()
        self.run_tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.worker: Child | None = None
        self.compactor: Child | None = None
        self.watcher: Watcher | None = None
        self.producer: DemoProducer | None = None
        self.model = Expected({d.name: d for d in DEMO_REGISTERS})
        self.worker_url = self.compactor_url = ""
        self.dlq_start: dict[int, int] = {}
        self.pids: dict[str, int | None] = {}
        self.result: dict[str, Any] = {"run_tag": self.run_tag, "rate": options.rate}
        self.problems: list[str] = []  # a process failed (exit 1)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- 2. servers

    def start_servers(self) -> None:
        if not jars_ready(self.kafka.cache_dir):
            self.say(
                f"fetching the Kafka {KAFKA_VERSION} jars once into {self.kafka.cache_dir} "
                "(Maven Central; a minute or two) ..."
            )
        try:
            self.pg.start()
            self.pids["postgres"] = self.pg.pid
            self.say(f"PostgreSQL {self.pg.dsn} (data in {self.pg.data_dir}; psql works while the demo runs)")
            self.kafka.start()
            self.pids["kafka"] = self.kafka.pid
        except PrerequisiteMissing as exc:
            raise DemoError(str(exc), 2) from exc
        except LocalPostgresError as exc:
            raise DemoError(
                f"local PostgreSQL failed: {_first_line(exc)} (log: {self.pg.log_file})", 1
            ) from exc
        except LocalKafkaError as exc:
            raise DemoError(
                f"local Kafka failed: {_first_line(exc)} (log: {self.kafka.log_file})", 1
            ) from exc
        self.say(f"Kafka {self.kafka.bootstrap} (data in {self.kafka.data_dir})")

    def prepare(self) -> None:
        with psycopg.connect(self.pg.dsn, autocommit=True, application_name="accumulator-demo") as conn:
            migrate_schema(conn, self.out)
            ensure_registers(RegisterClient(conn), self.out)
        create_topics(self.kafka.bootstrap, [TOPIC, DLQ_TOPIC], PARTITIONS, exist_ok=True)
        self.watcher = Watcher(self.pg.dsn, self.kafka.bootstrap, TOPIC, GROUP)
        if self.watcher.forget_stale_offsets():
            self.say(f"note: {TOPIC} was made anew; the worker's stored offsets start over")

    # -- 3. children

    def start_children(self) -> None:
        worker_port = metrics_port(WORKER_PORT)
        compactor_port = metrics_port(COMPACTOR_PORT)
        while compactor_port == worker_port:  # both busy and the kernel picked the same free port twice
            compactor_port = free_port(HOST)
        for name, want, got in (
            ("worker", WORKER_PORT, worker_port),
            ("compactor", COMPACTOR_PORT, compactor_port),
        ):
            if got != want:
                self.say(f"note: port {want} is busy; the {name} serves its metrics on port {got}")
        self.worker_url = f"http://{HOST}:{worker_port}"
        self.compactor_url = f"http://{HOST}:{compactor_port}"
        common = {
            "ACCUMULATOR_DSN": self.pg.dsn,
            "ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "ACCUMULATOR_KAFKA_TOPICS": TOPIC,
            "ACCUMULATOR_KAFKA_GROUP_ID": GROUP,
            "ACCUMULATOR_METRICS_HOST": HOST,
            "ACCUMULATOR_LOG_LEVEL": "INFO",
        }
        self.worker = Child(
            "worker",
            "consume",
            {
                **common,
                "ACCUMULATOR_KAFKA_CLIENT_ID": "demo-worker",
                "ACCUMULATOR_METRICS_PORT": str(worker_port),
                "ACCUMULATOR_BATCH_MAX_WAIT_MS": "100",
                "ACCUMULATOR_SHUTDOWN_GRACE_MS": "10000",
            },
            self.paths.logs / "worker.log",
        )
        self.pids["worker"] = self.worker.pid
        # Short intervals, so merges and verifies show within the demo's seconds.
        self.compactor = Child(
            "compactor",
            "compact",
            {
                **common,
                "ACCUMULATOR_KAFKA_CLIENT_ID": "demo-compactor",
                "ACCUMULATOR_METRICS_PORT": str(compactor_port),
                "ACCUMULATOR_MERGE_INTERVAL_MS": "1000",
                "ACCUMULATOR_MERGE_DELAY_MS": "1000",
                "ACCUMULATOR_VERIFY_INTERVAL_MS": "10000",
                "ACCUMULATOR_LEADER_POLL_MS": "1000",
            },
            self.paths.logs / "compactor.log",
        )
        self.pids["compactor"] = self.compactor.pid
        self.say(
            f"worker    pid {self.worker.pid}, metrics {self.worker_url}/metrics (log {self.worker.log_path})"
        )
        self.say(
            f"compactor pid {self.compactor.pid}, metrics {self.compactor_url}/metrics "
            f"(log {self.compactor.log_path})"
        )
        self.result["metrics"] = {
            "worker": f"{self.worker_url}/metrics",
            "compactor": f"{self.compactor_url}/metrics",
        }

    def compactor_state(self) -> str:
        if self.compactor is None:
            return "not started"
        code = self.compactor.exit_code()
        if code is None:
            return "running"
        line = self.compactor.last_line()
        if code == 2 and "not available" in line:
            return "not available in this version"
        return f"exited {code}: {line[-120:]}"

    def _worker_failed(self) -> str | None:
        assert self.worker is not None
        code = self.worker.exit_code()
        if code is None:
            return None
        return f"the worker exited ({code}): {self.worker.last_line()[-200:]} (log: {self.worker.log_path})"

    def wait_worker(self) -> None:
        """Ready (in its group), then caught up with what an earlier run left; then the baseline."""
        assert self.watcher is not None
        assert self.worker is not None
        log_path = self.worker.log_path
        deadline = time.monotonic() + READY_WITHIN_S
        while not ready(f"{self.worker_url}/readyz"):
            if failed := self._worker_failed():
                raise DemoError(failed, 1)
            if time.monotonic() >= deadline:
                raise DemoError(f"the worker was not ready within {READY_WITHIN_S:g}s (log: {log_path})", 1)
            time.sleep(0.1)  # poll /readyz; the deadline bounds the wait
        if not self.catch_up(READY_WITHIN_S, threading.Event()):
            raise DemoError(
                f"the worker did not drain the messages an earlier run left within {READY_WITHIN_S:g}s "
                f"(log: {log_path}); `accumulator demo --reset` starts over",
                1,
            )
        client = self.watcher.client
        for defn in DEMO_REGISTERS:
            self.model.start(defn.name, read_totals(client, defn))
        self.dlq_start = self.watcher.watermarks(DLQ_TOPIC)
        self.watcher.mark_start()

    def catch_up(self, within: float, hurry: threading.Event) -> bool:
        """Wait until the worker stored offsets up to the topic's end; False on timeout, hurry or its exit."""
        assert self.watcher is not None
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(psycopg.Error, KafkaException):  # asked again until the deadline
                if self.watcher.lag() == 0:
                    return True
            if hurry.is_set() or self._worker_failed() or time.monotonic() >= deadline:
                return False
            hurry.wait(0.1)  # poll the offsets; the deadline bounds the wait

    # -- 4. stream

    def stream(self, signals: Signals) -> None:
        assert self.watcher is not None
        config: dict[str, Any] = producer_config(
            bootstrap_servers=self.kafka.bootstrap,
            client_id="demo-producer",
            kafka_extra={},
            producer_extra={},
        )
        config["logger"] = client_logger("demo-producer")
        docs = DocumentStream(random.Random(self.options.seed), self.run_tag, self.today)
        self.producer = DemoProducer(config, TOPIC, docs, self.model, rate=self.options.rate)
        duration = self.options.duration
        how_long = "until Ctrl-C" if duration is None else f"for {duration:g} s (Ctrl-C stops early)"
        self.say(f"\nstreaming {self.options.rate} commands/s to {TOPIC} {how_long}\n")
        view = LiveView(self.out)
        started = time.monotonic()
        self.producer.start()
        history: deque[Snapshot] = deque()
        while not signals.stop.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            snap = self.watcher.snapshot(
                sent=self.producer.sent,
                worker_url=f"{self.worker_url}/metrics",
                compactor_url=f"{self.compactor_url}/metrics",
                today=self.today,
            )
            history.append(snap)
            while len(history) > 2 and snap.at - history[0].at > RATE_WINDOW_S:
                history.popleft()
            frame = render(
                history,
                elapsed=elapsed,
                duration=duration,
                compactor_state=self.compactor_state(),
                now=time.time(),
            )
            view.show(frame, render_line(history, elapsed=elapsed))
            if failed := self._worker_failed():
                self.problems.append(failed)
                break
            if self.producer.crashed is not None:
                self.problems.append(f"the demo producer failed: {_first_line(self.producer.crashed)}")
                break
            left = REFRESH_S if duration is None else min(REFRESH_S, duration - (time.monotonic() - started))
            signals.stop.wait(max(left, 0.0))
        view.done()
        self.result["duration_s"] = round(time.monotonic() - started, 2)
        self.result["interrupted"] = signals.stop.is_set()

    # -- 5. end

    def finish(self, signals: Signals) -> Report:
        assert self.producer is not None
        assert self.watcher is not None
        report = Report()
        self.producer.stop()
        if not self.producer.join(40):
            report.failures.append("the producer did not finish flushing")
        p = self.producer
        failed = f", {p.failed} failed ({p.first_error})" if p.failed else ""
        self.say(
            f"\nstopped the producer: {p.sent:,} messages sent ({p.malformed} malformed), "
            f"{p.acked:,} acknowledged{failed}"
        )
        if p.failed or p.unacknowledged:
            report.failures.append(f"{p.failed + p.unacknowledged} message(s) not acknowledged by Kafka")
        self.result["sent"] = {
            "messages": p.sent, "acknowledged": p.acked, "failed": p.failed, "malformed": p.malformed,
            "ops": dict(self.model.ops),
        }  # fmt: skip
        started = time.monotonic()
        caught_up = self.catch_up(CATCH_UP_WITHIN_S, signals.hurry)
        self.result["caught_up"] = caught_up
        if signals.hurry.is_set():
            self.say("second interrupt: skipping the report")
            report.failures.append(INTERRUPTED)
            return report
        if caught_up:
            self.say(f"the worker caught up in {time.monotonic() - started:.1f} s")
        else:
            lag = "?"
            with contextlib.suppress(Exception):
                lag = str(self.watcher.lag())
            self.say(f"the worker did not catch up within {CATCH_UP_WITHIN_S:g} s (lag {lag})")
            report.failures.append("the worker did not catch up")
        client = self.watcher.client
        print_balances(client, self.today, self.out)
        self.say("\nchecks")
        actual = {d.name: read_totals(client, d) for d in DEMO_REGISTERS}
        report.balances(self.model, actual, self.out)
        dlq_end = self.watcher.watermarks(DLQ_TOPIC)
        letters = read_dead_letters(self.kafka.bootstrap, DLQ_TOPIC, self.dlq_start, dlq_end)
        report.dead_letters(self.model.dead_letters, letters, DLQ_TOPIC, self.out)
        self.result["compactor"] = self.compactor_state()
        report.verify(verify_registers(client, self.out), self.result["compactor"], self.out)
        return report

    # -- 6. stop

    def teardown(self) -> None:
        """Stop everything that was started, in order; each step runs even when an earlier one failed."""
        if self.producer is not None:
            self.producer.stop()
            self.producer.join(10)
        if self.watcher is not None:
            self.watcher.close()
        children = [c for c in (self.worker, self.compactor) if c is not None]
        for child in children:
            child.terminate()  # side by side: both get the whole deadline
        deadline = time.monotonic() + STOP_WITHIN_S
        stopped = []
        self.result.setdefault("compactor", self.compactor_state())
        for child in children:
            code = child.stop(deadline - time.monotonic())
            stopped.append(f"{child.name} (pid {child.pid}, exit {code})")
            self.result.setdefault("exit_codes", {})[child.name] = code
        for name, server in (("Kafka", self.kafka), ("PostgreSQL", self.pg)):
            pid = server.pid
            try:
                server.stop()
                if pid is not None:
                    stopped.append(f"{name} (pid {pid})")
            except (LocalKafkaError, LocalPostgresError, OSError) as exc:
                self.say(f"stopping {name} failed: {_first_line(exc)}")
        self.result["pids"] = self.pids
        if stopped:
            self.say(f"\nstopped {', '.join(stopped)}; data kept in {self.paths.home} (--reset starts over)")

    def write_result(self, report: Report | None, code: int) -> Path:
        path = self.paths.home / RESULT_FILE
        data = {
            **self.result,
            **(report.data if report else {}),
            "failures": report.failures if report else [],
        }
        data["problems"] = self.problems
        data["exit_code"] = code
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        return path


def run(options: DemoOptions, out: TextIO) -> int:
    """The whole demo; returns the exit code (module docstring)."""
    paths = prepare_home(options.home, options.reset, out)
    demo = Demo(options, paths, out)
    report: Report | None = None
    with Signals() as signals, _log_to_file(paths.logs / "demo.log"):
        try:
            demo.start_servers()
            demo.prepare()
            demo.start_children()
            demo.wait_worker()
            signals.raising = False  # from here a signal ends the stream, and the report still runs
            demo.stream(signals)
            report = demo.finish(signals)
        finally:
            signals.raising = False
            demo.teardown()
    code = _exit_code(report, demo.problems)
    path = demo.write_result(report, code)
    failures = [] if report is None else [f for f in report.failures if f != INTERRUPTED]
    for failure in failures:
        demo.say(f"check failed: {failure}")
    for problem in demo.problems:
        demo.say(f"error: {problem}")
    outcome = {0: "all checks passed", 130: "interrupted before the checks"}.get(code, f"exit {code}")
    demo.say(f"result: {outcome}; details in {path}")
    return code


def _exit_code(report: Report | None, problems: list[str]) -> int:
    # Ctrl-C is how a demo without --duration ends: a clean run exits 0 however it was stopped.
    if problems or report is None:
        return 1
    if report.failures == [INTERRUPTED]:
        return 130
    return 3 if report.failures else 0
