"""The metrics of SPEC §16, checked where Prometheus sees them: the scraped text exposition."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.metrics import UNKNOWN, CompactorMetrics, WorkerMetrics

# SPEC §16: exposed name -> (type, labels). `le` of histograms is the format's, not ours.
WORKER = {
    "accumulator_commands_total": ("counter", {"register", "op", "outcome"}),
    "accumulator_movements_total": ("counter", {"register"}),
    "accumulator_batch_size": ("histogram", set()),
    "accumulator_batch_duration_seconds": ("histogram", set()),
    "accumulator_batch_retries_total": ("counter", {"cause"}),
    "accumulator_consumer_lag_messages": ("gauge", {"topic", "partition"}),
    "accumulator_assigned_partitions": ("gauge", {"topic"}),
    "accumulator_dead_letters_total": ("counter", {"reason"}),
    "accumulator_command_age_seconds": ("histogram", set()),
    "accumulator_key_mismatch_total": ("counter", {"topic"}),
    "accumulator_build_info": ("gauge", {"version", "schema_version"}),
}
COMPACTOR = {
    "accumulator_leader": ("gauge", {"role"}),
    "accumulator_merge_lag_seconds": ("gauge", {"register"}),
    "accumulator_delta_pending_rows": ("gauge", {"register"}),
    "accumulator_merges_total": ("counter", {"register"}),
    "accumulator_merged_rows_total": ("counter", {"register"}),
    "accumulator_merge_duration_seconds": ("histogram", set()),
    "accumulator_verify_status": ("gauge", {"register"}),
    "accumulator_verify_mismatches": ("gauge", {"register"}),
    "accumulator_verify_last_run_timestamp_seconds": ("gauge", {"register"}),
    "accumulator_verify_duration_seconds": ("gauge", {"register"}),
    "accumulator_partitions_created_total": ("counter", {"register"}),
    "accumulator_maintenance_errors_total": ("counter", {"task"}),
    "accumulator_build_info": ("gauge", {"version", "schema_version"}),
}


def exposed(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def exposed_types(text: str) -> dict[str, str]:
    """`# TYPE` lines, without client_python's `<name>_created` companions of counters and histograms."""
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            types[name] = kind
    companions = {f"{name.removesuffix('_total')}_created" for name, kind in types.items() if kind != "gauge"}
    return {name: kind for name, kind in types.items() if name not in companions}


def sample_labels(text: str) -> dict[str, set[str]]:
    """Family name as exposed -> label names of its samples."""
    ours = exposed_types(text)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        if name not in ours:
            continue
        for sample in family.samples:
            labels.setdefault(name, set()).update(k for k in sample.labels if k != "le")
    return labels


