"""Pure parts of the benchmark suite: target evaluation, the table, percentiles, plan, data, arguments."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from bench.cli import SCENARIOS, parse_args
from bench.db import is_durable, with_session_settings
from bench.plan import FULL_LOAD, Plan
from bench.report import Result, Target, describe_miss, evaluate, format_table, missed, ratio
from bench.stats import percentile, summarize
from bench.waits import profile, share
from bench.workload import COLUMNS, Shape, Workload, payload, rows


@pytest.mark.parametrize(
    ("target", "value", "rat", "ok"),
    [
        (Target(">=", 1 / 3), 1.0, 0.34, True),
        (Target(">=", 1 / 3), 1.0, 0.30, False),
        (Target("<=", 2.0), 1.0, 2.0, True),
        (Target("<=", 2.0), 1.0, 2.01, False),
        (Target("==", 0, on="value"), 0, None, True),
        (Target("==", 0, on="value"), 3, None, False),
        (Target("<=", 1.5, on="value"), 1.2, 9.0, True),  # the ratio is not what this target reads
        (Target(">=", 5.0), 1.0, None, False),  # a missing operand is a miss, never a pass
        (Target("<=", 2.0), 1.0, float("nan"), False),
    ],
)
def test_evaluate_reads_the_targeted_operand(
    target: Target, value: float, rat: float | None, ok: bool
) -> None:
    assert evaluate(Result("s", "m", value, ratio=rat, target=target)).ok is ok


def test_rows_without_target_are_neither_ok_nor_missed() -> None:
    r = evaluate(Result("s", "m", 1.0, ratio=9.0))
    assert r.ok is None
    assert missed([r]) == []


def test_ratio_guards_missing_and_zero_baselines() -> None:
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_table_has_header_rule_and_aligned_columns() -> None:
    results = [
        evaluate(
            Result(
                "post_batch",
                "1000/call movements/s",
                36005.0,
                "/s",
                70060.0,
                "multi-row VALUES",
                0.514,
                Target(">=", 1 / 3, label=">= 1/3 of VALUES floor"),
            )
        ),
        evaluate(Result("hot_key", "deadlocks", 0, "count", target=Target("==", 0, on="value", label="= 0"))),
        evaluate(
            Result(
                "post_single",
                "p50",
                0.302,
                "ms",
                0.09,
                "INSERT + SELECT 1",
                3.35,
                Target("<=", 2.0, label="<= 2x"),
            )
        ),
    ]
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["scenario", "metric", "value", "baseline", "ratio", "target", "ok"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[:2] == ["post_batch", "1000/call"]
    assert "36,005 /s" in lines[2]
    assert "70,060 /s (multi-row VALUES)" in lines[2]
    assert "0.514x" in lines[2]
    assert lines[2].endswith("ok")
    assert lines[4].endswith("MISS")
    # every column starts at the same offset on every line
    start = lines[0].index("baseline")
    assert all(line[start - 2 : start] == "  " for line in lines[2:])


def test_describe_miss_names_observed_and_wanted() -> None:
    r = evaluate(
        Result("post_single", "p50", 0.3, "ms", 0.09, ratio=3.35, target=Target("<=", 2.0, label="<= 2x"))
    )
    assert describe_miss(r) == "post_single: p50: ratio 3.35x, target <= 2x"
    gone = evaluate(
        Result("history", "error", None, note="boom", target=Target("==", 0, on="value", label="runs"))
    )
    assert describe_miss(gone) == "history: error: value missing, target runs (boom)"


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4, 5], 0) == 1
    assert percentile([3, 1, 2], 100) == 3
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summarize_reports_milliseconds() -> None:
    s = summarize([0.001, 0.002, 0.003])
    assert (s.n, s.p50_ms, s.min_ms, s.max_ms) == (3, 2.0, 1.0, 3.0)


def test_plan_full_scale_loads_a_million_and_small_scales_keep_floors() -> None:
    full = Plan.from_scale(1.0)
    assert full.load_movements == FULL_LOAD
    tiny = Plan.from_scale(0.001)
    assert tiny.load_movements == 10_000
    assert tiny.read_per_round >= 20
    assert tiny.hot_key_seconds >= 2.0
    with pytest.raises(ValueError, match="scale"):
        Plan.from_scale(0)


def test_workload_is_deterministic_and_history_moves_forward() -> None:
    from datetime import UTC, datetime

    def history() -> list[list[dict[str, object]]]:
        w = Workload(Shape(), stream=1)
        return list(w.history(95, datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC)))

    docs = history()
    assert docs == history()
    assert sum(len(d) for d in docs) == 95
    periods = [str(d[0]["period"]) for d in docs]
    assert periods == sorted(periods)  # ISO strings with Z sort as instants
    assert all(len({m["recorder"] for m in d}) == 1 for d in docs)
    flat = [m for d in docs for m in d]
    assert rows(flat)[0] == tuple(flat[0][c] for c in COLUMNS)
    assert payload(flat[:1]).startswith('[{"recorder":"h:1"')


def test_parse_args_validates_scenarios_and_scale(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--only", "post_batch,verify", "--scale", "0.05", "--check"])
    assert (args.only, args.scale, args.check) == (["post_batch", "verify"], 0.05, True)
    assert parse_args([]).only is None
    assert "hot_key" in SCENARIOS
    assert parse_args(["--only", "hot_key,hot_key_durable"]).only == ["hot_key", "hot_key_durable"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--scale", "0"])
    assert "unknown scenario" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fsync", "sync_commit", "durable"),
    [
        ("on", "on", True),
        ("on", "local", True),
        ("on", "remote_apply", True),
        ("on", "off", False),  # the commit returns before its WAL flush
        ("off", "on", False),  # the flush is not a flush
    ],
)
def test_is_durable_needs_fsync_and_a_waiting_commit(fsync: str, sync_commit: str, durable: bool) -> None:
    assert is_durable(fsync, sync_commit) is durable


def test_session_settings_go_into_options_and_keep_the_given_ones() -> None:
    plain = conninfo_to_dict(with_session_settings("postgresql://u@h:5/db", {"synchronous_commit": "on"}))
    assert (plain["host"], plain["port"], plain["dbname"]) == ("h", "5", "db")
    assert plain["options"] == "-c synchronous_commit=on"
    given = with_session_settings("host=h dbname=db options='-c work_mem=8MB'", {"synchronous_commit": "on"})
    assert conninfo_to_dict(given)["options"] == "-c work_mem=8MB -c synchronous_commit=on"


def test_wait_shares_and_profile() -> None:
    counts = {"Lock:transactionid": 6, "CPU": 2, "IO:WALSync": 1, "Client:ClientRead": 1}
    assert share(counts, "Lock:") == 60.0
    assert share(counts, "LWLock:") == 0.0
    assert share({}, "Lock:") is None
    assert profile(counts, top=2) == "Lock:transactionid 60%, CPU 20%, other 20%"
    assert profile(counts) == "Lock:transactionid 60%, CPU 20%, Client:ClientRead 10%, IO:WALSync 10%"
    assert profile({}) == "no samples"
