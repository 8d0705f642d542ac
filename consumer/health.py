"""Liveness, readiness and the HTTP endpoint serving them beside `/metrics` (SPEC §16).

`Health` is plain thread-safe state the loop updates; `MetricsServer` only reads it. client_python's own
server answers every path with metrics, so the paths are routed here: `/metrics`, `/healthz`, `/readyz`,
anything else 404.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["Health", "MetricsServer"]

logger = logging.getLogger(__name__)


class Health:
    """What `/healthz` and `/readyz` report, updated by the loop from any thread.

    Liveness: `beat()` within `liveness_timeout_s` (construction counts as the first beat, so a slow start
    is not a failure). Readiness: every named part set with `set_ready_part` is ok, and at least one is set.
    """

    def __init__(self, *, liveness_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if liveness_timeout_s <= 0:
            raise ValueError("liveness_timeout_s must be positive")
        self._timeout = liveness_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._parts: dict[str, tuple[bool, str]] = {}

    def beat(self) -> None:
        """The loop turned (call it while in backoff too: backing off is alive)."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def since_beat(self) -> float:
        """Seconds since the last beat."""
        now = self._clock()
        with self._lock:
            return now - self._last_beat

    def live(self) -> bool:
        return self.since_beat() <= self._timeout

    def live_reason(self) -> str:
        """`ok`, or why the process is not live."""
        since = self.since_beat()
        if since <= self._timeout:
            return "ok"
        return f"loop stalled: no turn for {since:.1f} s (limit {self._timeout:g} s)"

    def set_ready_part(self, name: str, ok: bool, reason: str = "") -> None:
        """One readiness condition, e.g. "postgres", "schema", "group", "backoff"; `reason` says why not."""
        with self._lock:
            self._parts[name] = (ok, reason)

    def ready(self) -> tuple[bool, str]:
        """(True, "ok"), or False with the failing parts, e.g. "not ready: group (no assignment); backoff"."""
        with self._lock:
            parts = dict(self._parts)
        if not parts:
            return False, "not ready: starting"
        failing = [f"{name} ({reason})" if reason else name for name, (ok, reason) in parts.items() if not ok]
        if failing:
            return False, "not ready: " + "; ".join(failing)
        return True, "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper hanging up mid-response is not worth a traceback on stderr.
        logger.debug("metrics request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 (the default): one request per connection, so stop() leaves no idle keep-alive threads.
    timeout = 10  # seconds; a stuck client cannot hold a handler thread forever

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(self.server.registry), content_type)
        elif path == "/healthz":
            health = self.server.health
            self._text(200 if health.live() else 503, health.live_reason())
        elif path == "/readyz":
            ok, reason = self.server.health.ready()
            self._text(200 if ok else 503, reason)
        else:
            self._text(404, "not found: /metrics, /healthz, /readyz")

    def _text(self, status: int, body: str) -> None:
        self._reply(status, (body + "\n").encode(), "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every probe and scrape to stderr.
        logger.debug("metrics http: " + format, *args)


class MetricsServer:
    """`/metrics`, `/healthz` and `/readyz` on `host:port`, served from a daemon thread.

    Nothing binds before `start()`. Port 0 is refused here, because in the settings it means "disabled"
    and that decision is the caller's; `MetricsServer.ephemeral(...)` binds a free port (tests).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Health,
        host: str,
        port: int,
        *,
        allow_ephemeral: bool = False,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        if port == 0 and not allow_ephemeral:
            raise ValueError("port 0 means the endpoint is disabled: do not start a server")
        self._registry = registry
        self._health = health
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def ephemeral(cls, registry: CollectorRegistry, health: Health, host: str = "127.0.0.1") -> MetricsServer:
        """A server on a free port chosen at `start()` (which returns it)."""
        return cls(registry, health, host, 0, allow_ephemeral=True)

    @property
    def port(self) -> int:
        """The bound port; only valid after `start()`."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Bind, serve from a daemon thread and return the bound port; OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        server_class = _Server6 if ":" in self._host else _Server
        server = server_class((self._host, self._port), _Handler)
        server.registry = self._registry
        server.health = self._health
        self._server = server
        # shutdown() waits for the serve loop's next poll: 0.1 s keeps stop() quick at a negligible idle cost.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="accumulator-metrics",
            daemon=True,
        )
        self._thread.start()
        port = self.port
        logger.info(
            "metrics endpoint listening",
            extra={"action": "metrics_listening", "host": self._host, "port": port},
        )
        return port

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread; safe to call twice or before start()."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
