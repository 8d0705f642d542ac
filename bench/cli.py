"""``python -m bench``: run the chosen scenarios, print the table, write the JSON, ``--check`` the targets."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.context import Bench
from bench.db import connect, database, server, server_info
from bench.plan import Plan
from bench.report import Result, Target, describe_miss, evaluate, format_table, missed, result_dict
from bench.scenarios.balance import balance_current
from bench.scenarios.history import HISTORY_SCENARIOS, history
from bench.scenarios.hot_key import hot_key, hot_key_durable
from bench.scenarios.merge import merge
from bench.scenarios.round_trip import round_trip
from bench.scenarios.worker import WORKER_SCENARIOS, worker
from bench.scenarios.writes import post_batch, post_single, post_small, repost, unpost
from bench.workload import Shape

__all__ = ["SCENARIOS", "main", "parse_args"]

Scenario = Callable[[Bench], list[Result]]

# Run order: cheap write and read scenarios on small registers first, the 1M history load last, so its
# size does not change what the others measure.
SIMPLE: Final[dict[str, Scenario]] = {
    "round_trip": round_trip,
    "post_batch": post_batch,
    "post_single": post_single,
    "post_small": post_small,
    "unpost": unpost,
    "repost": repost,
    "balance_current": balance_current,
    "hot_key": hot_key,
    "hot_key_durable": hot_key_durable,
    "merge": merge,
}
SCENARIOS: Final = (*SIMPLE, *HISTORY_SCENARIOS, *WORKER_SCENARIOS)
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


def _scenario_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("scale must be > 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scale",
        type=_scale,
        default=1.0,
        help="fraction of the default load (1.0 = 1M-movement history; 0.05 for a quick run)",
    )
    p.add_argument(
        "--only",
        type=_scenario_list,
        default=None,
        metavar="S,...",
        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: bench/results/<timestamp>.json)"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a SPEC §21 target is missed")
    p.add_argument(
        "--dsn",
        default=None,
        help="superuser DSN of a server to use (a database is created and dropped there); "
        "default: a throwaway local cluster",
    )
    p.add_argument(
        "--kafka",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap of the worker scenarios (default: ACCUMULATOR_BENCH_KAFKA, else a local one)",
    )
    p.add_argument("--keep", action="store_true", help="keep the benchmark database (and local cluster)")
    return p.parse_args(argv)


def _error_result(name: str, exc: BaseException) -> Result:
    return evaluate(
        Result(
            name,
            "error",
            None,
            note=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
            target=Target("==", 0, on="value", label="runs"),
        )
    )


def run(b: Bench, selected: list[str], kafka: str | None = None) -> list[Result]:
    results: list[Result] = []
    for name, fn in SIMPLE.items():
        if name not in selected:
            continue
        b.log(f"{name} ...")
        try:
            results += fn(b)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            results.append(_error_result(name, exc))
    wanted = {n for n in selected if n in HISTORY_SCENARIOS}
    if wanted:
        b.log(f"history ({', '.join(sorted(wanted))}): loading {b.plan.load_movements:,} movements ...")
        try:
            results += history(b, wanted)
        except Exception as exc:
            traceback.print_exc()
            results.append(_error_result("history", exc))
    wanted = {n for n in selected if n in WORKER_SCENARIOS}
    if wanted:  # last: it runs a broker and a worker process next to the server
        try:
            results += worker(b, wanted, kafka)
        except Exception as exc:  # the broker did not start
            traceback.print_exc()
            results.append(_error_result("worker", exc))
    return [evaluate(r) for r in results]


def _document(
    args: argparse.Namespace,
    plan: Plan,
    shape: Shape,
    info: dict[str, Any],
    results: list[Result],
    started: datetime,
    selected: list[str],
) -> dict[str, Any]:
    finished = datetime.now(UTC)
    return {
        "command": shlex.join([sys.executable, "-m", "bench", *sys.argv[1:]]),
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 1),
        "scenarios": selected,
        "plan": plan.as_dict(),
        "shape": shape.as_dict(),
        "server": info,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "results": [result_dict(r) for r in results],
        "missed": [describe_miss(r) for r in missed(results)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    selected = args.only or list(SCENARIOS)
    plan = Plan.from_scale(args.scale)
    shape = Shape()
    started = datetime.now(UTC)
    with (
        server(args.dsn, keep=args.keep) as admin_dsn,
        database(admin_dsn, keep=args.keep) as dsn,
        connect(dsn) as conn,
    ):
        b = Bench(
            dsn=dsn, plan=plan, shape=shape, conn=conn, external_server=args.dsn is not None, keep=args.keep
        )
        info = server_info(conn)
        b.log(
            f"scale {plan.scale} on {info['settings']['server_version']}, {info['cpu_count']} CPUs, "
            f"load average {info['loadavg_1_5_15']} (other processes share this machine)"
        )
        results = run(b, selected, args.kafka)
    print(format_table(results))
    out = args.out or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(_document(args, plan, shape, info, results, started, selected), indent=2) + "\n"
    )
    print(f"\nresults: {out}")
    misses = missed(results)
    if misses:
        print("targets missed:\n" + "\n".join(f"  {describe_miss(r)}" for r in misses))
    return 1 if args.check and misses else 0
