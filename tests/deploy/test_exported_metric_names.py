"""Every metric the alert rules and the dashboard query is one the worker or the compactor really exports.

Both processes run for real (`accumulator consume` and `accumulator compact` against the test PostgreSQL and
Kafka) and their `/metrics` are scraped. Names come from the `# TYPE` lines, which prometheus_client prints
for every metric family even before a labelled series exists, so no particular activity is needed; each
family then stands for the series Prometheus stores (`_bucket`/`_sum`/`_count` of a histogram). The names
used are pulled out of the PromQL of the rules file and of every dashboard query.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import wait_until

from consumer.localpg import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "pg-accumulator"

# Series Prometheus makes itself for every scrape target, not exported by any process.
PROMETHEUS_SYNTHETIC = {"up"}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: bare selectors, and `__name__` matchers (alternations)."""
    names: set[str] = set()
    for alternatives in re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr):
        for name in alternatives.split("|"):
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), (
                f"not a plain name alternation: {alternatives}"
            )
            names.add(name)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    for match in re.finditer(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or rest.startswith("("):  # keywords, functions and aggregations
            continue
        names.add(name)
    return names


def test_promql_metric_names_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"$v", y!="z"}[5m] offset 1h)))'
        " / ignoring (p) "
        "group_left (q) b_total > 1e3 and on (ns) time() - max without (p) (c:rec) or "
        'label_replace(d, "dst", "$1", "src", "(.*)") unless sum(e) or absent(f{job="up"}) '
        'or {__name__=~"g_total|h_seconds", ns="k"}'
    )
    assert promql_metric_names(expr) == {
        "a_bucket",
        "b_total",
        "c:rec",
        "d",
        "e",
        "f",
        "g_total",
        "h_seconds",
    }


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((CHART / "rules" / "accumulator.rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for p in [panel, *panel.get("panels", [])]:
                for target in p.get("targets", []):
                    yield f"{path.name} panel {p['title']!r}", target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                # label_values(selector, label): only the selector is PromQL
                selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
                assert selector, f"{path.name} variable {var['name']}: {query}"
                yield f"{path.name} variable {var['name']}", selector.group(1)


def exported_series_names(exposition: str) -> set[str]:
    """Series names Prometheus stores from a scrape, derived from the `# TYPE` lines."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class Process:
    """`accumulator <command>` as a subprocess with its metrics on a free loopback port; stopped by PID."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.port = free_port()
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - open for the process's life, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", command],
            cwd=REPO,
            env={**env, "ACCUMULATOR_METRICS_HOST": "127.0.0.1", "ACCUMULATOR_METRICS_PORT": str(self.port)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, within: float) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-3000:]
                raise AssertionError(f"accumulator {self.command} exited {self.proc.returncode}:\n{log}")
            return get(self.url("/readyz"))[0] == 200

        wait_until(ready, within=within, what=f"accumulator {self.command} ready", interval=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@pytest.mark.integration
@pytest.mark.kafka
def test_rules_and_dashboard_use_only_exported_metrics(
    db_dsn: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    env.update(
        {
            "ACCUMULATOR_DSN": db_dsn,
            "ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ACCUMULATOR_KAFKA_TOPICS": kafka_topic,
            "ACCUMULATOR_KAFKA_GROUP_ID": f"g_{uuid.uuid4().hex[:12]}",
            "ACCUMULATOR_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    processes = [Process(command, env, tmp_path / f"{command}.log") for command in ("consume", "compact")]
    exported: dict[str, set[str]] = {}
    try:
        for p in processes:
            p.wait_ready(within=90)
            assert get(p.url("/healthz"))[0] == 200
            status, body = get(p.url("/metrics"))
            assert status == 200, f"{p.command} /metrics answered {status}"
            exported[p.command] = exported_series_names(body)
    finally:
        for p in processes:
            p.stop()

    # The scrape is real and carries both processes' own families.
    assert "accumulator_commands_total" in exported["consume"], sorted(exported["consume"])
    assert "accumulator_leader" in exported["compact"], sorted(exported["compact"])

    known = exported["consume"] | exported["compact"] | PROMETHEUS_SYNTHETIC
    used: dict[str, list[str]] = {}
    for where, expr in [*rule_expressions(), *dashboard_expressions()]:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric found in {expr}"
        for name in names:
            used.setdefault(name, []).append(where)
    unknown = {name: places for name, places in used.items() if name not in known}
    assert not unknown, f"metrics not exported by the worker or the compactor: {unknown}"
    assert len(used) >= 15, sorted(used)
