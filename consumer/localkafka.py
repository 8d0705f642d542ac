"""A private single-node Apache Kafka broker (KRaft) on loopback, run from Maven Central jars.

Used by ``accumulator demo`` (a persistent log dir under ``<home>``, jars in ``<home>/cache``) and by the test
fixtures (a throwaway one, jars in ``<checkout>/.tools/kafka``). No Kafka tarball is reachable here, so the
broker's jars are fetched once with Maven from the pinned ``kafka_jars/pom.xml``; a stamp file holding that
pom's SHA-256 marks a complete fetch, and a file lock keeps parallel processes from fetching twice.
Kafka may run as root, so unlike :mod:`consumer.localpg` there is no user switch.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.localpg import PrerequisiteMissing, free_port

__all__ = [
    "JAVA_PACKAGE",
    "KAFKA_VERSION",
    "MAVEN_PACKAGE",
    "LocalKafka",
    "LocalKafkaError",
    "PrerequisiteMissing",
    "create_topics",
    "default_cache_dir",
    "delete_topics",
    "fetch_jars",
    "find_java",
    "find_mvn",
    "jars_ready",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION: Final = "4.4.0"
JAVA_PACKAGE: Final = "default-jre-headless"
MAVEN_PACKAGE: Final = "maven"
# Pinned so a new plugin release cannot change how the jars are fetched.
DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ASSETS_DIR: Final = Path(__file__).resolve().parent / "kafka_jars"
POM_FILE: Final = ASSETS_DIR / "pom.xml"
LOG4J_FILE: Final = ASSETS_DIR / "log4j2.properties"
READY_LINE: Final = "Kafka Server started"
_KAFKA_JAR: Final = f"kafka_2.13-{KAFKA_VERSION}.jar"
_LIBS: Final = "kafka-libs"
_STAMP: Final = "kafka-libs.sha256"
_JVM_FLAGS: Final = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
_LISTENERS = re.compile(r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)\s*$", re.MULTILINE)


class LocalKafkaError(RuntimeError):
    """Fetching the jars, formatting the storage or starting the broker failed (the message has the log)."""


# --- prerequisites and jars ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``<checkout>/.tools/kafka`` in a source checkout (git-ignored), else the user's cache dir."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return root / ".tools" / "kafka"
    return Path.home() / ".cache" / "pg-accumulator" / "kafka"


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH (Kafka 4 needs Java 17 or newer)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise PrerequisiteMissing(
            f"java (17 or newer) not found; install the Debian package {JAVA_PACKAGE} "
            f"(apt-get install -y {JAVA_PACKAGE})",
            package=JAVA_PACKAGE,
        )
    return found


def find_mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise PrerequisiteMissing(
            f"mvn not found (needed once, to fetch the Kafka {KAFKA_VERSION} jars); install the Debian "
            f"package {MAVEN_PACKAGE} (apt-get install -y {MAVEN_PACKAGE})",
            package=MAVEN_PACKAGE,
        )
    return found


def pom_sha256() -> str:
    return hashlib.sha256(POM_FILE.read_bytes()).hexdigest()


def jars_ready(cache_dir: str | os.PathLike[str]) -> bool:
    """Whether the jars of the current pom are already in ``cache_dir`` (no Maven needed)."""
    cache = Path(cache_dir)
    try:
        stamp = (cache / _STAMP).read_text().strip()
    except OSError:
        return False
    return stamp == pom_sha256() and (cache / _LIBS / _KAFKA_JAR).is_file()


@contextlib.contextmanager
def _file_lock(path: Path, within: float) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + within
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LocalKafkaError(f"{path} still locked after {within}s (another fetch?)") from None
                time.sleep(0.1)  # another process fetches; the deadline bounds the wait
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fetch_jars(cache_dir: str | os.PathLike[str], *, timeout: float = 600.0) -> Path:
    """The broker's classpath dir ``<cache_dir>/kafka-libs``, fetched with Maven unless already there.

    Layout: ``m2/`` (Maven's local repository), ``kafka-libs/`` (the runtime jars), ``kafka-libs.sha256`` (the
    pom's digest, written last: a fetch that died half way is redone), ``fetch.lock``.
    """
    cache = Path(cache_dir).resolve()
    libs = cache / _LIBS
    if jars_ready(cache):
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / "fetch.lock", timeout):
        if jars_ready(cache):  # another process fetched them while we waited
            return libs
        mvn = find_mvn()
        digest = pom_sha256()
        staging = cache / f"{_LIBS}.partial"
        (cache / _STAMP).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        # A copy next to the cache: the package dir may be read-only, and Maven works relative to the pom.
        pom = cache / "pom.xml"
        shutil.copyfile(POM_FILE, pom)
        argv = [
            mvn, "-B", "-q",
            "-C",  # strict checksums: a corrupt download fails instead of warning
            "-f", str(pom),
            f"-Dmaven.repo.local={cache / 'm2'}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv, cwd=cache, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise LocalKafkaError(f"mvn did not fetch the Kafka jars within {timeout}s") from None
        if result.returncode != 0 or not (staging / _KAFKA_JAR).is_file():
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise LocalKafkaError(f"mvn failed to fetch the Kafka jars (exit {result.returncode}):\n{output}")
        staging.rename(libs)
        (cache / _STAMP).write_text(digest + "\n")
        logger.info(
            "kafka jars fetched",
            extra={
                "action": "kafka_jars_fetched",
                "dir": str(libs),
                "jars": sum(1 for _ in libs.glob("*.jar")),
                "s": round(time.monotonic() - started, 2),
            },
        )
    return libs


# --- admin helpers (any broker) --------------------------------------------------------------------------


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 3,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = False,
    timeout: float = 30.0,
) -> None:
    """Create topics and wait until every partition has a leader (producers then never see them missing).

    ``exist_ok``: a topic that already exists is fine (its partition count is left as it is).
    """
    wanted = list(names)
    if not wanted:
        return
    admin = _admin(bootstrap)
    new = [
        NewTopic(
            name, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
        )
        for name in wanted
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    existing: set[str] = set()
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if not (exist_ok and _error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
            existing.add(name)
    deadline = time.monotonic() + timeout
    for name in wanted:
        while not _has_leaders(admin, name, None if name in existing else partitions):
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"topic {name!r}: partitions without a leader after {timeout}s")
            time.sleep(0.05)  # metadata propagation; bounded by the deadline


def _error_code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _has_leaders(admin: AdminClient, name: str, partitions: int | None) -> bool:
    try:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
    except KafkaException:
        return False
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    if partitions is not None and len(topic.partitions) != partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics and wait for the broker's answer; a topic already gone is fine."""
    wanted = list(names)
    if not wanted:
        return
    admin = _admin(bootstrap)  # kept referenced until the futures resolve: a destroyed client fails them
    futures = admin.delete_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if _error_code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


# --- the broker ------------------------------------------------------------------------------------------


def random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints (base64url of a UUID, no leading "-"), without a JVM."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, lines: int = 30, *, offset: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone for every purpose here


class LocalKafka:
    """One KRaft broker+controller under ``base_dir`` (``server.properties``, ``data/``, ``kafka.log``,
    ``kafka.pid``), listening on 127.0.0.1 on two free ports (client and controller).

    An existing ``base_dir/data`` is reused (the demo's topics survive restarts); a ``base_dir`` of None
    means a fresh temporary dir, removed by :meth:`close`. ``die_with_parent`` has the kernel kill the broker
    when this process dies (``setpriv --pdeathsig``), so a killed test run leaves no JVM behind; it ties the
    broker to the *thread* that started it, so start it from a thread that lives as long as the broker.
    """

    HOST: Final = "127.0.0.1"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        settings: Mapping[str, str | int] | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        fetch_timeout: float = 600.0,
    ) -> None:
        self.java = find_java()
        self.cache_dir = Path(cache_dir).resolve() if cache_dir is not None else default_cache_dir()
        if not jars_ready(self.cache_dir):
            find_mvn()  # fail now, naming the package, rather than at start()
        self._owned_base = base_dir is None
        base = base_dir if base_dir is not None else tempfile.mkdtemp(prefix="accum-kafka-")
        self.base_dir = Path(base).resolve()
        self.data_dir = self.base_dir / "data"
        self.config_file = self.base_dir / "server.properties"
        self.log_file = self.base_dir / "kafka.log"
        self.pid_file = self.base_dir / "kafka.pid"
        self._want_port = port
        self._want_controller_port = controller_port
        self.port: int = 0
        self.controller_port: int = 0
        self._ports_chosen = False
        self._settings = dict(settings or {})
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.fetch_timeout = fetch_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None

    # --- properties -------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap.servers``."""
        if not self.port:
            raise LocalKafkaError("the broker has not been started")
        return f"{self.HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's PID while it runs, else None."""
        if self._proc is not None:
            # poll() reaps our child, so a dead broker is never left as a zombie.
            return self._proc.pid if self._proc.poll() is None else None
        if self._adopted_pid is not None and _pid_alive(self._adopted_pid):
            return self._adopted_pid
        return None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Fetch the jars if needed, format ``data/`` when new, start and wait for "Kafka Server started"."""
        if self.running:
            return self
        libs = fetch_jars(self.cache_dir, timeout=self.fetch_timeout)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._adopt_running():
            return self
        # Kernel-picked free ports can be taken before the broker binds them: pick again on a clash.
        pick = not self._ports_chosen
        attempts = 3 if pick and not (self._want_port and self._want_controller_port) else 1
        for attempt in range(attempts):
            if pick:
                self._choose_ports()
            self._write_config()
            if not (self.data_dir / "meta.properties").exists():
                self._format(libs)
            try:
                self._launch(libs)
            except LocalKafkaError as exc:
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    logger.warning("kafka port taken; retrying", extra={"action": "kafka_port_retry"})
                    continue
                raise
            break
        return self

    def start_again(self) -> Self:
        """Start on the same log dir and ports after :meth:`stop` or :meth:`kill`.

        After a kill the controller still holds the old broker registration until its session expires
        (``broker.session.timeout.ms``, 2.5 s here); the broker logs ``DUPLICATE_BROKER_REGISTRATION`` and
        retries meanwhile, so readiness simply takes a few seconds longer (about 4 s).
        """
        if not self._ports_chosen:
            raise LocalKafkaError("start_again() needs a broker that was started before")
        if self.running:
            return self
        self._launch(fetch_jars(self.cache_dir, timeout=self.fetch_timeout))
        return self

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (a controlled shutdown), wait until the PID is gone; SIGKILL after ``timeout`` seconds."""
        pid = self.pid
        if pid is None:
            self._forget()
            return
        within = self.stop_timeout if timeout is None else timeout
        started = time.monotonic()
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, within):
            logger.warning(
                "kafka did not stop in time; killing it",
                extra={"action": "kafka_stop_forced", "pid": pid, "s": within},
            )
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 30.0):
                raise LocalKafkaError(f"broker {pid} still running after SIGKILL")
        self._forget()
        logger.info(
            "kafka stopped",
            extra={"action": "kafka_stopped", "pid": pid, "s": round(time.monotonic() - started, 2)},
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would, and wait until the PID is gone (the log dir is not cleanly closed)."""
        pid = self.pid
        if pid is None:
            self._forget()
            return
        self._signal(pid, signal.SIGKILL)
        if not self._wait_gone(pid, 30.0):
            raise LocalKafkaError(f"broker {pid} still running 30s after SIGKILL")
        self._forget()
        logger.info("kafka killed", extra={"action": "kafka_killed", "pid": pid})

    def close(self) -> None:
        """Stop the broker; remove the base dir if we made it."""
        try:
            self.stop()
        finally:
            if self._owned_base:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int = 3,
        *,
        config: Mapping[str, str] | None = None,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        create_topics(self.bootstrap, names, partitions, config=config, exist_ok=exist_ok, timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------------

    def _jvm(self, libs: Path) -> list[str]:
        return [
            self.java,
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={LOG4J_FILE}",
            "-cp", str(libs / "*"),
        ]  # fmt: skip

    def _choose_ports(self) -> None:
        self.port = self._want_port or free_port(self.HOST)
        self.controller_port = self._want_controller_port or free_port(self.HOST)
        while self.controller_port == self.port:
            self.controller_port = free_port(self.HOST)
        self._ports_chosen = True

    def _write_config(self) -> None:
        host, port, cport = self.HOST, self.port, self.controller_port
        values: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{host}:{cport}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "offsets.topic.replication.factor": 1,
            # Fewer offsets partitions: the first group on a fresh broker waits for all of them to load.
            "offsets.topic.num.partitions": 6,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # Tests may give their consumers short sessions, so a killed worker's partitions move fast.
            "group.min.session.timeout.ms": 1000,
            # Topics are made on purpose (a typo must not create one).
            "auto.create.topics.enable": "false",
            # After a kill the restarted broker waits for its old registration to expire (default 9 s).
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 2500,
            **self._settings,
        }
        lines = [f"{key}={value}" for key, value in values.items()]
        self.config_file.write_text(
            "# written by consumer.localkafka at each start\n" + "\n".join(lines) + "\n"
        )

    def _format(self, libs: Path) -> None:
        cluster_id = random_cluster_id()
        argv = [
            *self._jvm(libs),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
        ]
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                cwd=self.base_dir,
                capture_output=True,
                text=True,
                timeout=self.start_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LocalKafkaError(
                f"kafka storage format did not finish within {self.start_timeout}s"
            ) from None
        if result.returncode != 0:
            raise LocalKafkaError(
                f"kafka storage format failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-3000:]}"
            )
        logger.info(
            "kafka storage formatted",
            extra={
                "action": "kafka_format",
                "data_dir": str(self.data_dir),
                "cluster_id": cluster_id,
                "s": round(time.monotonic() - started, 2),
            },
        )

    def _launch(self, libs: Path) -> None:
        argv = [*self._jvm(libs), "kafka.Kafka", str(self.config_file)]
        if self.die_with_parent and (setpriv := shutil.which("setpriv")):
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]  # setpriv execs java: same PID
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            # Own session: a Ctrl-C meant for the demo must not reach the broker before the worker stops.
            self._proc = subprocess.Popen(
                argv,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._adopted_pid = None
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self._wait_ready(self._proc, offset)
        logger.info(
            "kafka started",
            extra={
                "action": "kafka_started",
                "bootstrap": self.bootstrap,
                "pid": self._proc.pid,
                "s": round(time.monotonic() - started, 2),
            },
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                if READY_LINE.encode() in log.read():
                    return
            code = proc.poll()
            if code is not None:
                self._forget()
                raise LocalKafkaError(
                    f"kafka exited (code {code}) before it was ready:\n"
                    f"--- {self.log_file} ---\n{_tail(self.log_file, offset=offset)}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise LocalKafkaError(
                    f"kafka not ready within {self.start_timeout}s:\n"
                    f"--- {self.log_file} ---\n{_tail(self.log_file, offset=offset)}"
                )
            time.sleep(0.05)  # poll the log; the deadline bounds the wait

    def _adopt_running(self) -> bool:
        """A broker left running on this base dir (e.g. by a demo that was killed): use it if it answers."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ports = _LISTENERS.search(self.config_file.read_text())
        except (OSError, ValueError):
            return False
        ours = b"kafka.Kafka" in cmdline and str(self.config_file).encode() in cmdline
        if not ours or ports is None or not _pid_alive(pid):
            return False
        self._proc, self._adopted_pid = None, pid
        self.port, self.controller_port = int(ports.group(1)), int(ports.group(2))
        self._ports_chosen = True
        try:
            _admin(self.bootstrap).list_topics(timeout=10)
        except KafkaException:
            logger.warning(
                "kafka left running does not answer; restarting it",
                extra={"action": "kafka_adopt_failed", "pid": pid},
            )
            self.kill()
            self.port = self.controller_port = 0
            self._ports_chosen = False
            return False
        logger.warning(
            "kafka already running; reusing it",
            extra={"action": "kafka_adopted", "pid": pid, "port": self.port},
        )
        return True

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_gone(self, pid: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while self.pid == pid:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)  # poll the PID; the deadline bounds the wait
        return True

    def _forget(self) -> None:
        self._proc = None
        self._adopted_pid = None
        self.pid_file.unlink(missing_ok=True)
