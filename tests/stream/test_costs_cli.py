"""Finance through its readers: the `tracejudge costs` command in process (CSV, JSON and table
output, the agents report, usage errors) and the worker API's JSON round trip that the command
may read through, which must give the same judge spend, agent spend and budget report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from judges.config import BudgetSpec
from stream.costs import agent_spend, budget_report, judge_spend
from stream.prices import load_prices
from stream.store import ClickHouseStore
from tests.stream.costs_support import CALL_COLS, D1, D2, PRICES_YAML, call, seed_agents, seed_judging


def test_results_survive_the_worker_api_json_round_trip(store: ClickHouseStore, tmp_path: Path) -> None:
    """The CLI may read through the worker's /api/sql, which sends rows as JSON (worker._jsonable)."""
    from stream.worker import _jsonable

    seed_judging(store)
    seed_agents(store)

    def via_api(sql: str) -> tuple[list[str], list[Any]]:
        got = store.read_only_query(sql)
        cols, rows = got.columns, got.rows
        return cols, json.loads(json.dumps([[_jsonable(v) for v in r] for r in rows]))

    assert judge_spend(via_api, store.database, ("day", "team")) == judge_spend(store.query, store.database, ("day", "team"))
    (tmp_path / "p.yaml").write_text(PRICES_YAML)
    prices = load_prices(tmp_path / "p.yaml")
    assert agent_spend(via_api, store.database, ("day", "agent"), prices) == agent_spend(store.query, store.database, ("day", "agent"), prices)
    budget = BudgetSpec(global_usd=5)
    assert budget_report(via_api, store.database, budget, D2) == budget_report(store.query, store.database, budget, D2)


# ---- the command -----------------------------------------------------------------------------------
JUDGING_YAML = """\
providers:
  - {name: p, type: openai, base_url: http://127.0.0.1:9, api_key_env: NO_SUCH_KEY_NEEDED}
tiers:
  cheap: {provider: p, model: judge-mini, price_in_per_1m: 0.15, price_out_per_1m: 0.60}
  strong: {provider: p, model: judge-big, price_in_per_1m: 2.50, price_out_per_1m: 10.00}
judges: [task_completion, tool_use_correctness]
budget: {period_s: 86400, global_usd: 4, per_judge_usd: {task_completion: 2}}
"""


@pytest.fixture
def cli(store: ClickHouseStore, chdb_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`tracejudge costs` in process, against the test's database (no worker: run_sql opens the store)."""
    from stream import cli as cli_module
    from stream.cli import app

    for k in ("TRACEJUDGE_CONFIG", "TRACEJUDGE_JUDGING_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TRACEJUDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_DSN", chdb_dsn)
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_DATABASE", store.database)
    # wide tables: the CLI's console takes its width from COLUMNS when stream.cli is first imported,
    # which in an xdist worker is already set (80)
    monkeypatch.setattr(cli_module.console, "width", 250)

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["costs", *args], catch_exceptions=False)

    return run


def test_cli_csv_json_and_table(store: ClickHouseStore, cli: Any, tmp_path: Path) -> None:
    seed_judging(store)
    store.insert("judge_calls", [call("evil", D1, "t1", "=HYPERLINK(\"x\")", 0.5, model="[red]m\x1b[31m")], CALL_COLS)
    r = cli("--by", "judge,team", "--format", "csv", "--until", "2026-03-03")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["judge"], x["team"], x["calls"], x["cost_usd"], x["charged_usd"]) for x in rows] == [
        ("'=HYPERLINK(\"x\")", "payments", "1", "0.5", "0.5"),  # a spreadsheet formula, neutralized
        ("task_completion", "payments", "2", "2.5", "2.5"), ("tool_use", "discovery", "1", "0.25", "0.25")]  # fmt: skip

    ELAPSED = (2 * 86400 + 16 * 3600) / 86400  # noqa: N806 - 2026-03-01 00:00 to 03-03 16:00
    j = cli("--by", "purpose", "--format", "json", "--judging", str(_judging(tmp_path)), "--as-of", "2026-03-03T16:00:00Z")
    assert j.exit_code == 0, j.output
    doc = json.loads(j.stdout)
    assert doc["total"]["cost_usd"] == 4.625 and doc["total"]["charged_usd"] == 4.5
    assert {x["purpose"]: x["calls"] for x in doc["rows"]} == {"backlog": 1, "calibration": 1, "flake": 1, "live": 4}
    lines = {ln["judge"]: ln for ln in doc["budget"]["lines"]}
    assert lines["*"]["spent_usd"] == 1.25 and lines["*"]["pct_of_limit"] == 31.25 and lines["*"]["uncharged_usd"] == 0.125
    assert lines["task_completion"]["pct_of_limit"] == 50.0
    assert lines["*"]["month_to_date_usd"] == 4.625 and doc["budget"]["elapsed_days"] == ELAPSED
    assert lines["*"]["projected_month_usd"] == 4.625 / ELAPSED * 31

    t = cli("--by", "judge,model")
    assert t.exit_code == 0, t.output
    assert "[red]m\\x1b[31m" in t.stdout and "m\x1b[31m" not in t.stdout  # no markup, no raw terminal escape
    assert "total" in t.stdout and "$4.6250" in t.stdout

    b = cli("--format", "csv", "--judging", str(_judging(tmp_path)), "--as-of", "2026-03-03T16:00:00Z")
    spend, budget = b.stdout.split("\n\n")
    assert next(csv.reader(io.StringIO(budget)))[:3] == ["judge", "limit_usd", "spent_usd"]


def test_cli_agents_report_lists_unpriced_models(store: ClickHouseStore, cli: Any, tmp_path: Path) -> None:
    seed_agents(store)
    (tmp_path / "p.yaml").write_text(PRICES_YAML)
    r = cli("--agents", "--by", "agent", "--prices", str(tmp_path / "p.yaml"), "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["report"] == "agent_llm_spend" and doc["total"]["cost_usd"] == 24.5
    assert doc["total"]["unpriced_models"] == ["", "secret-model"]
    assert [u["model"] for u in doc["unpriced_models"]] == ["", "secret-model"]
    t = cli("--agents", "--prices", str(tmp_path / "p.yaml"))
    assert t.exit_code == 0 and "Unpriced models" in t.stdout and "secret-model" in t.stdout and "unpriced" in t.stdout
    assert "calls w/o usage" in t.stdout and "cost is unknown" in t.stdout


@pytest.mark.parametrize("args, message", [
    (["--by", "judge,cost"], "unknown dimension"),
    (["--agents", "--by", "judge"], "unknown dimension"),
    (["--since", "last week"], "--since"),
    (["--format", "xml"], "--format"),
    (["--agents", "--judging", "x.yaml"], "--judging applies"),
    (["--prices", "p.yaml"], "--prices applies"),
    (["--judging", "/nonexistent/judging.yaml"], "cannot read"),
], ids=["dim", "agent-dim", "since", "format", "agents-budget", "judge-prices", "judging-file"])  # fmt: skip
def test_cli_usage_errors_exit_2(cli: Any, args: list[str], message: str) -> None:
    r = cli(*args)
    assert r.exit_code == 2 and message in r.output


def _judging(tmp_path: Path) -> Path:
    p = tmp_path / "judging.yaml"
    p.write_text(JUDGING_YAML)
    return p
