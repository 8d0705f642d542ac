"""`accumulator demo --duration`: its own PostgreSQL and Kafka, the worker and the compactor as children.

The balances must equal what the demo producer sent (the demo writes both sides to `<home>/last-run.json`),
dead letters of every class must come back from the DLQ topic, and afterwards no process it started may run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

from consumer.demo_watch import scrape
from consumer.localkafka import PrerequisiteMissing, fetch_jars, find_java

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_home() -> Iterator[Path]:
    """A home the `postgres` user can reach when the tests run as root (pytest's tmp dirs are 0700).

    The Kafka jars come from the checkout's cache, fetched there once if missing, as the demo would use it.
    """
    try:
        find_java()
    except PrerequisiteMissing as exc:
        pytest.skip(f"the demo needs Java: {exc}")
    fetch_jars(REPO / ".tools" / "kafka")
    path = Path(tempfile.mkdtemp(prefix="demo-test-"))
    os.chmod(path, 0o755)
    try:
        yield path / "home"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _demo(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "demo", "--home", str(home), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads((home / "last-run.json").read_text()) if (home / "last-run.json").exists() else {}
    return done, result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _numbers(values: dict[str, str]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in values.items() if Decimal(v) != 0}


def _assert_balances_are_what_was_sent(result: dict[str, Any]) -> None:
    registers = result["registers"]
    assert set(registers) == {"demo_inventory", "demo_accounts", "demo_sales"}
    for name, register in registers.items():
        assert register["rows"], name
        for row in register["rows"]:
            assert _numbers(row["actual"]) == _numbers(row["expected"]), (name, row)
        assert register["mismatches"] == 0
    # Independent of the model: every transfer moves money between two accounts, so each currency nets to 0.
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    for row in registers["demo_accounts"]["rows"]:
        per_currency[row["key"]["currency"]] += Decimal(row["actual"].get("amount", "0"))
    assert per_currency
    assert set(per_currency.values()) == {Decimal(0)}


def _assert_nothing_left_running(home: Path, result: dict[str, Any]) -> None:
    pids = result["pids"]
    assert set(pids) == {"postgres", "kafka", "worker", "compactor"}
    assert [name for name, pid in pids.items() if pid is not None and _alive(pid)] == []
    found = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True, check=False)
    assert found.stdout == ""


def test_demo_balances_equal_what_was_sent_and_nothing_is_left_running(demo_home: Path) -> None:
    done, result = _demo(demo_home, "--duration", "8", "--rate", "200")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "http://127.0.0.1:" in result["metrics"]["worker"]
    for url in result["metrics"].values():
        assert url in out
    for name in ("demo_inventory", "demo_accounts", "demo_sales"):
        assert f"created register {name}" in out
    assert "all checks passed" in out

    sent = result["sent"]
    assert sent["messages"] >= 8 * 200 * 0.8
    assert sent["acknowledged"] == sent["messages"]
    assert sent["ops"]["repost"] > 0
    assert sent["ops"]["unpost"] > 0
    assert result["caught_up"] is True
    _assert_balances_are_what_was_sent(result)

    letters = result["dead_letters"]
    assert letters["actual"] == letters["expected"]
    assert set(letters["actual"]) == {"invalid_json", "schema_violation", "rejected", "unknown_register"}
    assert result["verify"] == {"demo_inventory": 0, "demo_accounts": 0, "demo_sales": 0}
    assert result["exit_codes"] == {"worker": 0, "compactor": result["exit_codes"]["compactor"]}
    _assert_nothing_left_running(demo_home, result)

    # Data kept: the next run finds its registers and topics and checks against the balances it starts from.
    # Without --duration it streams until SIGTERM (as Ctrl-C), then reports and stops as cleanly.
    again = _demo_until_sigterm(demo_home)
    assert "created register" not in again["output"]
    assert again["run_tag"] != result["run_tag"]
    assert again["interrupted"] is True
    assert again["exit_code"] == 0
    _assert_balances_are_what_was_sent(again)
    _assert_nothing_left_running(demo_home, again)


def _demo_until_sigterm(home: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCUMULATOR_")}
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "consumer", "demo", "--home", str(home), "--rate", "100"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("streaming" in line for line in lines), within=60, what="the demo streams")
            [url] = [m[1] for line in lines if (m := re.match(r"worker .* metrics (http://\S+)", line))]

            def applied() -> bool:
                metrics = scrape(url)
                return (
                    metrics is not None and metrics.total("accumulator_commands_total", outcome="applied") > 0
                )

            wait_until(applied, within=30, what="the worker applies commands")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            reader.join(timeout=10)
    output = "".join(lines)
    assert code == 0, output[-4000:]
    result: dict[str, Any] = json.loads((home / "last-run.json").read_text())
    return {**result, "output": output}
