"""Alert rules (helm/pg-accumulator/rules) under promtool, and the Grafana dashboard's structure and PromQL.

`promtool check rules` parses every expression and template; `promtool test rules tests.yaml` runs the unit
tests, where each alert fires on its bad series and stays silent on the good ones. The dashboard has no
linter we may use (RECIPES §6), so its JSON is checked here and every panel query goes through promtool as a
recording rule with Grafana's variables replaced.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "pg-accumulator"
RULES = CHART / "rules" / "accumulator.rules.yaml"
RULE_TESTS = CHART / "rules" / "tests.yaml"
DASHBOARD = CHART / "dashboards" / "pg-accumulator.json"

# Issue 6's list, by the names the rules give them.
EXPECTED_ALERTS = {
    "AccumulatorMergeLagHigh",
    "AccumulatorDeltaPendingGrowing",
    "AccumulatorVerifyFailed",
    "AccumulatorVerifyStale",
    "AccumulatorConsumerLagGrowing",
    "AccumulatorDeadLetters",
    "AccumulatorNoActiveCompactor",
    "AccumulatorWorkerDown",
}


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which(str(REPO / ".tools" / "bin" / "promtool"))
    if found is None:
        pytest.fail(
            "promtool is missing: run scripts/tools.sh as root, or: "
            "sudo apt-get install -y --no-install-recommends prometheus"
        )
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# --- rules ------------------------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_issue_alert_exists_with_a_runbook() -> None:
    rules = alerts()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        description = rule["annotations"]["description"]
        for part in ("Impact:", "Check:", "Fix:"):
            assert f"\n{part} " in description, f"{rule['alert']}: the description lacks '{part}'"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert fires == EXPECTED_ALERTS, f"never seen firing: {EXPECTED_ALERTS - fires}"
    assert silent == EXPECTED_ALERTS, f"never seen silent: {EXPECTED_ALERTS - silent}"


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests can fail: a test expecting the wrong severity is reported."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text().replace(
        "{severity: critical, namespace: shop, register: r1}",
        "{severity: warning, namespace: shop, register: r1}",
        1,
    )
    (tmp_path / RULE_TESTS.name).write_text(text)
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert "alertname: AccumulatorVerifyFailed" in report, report


# --- dashboard --------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {target['refId']}", target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # label_values(selector, label): the selector is the PromQL part.
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert match, f"variable {var['name']}: {query}"
            yield f"variable {var['name']}", match.group(1)


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "pg-accumulator"
    assert board["title"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["register"]["multi"]
    assert variables["register"]["includeAll"]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert "$namespace" in target["expr"], f"{panel['title']}: not filtered by namespace"


def test_dashboard_shows_what_the_issue_asks() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels(dashboard())}
    wanted = {  # metric -> must be filtered by the register variable
        "accumulator_merge_lag_seconds": True,
        "accumulator_delta_pending_rows": True,
        "accumulator_verify_status": True,
        "accumulator_commands_total": True,
        "accumulator_movements_total": True,
        "accumulator_batch_size_bucket": False,
        "accumulator_batch_duration_seconds_bucket": False,
        "accumulator_consumer_lag_messages": False,
        "accumulator_dead_letters_total": False,
    }
    for metric, per_register in wanted.items():
        using = [title for title, expr in exprs.items() if re.search(rf"\b{metric}\b", expr)]
        assert using, f"no panel shows {metric}"
        if per_register:
            assert all('register=~"$register"' in exprs[t] for t in using), (metric, using)
    commands = next(e for e in exprs.values() if "accumulator_commands_total" in e)
    assert "by (op, outcome)" in commands
    lag = next(e for e in exprs.values() if "accumulator_consumer_lag_messages" in e)
    assert "partition" in lag
    dead = next(e for e in exprs.values() if "accumulator_dead_letters_total" in e)
    assert "by (reason)" in dead


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, (where, expr) in enumerate(queries(dashboard())):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        expr = re.sub(r"\$\{?\w+\}?", "x", expr)  # $register, ${datasource}: any literal
        rules.append({"record": f"dashboard:query_{i}", "expr": expr, "labels": {"where": where}})
    assert len(rules) >= 15
    (tmp_path / "dashboard.rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]})
    )
    result = run_promtool("check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
