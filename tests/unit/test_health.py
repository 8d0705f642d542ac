"""Liveness/readiness state and the HTTP endpoint serving it with /metrics (SPEC §16)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from consumer.health import Health, MetricsServer
from consumer.metrics import WorkerMetrics


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: str


def get(url: str, accept: str | None = None) -> Reply:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Reply(response.status, response.headers["Content-Type"], response.read().decode())
    except urllib.error.HTTPError as err:
        with err:  # an unclosed error response warns, and warnings are errors here
            return Reply(err.code, err.headers["Content-Type"], err.read().decode())


# --- Health ----------


def test_live_while_beats_come_within_the_timeout() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout_s=120, clock=clock)
    assert health.live()  # construction counts as the first beat: startup is not a stall

    clock.now += 120
    assert health.live()
    clock.now += 0.5
    assert not health.live()
    assert "no turn for 120.5 s" in health.live_reason()

    health.beat()  # e.g. from inside a backoff wait
    assert health.live()
    assert health.live_reason() == "ok"


def test_liveness_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="liveness_timeout_s"):
        Health(liveness_timeout_s=0)


def test_not_ready_before_any_part_is_set() -> None:
    assert Health(liveness_timeout_s=1).ready() == (False, "not ready: starting")


def test_ready_when_every_part_is_ok_and_reason_names_the_failing_ones() -> None:
    health = Health(liveness_timeout_s=1)
    health.set_ready_part("postgres", True)
    health.set_ready_part("schema", True)
    assert health.ready() == (True, "ok")

    health.set_ready_part("group", False, "no assignment yet")
    health.set_ready_part("backoff", False)
    ok, reason = health.ready()
    assert not ok
    assert reason == "not ready: group (no assignment yet); backoff"

    health.set_ready_part("group", True)
    health.set_ready_part("backoff", True)
    assert health.ready() == (True, "ok")


# --- MetricsServer ----------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    h = Health(liveness_timeout_s=120, clock=clock)
    h.set_ready_part("postgres", True)
    return h


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    WorkerMetrics(registry, version="9.9.9", schema_version="4").count_command("stock", "post", "applied")
    return registry


@pytest.fixture
def base_url(registry: CollectorRegistry, health: Health) -> Iterator[str]:
    server = MetricsServer.ephemeral(registry, health)
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_metrics_serves_the_injected_registry(base_url: str) -> None:
    reply = get(f"{base_url}/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain; version=")
    assert 'accumulator_build_info{schema_version="4",version="9.9.9"} 1.0' in reply.body
    assert 'accumulator_commands_total{op="post",outcome="applied",register="stock"} 1.0' in reply.body
    assert "python_gc" not in reply.body  # not the global registry


def test_metrics_negotiates_openmetrics(base_url: str) -> None:
    reply = get(f"{base_url}/metrics?x=1", accept="application/openmetrics-text; version=1.0.0")
    assert reply.status == 200
    assert reply.content_type.startswith("application/openmetrics-text")
    assert reply.body.endswith("# EOF\n")


def test_healthz_follows_liveness(base_url: str, clock: FakeClock) -> None:
    assert get(f"{base_url}/healthz") == Reply(200, "text/plain; charset=utf-8", "ok\n")

    clock.now += 121
    reply = get(f"{base_url}/healthz")
    assert reply.status == 503
    assert "loop stalled" in reply.body


def test_readyz_follows_readiness(base_url: str, health: Health) -> None:
    assert get(f"{base_url}/readyz") == Reply(200, "text/plain; charset=utf-8", "ok\n")

    health.set_ready_part("group", False, "not in the group")
    reply = get(f"{base_url}/readyz")
    assert reply.status == 503
    assert reply.body == "not ready: group (not in the group)\n"


@pytest.mark.parametrize("path", ["/", "/metricsx", "/health", "/readyz/extra"])
def test_other_paths_are_404(base_url: str, path: str) -> None:
    assert get(base_url + path).status == 404


def test_port_zero_is_refused_without_the_ephemeral_constructor(
    registry: CollectorRegistry, health: Health
) -> None:
    with pytest.raises(ValueError, match="disabled"):
        MetricsServer(registry, health, "127.0.0.1", 0)


def test_stop_frees_the_port(registry: CollectorRegistry, health: Health) -> None:
    server = MetricsServer.ephemeral(registry, health)
    port = server.start()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    assert get(f"http://127.0.0.1:{port}/healthz").status == 200
    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # The same port binds again at once (e.g. a restarted loop).
    with MetricsServer(registry, health, "127.0.0.1", port) as again:
        assert again.port == port
        assert get(f"http://127.0.0.1:{port}/readyz").status == 200