def value(text: str, sample_name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return float(sample.value)
    return None


def test_worker_metrics_are_exactly_specs() -> None:
    registry = CollectorRegistry()
    m = WorkerMetrics(registry, version="1.2.3", schema_version="7")
    # Give every labelled metric a series, so its labels show in the exposition.
    m.count_command("stock", "post", "applied")
    m.movements.labels("stock").inc(3)
    m.batch_size.observe(10)
    m.batch_duration.observe(0.02)
    m.count_retry("postgres")
    m.set_lag("cmds", 0, 5)
    m.set_assigned({"cmds": 3})
    m.dead_letters.labels("invalid_json").inc()
    m.command_age.observe(1.5)
    m.key_mismatch.labels("cmds").inc()

    text = exposed(registry)
    assert exposed_types(text) == {name: kind for name, (kind, _) in WORKER.items()}
    assert sample_labels(text) == {name: labels for name, (_, labels) in WORKER.items()}
    assert value(text, "accumulator_build_info", version="1.2.3", schema_version="7") == 1
    assert value(text, "accumulator_movements_total", register="stock") == 3


def test_compactor_metrics_are_exactly_specs() -> None:
    registry = CollectorRegistry()
    m = CompactorMetrics(registry, version="1.2.3", schema_version="7")
    m.merge_lag.labels("stock").set(2.5)
    m.delta_pending.labels("stock").set(40)
    m.merges.labels("stock").inc()
    m.merged_rows.labels("stock").inc(40)
    m.merge_duration.observe(0.3)
    m.record_verify("stock", mismatches=0, duration_s=1.25, finished_at=1_700_000_000.0)
    m.partitions_created.labels("stock").inc(3)

    text = exposed(registry)
    assert exposed_types(text) == {name: kind for name, (kind, _) in COMPACTOR.items()}
    assert sample_labels(text) == {name: labels for name, (_, labels) in COMPACTOR.items()}
    assert value(text, "accumulator_build_info", version="1.2.3", schema_version="7") == 1


def test_metrics_live_on_the_injected_registry_only() -> None:
    # Two sets on two registries: no clash, and nothing lands on the global registry.
    WorkerMetrics(CollectorRegistry(), version="1", schema_version="1")
    WorkerMetrics(CollectorRegistry(), version="1", schema_version="1")
    CompactorMetrics(CollectorRegistry(), version="1", schema_version="1")
    assert "accumulator_" not in generate_latest(REGISTRY).decode()


def test_count_command_maps_missing_register_and_op_to_unknown() -> None:
    registry = CollectorRegistry()
    m = WorkerMetrics(registry, version="1", schema_version="1")
    m.count_command(None, None, "dead_lettered")
    m.count_command("stock", "delete", "dead_lettered", n=2)  # not an op of the contract
    m.count_command("stock", "repost", "duplicate", n=4)

    text = exposed(registry)
    total = "accumulator_commands_total"
    assert value(text, total, register=UNKNOWN, op=UNKNOWN, outcome="dead_lettered") == 1
    assert value(text, total, register="stock", op=UNKNOWN, outcome="dead_lettered") == 2
    assert value(text, total, register="stock", op="repost", outcome="duplicate") == 4


@pytest.mark.parametrize("outcome", ["ok", "failed", "", "Applied"])
def test_count_command_refuses_unknown_outcomes(outcome: str) -> None:
    m = WorkerMetrics(CollectorRegistry(), version="1", schema_version="1")
    with pytest.raises(ValueError, match="outcome"):
        m.count_command("stock", "post", outcome)


def test_bounded_labels_are_validated_and_start_at_zero() -> None:
    worker_registry, compactor_registry = CollectorRegistry(), CollectorRegistry()
    w = WorkerMetrics(worker_registry, version="1", schema_version="1")
    c = CompactorMetrics(compactor_registry, version="1", schema_version="1")
    with pytest.raises(ValueError, match="cause"):
        w.count_retry("disk")
    with pytest.raises(ValueError, match="task"):
        c.count_error("vacuum")
    w.count_retry("fenced")
    c.count_error("verify")

    text = exposed(worker_registry)
    assert value(text, "accumulator_batch_retries_total", cause="fenced") == 1
    assert value(text, "accumulator_batch_retries_total", cause="postgres") == 0
    text = exposed(compactor_registry)
    assert value(text, "accumulator_maintenance_errors_total", task="verify") == 1
    assert value(text, "accumulator_maintenance_errors_total", task="merge") == 0


def test_forget_partitions_removes_their_lag_series() -> None:
    registry = CollectorRegistry()
    m = WorkerMetrics(registry, version="1", schema_version="1")
    m.set_lag("cmds", 0, 10)
    m.set_lag("cmds", 1, 20)
    m.set_lag("other", 0, 30)

    m.forget_partitions([("cmds", 1), ("other", 0), ("never", 9)])  # unknown ones are ignored

    text = exposed(registry)
    lag = "accumulator_consumer_lag_messages"
    assert value(text, lag, topic="cmds", partition="0") == 10
    assert value(text, lag, topic="cmds", partition="1") is None
    assert value(text, lag, topic="other", partition="0") is None


def test_lag_is_never_negative() -> None:
    registry = CollectorRegistry()
    m = WorkerMetrics(registry, version="1", schema_version="1")
    m.set_lag("cmds", 2, -3)
    assert value(exposed(registry), "accumulator_consumer_lag_messages", topic="cmds", partition="2") == 0


def test_set_assigned_zeroes_topics_no_longer_owned() -> None:
    registry = CollectorRegistry()
    m = WorkerMetrics(registry, version="1", schema_version="1")
    m.set_assigned({"a": 3, "b": 2})
    m.set_assigned({"b": 1})

    text = exposed(registry)
    assert value(text, "accumulator_assigned_partitions", topic="a") == 0
    assert value(text, "accumulator_assigned_partitions", topic="b") == 1

    m.set_assigned({})
    text = exposed(registry)
    assert value(text, "accumulator_assigned_partitions", topic="a") == 0
    assert value(text, "accumulator_assigned_partitions", topic="b") == 0


def test_set_leader_reports_one_role() -> None:
    registry = CollectorRegistry()
    m = CompactorMetrics(registry, version="1", schema_version="1")

    def roles() -> tuple[float | None, ...]:
        text = exposed(registry)
        return tuple(value(text, "accumulator_leader", role=role) for role in ("leader", "standby"))

    assert roles() == (0, 1)  # a new instance is a standby until it holds the lock
    m.set_leader(True)
    assert roles() == (1, 0)
    m.set_leader(False)
    assert roles() == (0, 1)


def test_record_verify_sets_status_from_mismatches() -> None:
    registry = CollectorRegistry()
    m = CompactorMetrics(registry, version="1", schema_version="1")
    m.record_verify("stock", mismatches=4, duration_s=2.0, finished_at=1_700_000_100.0)

    text = exposed(registry)
    assert value(text, "accumulator_verify_status", register="stock") == 0
    assert value(text, "accumulator_verify_mismatches", register="stock") == 4
    assert value(text, "accumulator_verify_last_run_timestamp_seconds", register="stock") == 1_700_000_100.0
    assert value(text, "accumulator_verify_duration_seconds", register="stock") == 2.0


def test_forget_register_drops_every_series_of_that_register() -> None:
    registry = CollectorRegistry()
    m = CompactorMetrics(registry, version="1", schema_version="1")
    for name in ("gone", "kept"):
        m.merge_lag.labels(name).set(1)
        m.delta_pending.labels(name).set(1)
        m.merges.labels(name).inc()
        m.merged_rows.labels(name).inc()
        m.record_verify(name, mismatches=0, duration_s=1.0, finished_at=1.0)
        m.partitions_created.labels(name).inc()

    m.forget_register("gone")
    m.forget_register("never-existed")

    registers = {
        sample.labels.get("register")
        for family in text_string_to_metric_families(exposed(registry))
        for sample in family.samples
    }
    assert "gone" not in registers
    assert "kept" in registers
