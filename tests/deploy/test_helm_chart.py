"""The Helm chart (helm/pg-accumulator): lint, render with every ci/*-values.yaml, validate offline.

Built-in kinds are validated against the Kubernetes JSON schemas bundled with kubernetes-validate (strict:
unknown fields fail) for the oldest and newest Kubernetes the chart supports; ServiceMonitor and
PrometheusRule against the Prometheus Operator schemas of the npm package
@kubernetes-models/prometheus-operator (types and required fields).
Tools come from scripts/tools.sh (pinned, under .tools/); a missing one fails the test, naming the fix.
"""

from __future__ import annotations

import base64
import json
import os
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
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"
ALL_VALUES = CHART / "ci" / "all-values.yaml"
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # Chart.yaml's kubeVersion floor, and the newest bundled schema
NAMESPACE = "shop"
Doc = dict[str, Any]


def tool(name: str) -> str:
    """A pinned tool from .tools/bin (scripts/tools.sh), else from PATH; a clear failure when missing."""
    local = REPO / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: run scripts/tools.sh (as root it installs every deployment tool)")
    return found


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's state (cache, config, plugins) in a temp dir rather than $HOME."""
    home = tmp_path_factory.mktemp("helm")
    env = dict(os.environ)
    env.update({k: str(home / k.lower()) for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
    return env


def run(
    args: list[str], env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def render(helm_env: dict[str, str], *args: str, kube: str = KUBE_VERSIONS[-1]) -> str:
    result = run(
        [
            tool("helm"),
            "template",
            "rel",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube,
            *args,
        ],
        env=helm_env,
    )
    assert result.returncode == 0, f"helm template {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def docs(rendered: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def by_kind(objects: list[Doc]) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for d in objects:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(objects: list[Doc], kind: str, name_suffix: str = "") -> Doc:
    found = [d for d in objects if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def pod_specs(objects: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in objects:
        if d["kind"] in ("Deployment", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", d["spec"]


# --- lint and offline validation -------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(helm_env: dict[str, str], values: Path) -> None:
    result = run([tool("helm"), "lint", "--strict", str(CHART), "-f", str(values)], env=helm_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_objects_match_kubernetes_schemas(
    helm_env: dict[str, str], values: Path, kube: str, tmp_path: Path
) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render(helm_env, "-f", str(values), kube=kube))
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", kube, str(rendered)])
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the Prometheus Operator's kinds may lack a schema here; the next test validates those.
    unvalidated = re.findall(r"Couldn't find schema for kind (\w+)", result.stdout + result.stderr)
    assert set(unvalidated) <= {"ServiceMonitor", "PrometheusRule"}, unvalidated


# Validates each object read from stdin (a JSON list) with the model class of its kind; prints the errors.
_VALIDATE_CRDS = """
const models = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const { ServiceMonitor } = await import(`${models}/ServiceMonitor`);
const { PrometheusRule } = await import(`${models}/PrometheusRule`);
const kinds = { ServiceMonitor, PrometheusRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const doc of JSON.parse(input)) {
  try { new kinds[doc.kind](doc).validate(); }
  catch (e) { failed++; console.log(`${doc.kind}/${doc.metadata.name}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
"""


def test_monitoring_objects_match_prometheus_operator_schemas(helm_env: dict[str, str]) -> None:
    objects = [
        d
        for d in docs(render(helm_env, "-f", str(ALL_VALUES)))
        if d["kind"] in ("ServiceMonitor", "PrometheusRule")
    ]
    assert sorted(d["kind"] for d in objects) == ["PrometheusRule", "ServiceMonitor"]
    models = REPO / ".tools" / "npm"
    if not (models / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        pytest.fail(
            "@kubernetes-models/prometheus-operator is missing: run scripts/tools.sh (needs node and npm)"
        )
    result = subprocess.run(
        [tool("node"), "--input-type=module", "-e", _VALIDATE_CRDS],
        cwd=models,
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator is live: a required field missing is caught.
    broken = [json.loads(json.dumps(d)) for d in objects if d["kind"] == "ServiceMonitor"]
    del broken[0]["spec"]["selector"]
    result = subprocess.run(
        [tool("node"), "--input-type=module", "-e", _VALIDATE_CRDS],
        cwd=models,
        input=json.dumps(broken),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "required property" in result.stdout, result.stdout


# --- what the chart renders ----------------------------------------------------------------------------


def test_defaults_render_the_core_objects_only(helm_env: dict[str, str]) -> None:
    kinds = by_kind(docs(render(helm_env, "-f", str(DEFAULT_VALUES))))
    assert {k: len(v) for k, v in kinds.items()} == {
        "ConfigMap": 1,
        "Deployment": 1,
        "Job": 1,
        "Pod": 1,  # the `helm test` pod
        "PodDisruptionBudget": 1,
        "Service": 1,
        "ServiceAccount": 1,
    }


def test_every_optional_part_renders(helm_env: dict[str, str]) -> None:
    objects = docs(render(helm_env, "-f", str(ALL_VALUES)))
    kinds = by_kind(objects)
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget"} <= set(kinds)
    assert "Secret" not in kinds, "existing Secrets only: the chart must not make one"

    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    )  # job="pg-accumulator", as the alerts expect
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http-worker", "http-compactor"]
    service = one(objects, "Service")
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "pg-accumulator"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http-worker": 9400,
        "http-compactor": 9401,
    }

    dashboards = one(objects, "ConfigMap", "-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "monitoring"

    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "pg-accumulator", "app.kubernetes.io/instance": "rel"}
        },
    }


def test_prometheus_rule_renders_the_promtool_tested_file(helm_env: dict[str, str]) -> None:
    rule = one(docs(render(helm_env, "-f", str(ALL_VALUES))), "PrometheusRule")
    source = yaml.safe_load((CHART / "rules" / "accumulator.rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_prometheus_rule_without_compactor_drops_only_its_alert(helm_env: dict[str, str]) -> None:
    rule = one(
        docs(
            render(
                helm_env,
                "-f",
                str(DEFAULT_VALUES),
                "--set",
                "prometheusRule.enabled=true",
                "--set",
                "compactor.enabled=false",
            )
        ),
        "PrometheusRule",
    )
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    source = yaml.safe_load((CHART / "rules" / "accumulator.rules.yaml").read_text())
    expected = [
        r["alert"]
        for g in source["groups"]
        for r in g["rules"]
        if r["alert"] != "AccumulatorNoActiveCompactor"
    ]
    assert alerts == expected


def test_dashboard_configmap_carries_the_dashboard_files(helm_env: dict[str, str]) -> None:
    cm = one(docs(render(helm_env, "-f", str(ALL_VALUES))), "ConfigMap", "-dashboards")
    files = {p.name: json.loads(p.read_text()) for p in (CHART / "dashboards").glob("*.json")}
    assert files
    assert {k: json.loads(v) for k, v in cm["data"].items()} == files


def test_pods_are_restricted_and_probed(helm_env: dict[str, str]) -> None:
    objects = docs(render(helm_env, "-f", str(ALL_VALUES)))
    specs = dict(pod_specs(objects))
    assert len(specs) == 3, specs.keys()  # Deployment, migration Job, test Pod
    for where, spec in specs.items():
        assert spec["automountServiceAccountToken"] is False, where
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert c["resources"]["requests"], (where, c["name"])
            assert c["resources"]["limits"]["memory"], (where, c["name"])

    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["worker", "compactor"]
    for name, arg, port, port_name in (
        ("worker", "consume", 9400, "http-worker"),
        ("compactor", "compact", 9401, "http-compactor"),
    ):
        c = containers[name]
        assert c["args"] == [arg]
        assert c["ports"] == [{"name": port_name, "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port_name}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]}
        assert env["ACCUMULATOR_DSN"] == {"name": "accumulator-db", "key": "dsn"}
        assert env["ACCUMULATOR_KAFKA_EXTRA"] == {"name": "accumulator-kafka", "key": "kafka-extra"}
        assert c["envFrom"] == [{"configMapRef": {"name": "rel-pg-accumulator"}}]
    assert "ACCUMULATOR_VERIFY_DSN" in {e["name"] for e in containers["compactor"]["env"]}

    settings = one(objects, "ConfigMap", "rel-pg-accumulator")["data"]
    assert "ACCUMULATOR_METRICS_PORT" not in settings  # shared by both containers: 9400 and 9401 stay apart
    assert settings["ACCUMULATOR_KAFKA_TOPICS"] == "orders.commands,stock.commands"
    assert json.loads(settings["ACCUMULATOR_CONSUMER_EXTRA"]) == {"fetch.min.bytes": 65536}
    grace_ms = int(settings["ACCUMULATOR_SHUTDOWN_GRACE_MS"])
    assert pod["terminationGracePeriodSeconds"] * 1000 > grace_ms


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(helm_env: dict[str, str]) -> None:
    job = one(docs(render(helm_env, "-f", str(ALL_VALUES))), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate", "--roles=require", "--owner=accum_owner"]
    dsn = next(e for e in container["env"] if e["name"] == "ACCUMULATOR_DSN")
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "accumulator-db", "key": "owner-dsn"}
    # The chart's ServiceAccount does not exist yet when a pre-install hook runs.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_chart_made_secret_and_its_hook_copy(helm_env: dict[str, str]) -> None:
    objects = docs(render(helm_env, "-f", str(CHART / "ci" / "chart-secret-values.yaml")))
    secrets = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Secret"}
    assert set(secrets) == {"rel-pg-accumulator", "rel-pg-accumulator-migrate"}
    main = {k: base64.b64decode(v).decode() for k, v in secrets["rel-pg-accumulator"]["data"].items()}
    assert main["dsn"].startswith("postgresql://")
    assert json.loads(main["kafka-extra"])["security.protocol"] == "SASL_SSL"
    hook = secrets["rel-pg-accumulator-migrate"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0  # before the Job
    job = one(objects, "Job")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "rel-pg-accumulator-migrate", "key": "dsn"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "kafka"),  # nothing set: both required values missing
        (["--set", "kafka.bootstrapServers=k:9092"], "postgres"),
        (["-f", str(DEFAULT_VALUES), "--set", "podDisruptionBudget.maxUnavaliable=1"], "maxUnavaliable"),
        (
            ["-f", str(DEFAULT_VALUES), "--set", "settings.ACCUMULATOR_METRICS_PORT=9500"],
            "ACCUMULATOR_METRICS_PORT",
        ),
        (
            [
                "-f",
                str(DEFAULT_VALUES),
                "--set",
                "kafka.credentials.sasl\\.password=x",
                "--set",
                "kafka.extra.a=b",
            ],
            "kafka.extra",
        ),
        (
            ["-f", str(DEFAULT_VALUES), "--set", "terminationGracePeriodSeconds=20"],
            "terminationGracePeriodSeconds",
        ),
        (["-f", str(DEFAULT_VALUES), "--set", "migrations.roles=maybe"], "roles"),
        (["-f", str(DEFAULT_VALUES), "--set", "replicas=3"], "replicas"),
    ],
)
def test_bad_values_are_refused_with_a_reason(
    helm_env: dict[str, str], args: list[str], message: str
) -> None:
    result = run([tool("helm"), "template", "rel", str(CHART), "--namespace", NAMESPACE, *args], env=helm_env)
    assert result.returncode != 0, result.stdout[:2000]
    assert message in result.stderr, result.stderr


# --- README -------------------------------------------------------------------------------------------------


def _lookup(values: Any, dotted: str) -> Any:
    node = values
    for part in dotted.split("."):
        assert isinstance(node, dict), f"README names {dotted}, which values.yaml lacks"
        assert part in node, f"README names {dotted}, which values.yaml lacks"
        node = node[part]
    return node


def test_readme_values_table_matches_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = re.findall(r"^\| `([\w.]+)` \| (\w+) \| `(.*?)` \|", (CHART / "README.md").read_text(), re.M)
    assert len(rows) >= 20, "the README's values table is missing or unreadable"
    for key, kind, default in rows:
        actual = _lookup(values, key)
        assert json.loads(default) == actual, f"{key}: README says {default}, values.yaml has {actual!r}"
        assert (
            kind == {bool: "bool", int: "int", str: "string", list: "list", dict: "object"}[type(actual)]
        ), key
    required = {"kafka.bootstrapServers", "postgres.existingSecret", "postgres.dsn"}
    assert required <= {k for k, _, _ in rows}
