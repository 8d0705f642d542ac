"""`accumulator` commands against a real migrated database: each command once, exit codes of SPEC §17."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import Conn
from helpers import movement as mv

from consumer.cli import (
    EXIT_DATA,
    EXIT_OK,
    EXIT_SCHEMA,
    EXIT_VERIFY,
    main,
)


class Cli:
    """Runs `accumulator … --dsn <test db>` in-process and captures its output."""

    def __init__(self, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.dsn = dsn
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str) -> int:
        self.capsys.readouterr()
        code = main([*argv, "--dsn", self.dsn])
        self.out, self.err = self.capsys.readouterr()
        return code

    def json(self, *argv: str) -> Any:
        code = self(*argv, "--format", "json")
        assert code == EXIT_OK, self.err
        return json.loads(self.out, parse_float=Decimal)


@pytest.fixture
def cli(db_dsn: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(db_dsn, capsys)


INVENTORY = [
    "register", "create", "--name", "inv", "--dimension", "warehouse=int", "product=integer",
    "--resource", "quantity=numeric(18,3)", "amount=numeric(18,2)", "--time-zone", "Europe/Berlin",
]  # fmt: skip


@pytest.fixture
def inventory(cli: Cli) -> str:
    assert cli(*INVENTORY) == EXIT_OK, cli.err
    return "inv"


def write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return str(path)


# ---- migrate ----------------------------------------------------------------------------------------------


def test_migrate_on_a_migrated_database(cli: Cli) -> None:
    assert cli("migrate") == EXIT_OK, cli.err
    assert "up to date" in cli.out
    statuses = cli.json("migrate", "--status")
    assert statuses
    assert all(s["state"] == "applied" for s in statuses)
    assert cli("migrate", "--dry-run") == EXIT_OK
    assert "nothing to apply" in cli.out
    assert cli("migrate", "--status") == EXIT_OK
    assert "0001_schema" in cli.out
    assert "applied" in cli.out


def test_unmigrated_database_exits_6_until_migrated(
    empty_db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(empty_db_dsn, capsys)
    assert cli("register", "list") == EXIT_SCHEMA
    assert "accumulator migrate" in cli.err
    assert cli("migrate", "--status") == EXIT_OK
    assert "pending" in cli.out
    assert cli("migrate", "--dry-run") == EXIT_OK
    assert "would apply 0001_schema" in cli.out
    assert cli("register", "list") == EXIT_SCHEMA
    assert cli("migrate", "--roles", "skip") == EXIT_OK, cli.err
    assert cli.out.startswith("applied 0001_schema")
    assert cli("register", "list") == EXIT_OK
    assert "no registers" in cli.out


def test_changed_migration_is_a_conflict(cli: Cli, conn: Conn) -> None:
    conn.execute("UPDATE accum.schema_migrations SET checksum = 'edited' WHERE version = 1")
    assert cli("migrate") == EXIT_SCHEMA
    assert "checksum" in cli.err
    assert cli("migrate", "--status") == EXIT_SCHEMA
    assert cli("register", "list") == EXIT_SCHEMA


# ---- registry ---------------------------------------------------------------------------------------------


def test_register_create_list_info(cli: Cli, inventory: str, tmp_path: Path) -> None:
    assert "created register inv" in cli.out
    assert cli(*INVENTORY, "--if-not-exists") == EXIT_OK
    assert "already exists" in cli.out
    assert cli(*INVENTORY[:-1], "UTC", "--if-not-exists") == EXIT_DATA  # same name, other zone
    assert cli(*INVENTORY) == EXIT_DATA  # exists, no --if-not-exists
    assert cli.err.startswith("accumulator: error: inv:")

    spec = tmp_path / "sales.yaml"
    spec.write_text(
        "name: sales\nkind: turnover\ndimensions: {channel: text, sku: varchar(20)}\nresources: {qty: int}\n"
    )
    assert cli("register", "create", "--file", str(spec)) == EXIT_OK, cli.err
    rows = cli.json("register", "list")
    assert [(r["name"], r["kind"]) for r in rows] == [("inv", "balance"), ("sales", "turnover")]
    assert cli("register", "list") == EXIT_OK
    assert cli.out.splitlines()[0].split()[:2] == ["name", "kind"]

    info = cli.json("register", "info", "inv")
    assert info["dimensions"] == {"product": "integer", "warehouse": "integer"}
    assert info["time_zone"] == "Europe/Berlin"
    assert cli("register", "info", "inv") == EXIT_OK
    assert "quantity" in cli.out
    assert "numeric(18,3)" in cli.out
    assert "inv_movements" in cli.out
    assert cli("register", "info", "nope") == EXIT_DATA


def test_register_alter_and_drop(cli: Cli, inventory: str, tmp_path: Path) -> None:
    movements = write_json(tmp_path / "m.json", [mv("2026-04-18", 1, 7, "1.5", "3.00")])
    assert cli("post", "inv", "doc1", "--movements", movements) == EXIT_OK, cli.err
    assert cli("register", "alter", "inv", "--add-resource", "weight=numeric(12,3)") == EXIT_OK, cli.err
    assert (
        cli("register", "alter", "inv", "--add-dimension", "lot=integer", "--backfill", "lot=0") == EXIT_OK
    ), cli.err
    assert cli("register", "alter", "inv", "--high-write") == EXIT_OK, cli.err
    info = cli.json("register", "info", "inv")
    assert info["dimensions"]["lot"] == "integer"
    assert info["resources"]["weight"] == "numeric(12,3)"
    assert info["high_write"] is True
    assert cli.json("balance", "inv", "--dim", "lot=0")["quantity"] == Decimal("1.500")
    assert cli("register", "alter", "inv", "--no-high-write") == EXIT_OK, cli.err
    assert cli("register", "alter", "inv", "--add-resource", "quantity=integer") == EXIT_DATA  # duplicate

    assert cli("register", "drop", "inv") == EXIT_DATA  # movements exist
    assert cli("register", "drop", "inv", "--force") == EXIT_OK, cli.err
    assert cli("register", "drop", "inv") == EXIT_DATA
    assert "does not exist" in cli.err


# ---- writes and reads -------------------------------------------------------------------------------------


def test_post_repost_unpost_and_reads(
    cli: Cli, inventory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receipt = [mv("2026-04-18", 1, 7, "10.5", "21.00"), mv("2026-04-18T23:30", 2, 7, "4", "8.00")]
    assert cli("post", "inv", "receipt:1", "--movements", write_json(tmp_path / "r.json", receipt)) == EXIT_OK
    assert cli.out.startswith("posted 2 movement(s)")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps([mv("2026-05-02", 1, 7, "-0.5", "-1.00")])))
    assert cli("post", "inv", "shipment:1", "--movements", "-", "--format", "json") == EXIT_OK, cli.err
    assert json.loads(cli.out) == {"register": "inv", "recorder": "shipment:1", "posted": 1}

    assert cli.json("balance", "inv") == {"amount": Decimal("28.00"), "quantity": Decimal("14.000")}
    assert cli.json("balance", "inv", "--dim", "warehouse=1", "product=7") == {
        "amount": Decimal("20.00"),
        "quantity": Decimal("10.000"),
    }
    # Dates are read in the register zone: 23:30 Berlin on 18 April is in, 2 May is not.
    assert cli.json("balance", "inv", "--at", "2026-04-30")["quantity"] == Decimal("14.500")
    assert cli.json("balance", "inv", "--at", "2026-04-18T23:00")["quantity"] == Decimal("10.500")
    assert cli("balance", "inv", "--dim", "warehouse=1") == EXIT_OK
    assert cli.out.split() == ["amount", "quantity", "------", "--------", "20.00", "10.000"]

    rows = cli.json(
        "turnover", "inv", "--from", "2026-04-01", "--to", "2026-04-30T23:59:59", "--group-by", "warehouse"
    )
    assert rows == [
        {"warehouse": 1, "amount": Decimal("21.00"), "quantity": Decimal("10.500")},
        {"warehouse": 2, "amount": Decimal("8.00"), "quantity": Decimal("4.000")},
    ]
    assert cli.json("turnover", "inv", "--dim", "warehouse=2") == [
        {"amount": Decimal("8.00"), "quantity": Decimal("4.000")}
    ]
    assert cli("turnover", "inv", "--group-by", "warehouse,product") == EXIT_OK
    assert cli.out.splitlines()[0].split() == ["warehouse", "product", "amount", "quantity"]

    fixed = write_json(tmp_path / "fix.json", [mv("2026-04-18", 1, 7, "11", "22.00")])
    assert cli("repost", "inv", "receipt:1", "--movements", fixed) == EXIT_OK, cli.err
    assert cli.out.startswith("reposted 1 movement(s)")
    assert cli.json("balance", "inv")["quantity"] == Decimal("10.500")
    assert cli("unpost", "inv", "shipment:1") == EXIT_OK
    assert cli.out.startswith("unposted 1 movement(s)")
    assert cli("unpost", "inv", "shipment:1") == EXIT_OK
    assert cli.out.startswith("unposted 0 movement(s)")
    assert cli.json("balance", "inv") == {"amount": Decimal("22.00"), "quantity": Decimal("11.000")}
    assert cli("repost", "inv", "receipt:1", "--movements", write_json(tmp_path / "e.json", [])) == EXIT_OK
    assert cli.json("balance", "inv") == {"amount": Decimal("0.00"), "quantity": Decimal("0.000")}


DATA_ERRORS = [
    pytest.param(["post", "inv", "d", "--movements", "@scale"], "inv: movements[0].quantity", id="scale"),
    pytest.param(["post", "inv", "d", "--movements", "@unknown_key"], "inv: movements[0]", id="unknown-key"),
    pytest.param(
        ["post", "nope", "d", "--movements", "@scale"], 'register "nope" does not exist', id="no-register"
    ),
    pytest.param(["balance", "nope"], "nope:", id="balance-no-register"),
    pytest.param(["balance", "inv", "--dim", "colour=red"], "inv:", id="unknown-filter"),
    pytest.param(["balance", "inv", "--dim", "warehouse=one"], "inv:", id="bad-filter-value"),
    pytest.param(["turnover", "inv", "--group-by", "colour"], "inv:", id="unknown-group"),
    pytest.param(["unpost", "nope", "d"], "nope:", id="unpost-no-register"),
    pytest.param(["rebuild", "nope"], "nope:", id="rebuild-no-register"),
    pytest.param(["merge", "nope"], "nope:", id="merge-no-register"),
    pytest.param(["verify", "nope"], "nope:", id="verify-no-register"),
]


@pytest.mark.parametrize(("argv", "message"), DATA_ERRORS)
def test_engine_rejections_exit_5(
    cli: Cli, inventory: str, tmp_path: Path, argv: list[str], message: str
) -> None:
    files = {
        "@scale": [mv("2026-04-18", 1, 7, "1.2345", "1.00")],
        "@unknown_key": [{**mv("2026-04-18", 1, 7, "1", "1.00"), "colour": "red"}],
    }
    argv = [write_json(tmp_path / "m.json", files[a]) if a in files else a for a in argv]
    assert cli(*argv) == EXIT_DATA
    assert cli.err.startswith("accumulator: error: ")
    assert message in cli.err
    assert len(cli.err.strip().splitlines()) == 1
    assert cli.json("balance", "inv") == {"amount": Decimal(0), "quantity": Decimal(0)}  # nothing changed


def test_invalid_movements_file_is_a_data_error(cli: Cli, inventory: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"period": "2026-04-18", "quantity": NaN}]')
    assert cli("post", "inv", "d", "--movements", str(bad)) == EXIT_DATA
    assert "invalid JSON" in cli.err


# ---- maintenance ------------------------------------------------------------------------------------------


def test_verify_rebuild(cli: Cli, inventory: str, conn: Conn, tmp_path: Path) -> None:
    movements = write_json(tmp_path / "m.json", [mv("2026-04-18", 1, 7, "2", "4.00")])
    assert cli("post", "inv", "d1", "--movements", movements) == EXIT_OK, cli.err
    assert cli("verify") == EXIT_OK
    assert cli.out.strip() == "inv: ok"
    assert cli("verify", "--all") == EXIT_OK
    assert cli("verify", "inv") == EXIT_OK

    # Damage the cache behind the engine's back (a superuser bypasses the grants).
    conn.execute("UPDATE accum.inv_balance_cache SET quantity = quantity + 1")
    assert cli("verify", "inv") == EXIT_VERIFY
    assert "inv: 1 problem(s)" in cli.out
    assert "MISMATCH" in cli.out
    assert cli("verify", "--format", "json") == EXIT_VERIFY
    report = json.loads(cli.out, parse_float=Decimal)
    assert report[0]["register"] == "inv"
    assert report[0]["ok"] is False
    assert report[0]["problems"][0]["check_type"] == "balance_cache"

    assert cli("rebuild", "inv", "--cache") == EXIT_OK, cli.err
    assert cli.out.startswith("rebuilt cache of inv")
    assert cli("verify") == EXIT_OK
    assert cli("rebuild", "inv") == EXIT_OK
    assert cli.out.startswith("rebuilt totals and cache of inv")
    assert cli.json("rebuild", "inv", "--totals")["cache"] is False


def test_merge_high_write(cli: Cli, tmp_path: Path) -> None:
    argv = [
        "register",
        "create",
        "--name",
        "acc",
        "--dimension",
        "account=text",
        "--resource",
        "amount=numeric(18,2)",
    ]
    assert cli(*argv, "--high-write") == EXIT_OK, cli.err
    movements = [{"period": "2026-04-18", "account": "cash", "amount": "5.00"}]
    assert cli("post", "acc", "t1", "--movements", write_json(tmp_path / "m.json", movements)) == EXIT_OK
    assert cli("merge", "acc", "--min-age-ms", "3600000") == EXIT_OK, cli.err
    assert cli.out.startswith("merged 0 delta row(s)")
    assert cli.json("merge", "--max-rows", "100") == {"register": None, "merged_rows": 1}
    assert cli("merge", "acc") == EXIT_OK
    assert cli.out.startswith("merged 0 delta row(s): acc")
    assert cli.json("balance", "acc", "--dim", "account=cash") == {"amount": Decimal("5.00")}


def test_turnover_register_rebuild_skips_the_cache(cli: Cli) -> None:
    argv = [
        "register",
        "create",
        "--name",
        "s",
        "--kind",
        "turnover",
        "--dimension",
        "sku=text",
        "--resource",
        "q=int",
    ]
    assert cli(*argv) == EXIT_OK, cli.err
    assert cli("rebuild", "s") == EXIT_OK, cli.err
    assert cli.out.startswith("rebuilt totals of s")
    assert cli("balance", "s") == EXIT_DATA  # 42809: no balance on a turnover register


def test_settings_from_environment(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCUMULATOR_DSN", db_dsn)
    assert main(["register", "list"]) == EXIT_OK
    monkeypatch.setenv("ACCUMULATOR_DSN", "postgresql://postgres@127.0.0.1:1/x")
    assert main(["register", "list", "--dsn", db_dsn]) == EXIT_OK  # the flag wins
    capsys.readouterr()
