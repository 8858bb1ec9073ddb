"""Finance: the views of 0006_finance.sql, stream.costs and `tracejudge costs`, on real embedded
ClickHouse with hand-placed ledger, trace and span rows whose sums are known exactly (costs and
prices are binary fractions, so float sums are exact), and the price table (stream.prices)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from judges.config import BudgetSpec
from stream.costs import (
    AGENT_DIMS,
    ALL_JUDGES,
    JUDGE_DIMS,
    CostsError,
    Window,
    agent_spend,
    budget_report,
    judge_spend,
    parse_by,
    parse_instant,
    project_month_end,
)
from stream.prices import PriceError, default_price_file, load_prices
from stream.store import ClickHouseStore

VIEWS = ("judge_calls_attributed", "judge_cost_daily", "judge_budget_daily", "agent_llm_calls", "agent_llm_usage_daily")
CALL_COLS = ["call_id", "ts", "period", "trace_id", "judge", "tier", "purpose", "provider", "model", "status",
             "input_tokens", "output_tokens", "cost_usd", "kafka_partition"]  # fmt: skip
TRACE_COLS = ["trace_id", "service_name", "agent_name", "root_span_id", "completed_at"]
SPAN_COLS = ["trace_id", "span_id", "parent_span_id", "kind", "service_name", "agent_name", "resource_attributes",
             "request_model", "response_model", "input_tokens", "output_tokens", "start_time"]  # fmt: skip
D1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D2 = datetime(2026, 3, 3, 15, 30, tzinfo=UTC)
PRICES_YAML = """\
as_of: "2026-03-01"
replace_defaults: true
prices:
  "model-a*": {input_per_1m: 0.5, output_per_1m: 2.0}
  "model-b": {input_per_1m: 3.0, output_per_1m: 15.0}
"""


def call(cid: str, ts: datetime, trace: str, judge: str, cost: float, *, tier: str = "cheap", purpose: str = "live",
         model: str = "judge-mini", partition: int = 0, status: str = "ok", tokens: tuple[int, int] = (1000, 100)) -> list[Any]:  # fmt: skip
    return [cid, ts, int(ts.timestamp() // 86400), trace, judge, tier, purpose, "prov", model, status, *tokens, cost, partition]


def span(trace: str, sid: str, *, parent: str = "", kind: str = "llm", service: str = "svc", agent: str = "",
         resource: dict[str, str] | None = None, model: str = "", response_model: str = "", tokens: tuple[int, int] = (0, 0),
         start: datetime = D1) -> list[Any]:  # fmt: skip
    return [trace, sid, parent, kind, service, agent, resource or {"service.name": service}, model, response_model, *tokens, start]


def seed_judging(store: ClickHouseStore) -> None:
    """Three judged traces: t1 (root span has resource `team`), t2 (only `service.namespace`),
    t3 (neither: team = service). A calibration call on a golden case that is no trace."""
    store.insert("traces", [["t1", "checkout", "planner", "r1", D1], ["t2", "search", "finder", "r2", D1],
                            ["t3", "support", "helper", "r3", D1]], TRACE_COLS)  # fmt: skip
    store.insert("spans", [
        span("t1", "r1", kind="agent", service="checkout", resource={"team": "payments", "service.namespace": "shop"}),
        span("t1", "c1", parent="r1", service="checkout", resource={"team": "not-the-root"}),
        span("t2", "r2", kind="agent", service="search", resource={"service.namespace": "discovery"}),
        span("t3", "r3", kind="agent", service="support"),
    ], SPAN_COLS)  # fmt: skip
    store.insert("judge_calls", [
        call("k1", D1, "t1", "task_completion", 0.5),
        call("k2", D1, "t1", "task_completion", 2.0, tier="strong", model="judge-big"),
        call("k3", D1, "t2", "tool_use", 0.25, status="error"),
        call("k4", D2, "t3", "task_completion", 1.0, purpose="backlog", partition=3),
        call("k5", D2, "golden-7", "task_completion", 0.125, purpose="calibration", partition=-1),
        call("k6", D2, "t2", "tool_use", 0.25, purpose="flake", partition=1),
    ], CALL_COLS)  # fmt: skip
    # a replayed ledger row (same call_id) must not count twice
    store.insert("judge_calls", [call("k1", D1, "t1", "task_completion", 0.5)], CALL_COLS)


def as_dict(rows: list[Any]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    return {r.key: (r.calls, r.cost_usd, r.charged_usd) for r in rows}


# ---- views ------------------------------------------------------------------------------------------
def test_migration_creates_the_finance_views(store: ClickHouseStore) -> None:
    _, rows = store.query("SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": store.database})
    engines = dict(rows)
    assert {v: engines.get(v) for v in VIEWS} == dict.fromkeys(VIEWS, "View")
    for v in VIEWS:  # every view answers on an empty schema
        assert store.query(f"SELECT count() FROM {store.database}.{v}")[1] == [(0,)]


def test_attribution_of_judge_calls_to_agent_and_team(store: ClickHouseStore) -> None:
    seed_judging(store)
    _, rows = store.query(f"SELECT call_id, service_name, agent_name, team, charged FROM {store.database}.judge_calls_attributed ORDER BY call_id")
    assert rows == [
        ("k1", "checkout", "planner", "payments", 1),  # root span's `team`, not a child's
        ("k2", "checkout", "planner", "payments", 1),
        ("k3", "search", "finder", "discovery", 1),    # service.namespace
        ("k4", "support", "helper", "support", 1),     # neither: the service
        ("k5", "", "", "", 0),                         # calibration case: no trace, not charged
        ("k6", "search", "finder", "discovery", 1),
    ]  # fmt: skip


def test_daily_views_sum_the_ledger(store: ClickHouseStore) -> None:
    seed_judging(store)
    db = store.database
    _, rows = store.query(f"SELECT toString(day), judge, sum(calls), sum(failed_calls), sum(cost_usd), sum(charged_usd) "
                          f"FROM {db}.judge_cost_daily GROUP BY day, judge ORDER BY day, judge")  # fmt: skip
    assert rows == [("2026-03-02", "task_completion", 2, 0, 2.5, 2.5), ("2026-03-02", "tool_use", 1, 1, 0.25, 0.25),
                    ("2026-03-03", "task_completion", 2, 0, 1.125, 1.0), ("2026-03-03", "tool_use", 1, 0, 0.25, 0.25)]  # fmt: skip
    _, burn = store.query(f"SELECT toString(day), judge, calls, cost_usd, charged_usd, uncharged_usd, month_to_date_usd, "
                          f"month_to_date_charged_usd FROM {db}.judge_budget_daily ORDER BY judge, day")  # fmt: skip
    assert burn == [
        ("2026-03-02", ALL_JUDGES, 3, 2.75, 2.75, 0.0, 2.75, 2.75),
        ("2026-03-03", ALL_JUDGES, 3, 1.375, 1.25, 0.125, 4.125, 4.0),
        ("2026-03-02", "task_completion", 2, 2.5, 2.5, 0.0, 2.5, 2.5),
        ("2026-03-03", "task_completion", 2, 1.125, 1.0, 0.125, 3.625, 3.5),
        ("2026-03-02", "tool_use", 1, 0.25, 0.25, 0.0, 0.25, 0.25),
        ("2026-03-03", "tool_use", 1, 0.25, 0.25, 0.0, 0.5, 0.5),
    ]  # fmt: skip
    # a filter on day (as Grafana's $__dateFilter) must not truncate the month-to-date sums
    _, later = store.query(f"SELECT month_to_date_usd FROM {db}.judge_budget_daily WHERE judge = '*' AND day >= '2026-03-03'")
    assert later == [(4.125,)]


# ---- judge spend ----------------------------------------------------------------------------------
def test_judge_spend_grouped_as_asked(store: ClickHouseStore) -> None:
    seed_judging(store)
    q, db = store.query, store.database
    assert as_dict(judge_spend(q, db, ("day", "judge", "model"))) == {
        ("2026-03-02", "task_completion", "judge-big"): (1, 2.0, 2.0),
        ("2026-03-02", "task_completion", "judge-mini"): (1, 0.5, 0.5),
        ("2026-03-02", "tool_use", "judge-mini"): (1, 0.25, 0.25),
        ("2026-03-03", "task_completion", "judge-mini"): (2, 1.125, 1.0),
        ("2026-03-03", "tool_use", "judge-mini"): (1, 0.25, 0.25),
    }
    assert as_dict(judge_spend(q, db, ("team", "agent"))) == {
        ("", ""): (1, 0.125, 0.0), ("discovery", "finder"): (2, 0.5, 0.5),
        ("payments", "planner"): (2, 2.5, 2.5), ("support", "helper"): (1, 1.0, 1.0),
    }  # fmt: skip
    assert as_dict(judge_spend(q, db, ("purpose", "tier"))) == {
        ("backlog", "cheap"): (1, 1.0, 1.0), ("calibration", "cheap"): (1, 0.125, 0.0), ("flake", "cheap"): (1, 0.25, 0.25),
        ("live", "cheap"): (2, 0.75, 0.75), ("live", "strong"): (1, 2.0, 2.0),
    }  # fmt: skip
    rows = judge_spend(q, db, ("judge",))
    assert [(r.key, r.failed_calls, r.input_tokens, r.output_tokens) for r in rows] == [
        (("task_completion",), 0, 4000, 400), (("tool_use",), 1, 2000, 200)]


def test_judge_spend_window_is_half_open(store: ClickHouseStore) -> None:
    seed_judging(store)
    q, db = store.query, store.database
    only_d1 = Window(parse_instant("2026-03-02"), parse_instant("2026-03-03"))
    assert as_dict(judge_spend(q, db, ("judge",), only_d1)) == {("task_completion",): (2, 2.5, 2.5), ("tool_use",): (1, 0.25, 0.25)}
    at_d2 = Window(since=D2)  # a call exactly at `since` is in, one exactly at `until` is out
    assert sum(r.calls for r in judge_spend(q, db, ("day",), at_d2)) == 3
    assert judge_spend(q, db, ("day",), Window(until=D1)) == []
    offset = Window(parse_instant("2026-03-03T16:30:00+01:00"))  # = D2 in UTC
    assert sum(r.calls for r in judge_spend(q, db, ("day",), offset)) == 3


def test_arguments_are_validated_before_any_sql() -> None:
    assert parse_by(None, JUDGE_DIMS, ("day",)) == ("day",)
    assert parse_by(" Day ,team", JUDGE_DIMS, ()) == ("day", "team")
    for bad in ("day,,judge", "day,day", "judge;DROP TABLE x", "tier,cost"):
        with pytest.raises(CostsError, match="--by"):
            parse_by(bad, JUDGE_DIMS, ())
    with pytest.raises(CostsError):
        parse_by("judge", AGENT_DIMS, ())  # agents have no judge
    for bad in ("yesterday", "2026-13-01", "2026-03-01' OR 1=1 --"):
        with pytest.raises(CostsError, match="--since"):
            parse_instant(bad)
    with pytest.raises(CostsError, match="before"):
        Window(D2, D1)
    with pytest.raises(CostsError, match="database"):
        judge_spend(lambda q: ([], []), "x; DROP", ("day",))


# ---- budget and projection ---------------------------------------------------------------------
def test_month_end_projection_is_linear_in_elapsed_time() -> None:
    assert project_month_end(8.5, datetime(2026, 3, 9, 12, tzinfo=UTC)) == (31.0, 8.5, 31)
    assert project_month_end(3.0, datetime(2028, 2, 2, tzinfo=UTC)) == (87.0, 1.0, 29)  # leap February
    assert project_month_end(0.0, datetime(2026, 4, 1, tzinfo=UTC)) == (0.0, 0.0, 30)
    # an aware non-UTC clock is the same instant: 2026-03-09 14:00+02:00 = 12:00 UTC
    assert project_month_end(8.5, datetime(2026, 3, 9, 14, tzinfo=timezone(timedelta(hours=2))))[0] == 31.0


def test_budget_burn_and_projection(store: ClickHouseStore) -> None:
    now = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)  # 8.5 days into March (31 days)
    today = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    store.insert("judge_calls", [
        call("b1", datetime(2026, 2, 28, 23, tzinfo=UTC), "x", "task_completion", 100.0),  # last month
        call("b2", datetime(2026, 3, 3, 9, tzinfo=UTC), "x", "task_completion", 4.0),      # this month, older period
        call("b3", today, "x", "task_completion", 2.5),
        call("b4", today, "y", "tool_use", 1.5, partition=5),
        call("b5", today, "golden", "task_completion", 0.5, purpose="calibration", partition=-1),
    ], CALL_COLS)  # fmt: skip
    budget = BudgetSpec(period_s=86400, global_usd=10, per_judge_usd={"task_completion": 4, "refusal": 1})
    rep = budget_report(store.query, store.database, budget, now)
    assert rep.period == int(now.timestamp()) // 86400
    assert (rep.period_start, rep.period_end) == (datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
    assert (rep.elapsed_days, rep.days_in_month) == (8.5, 31)
    lines = {ln.judge: ln for ln in rep.lines}
    assert [ln.judge for ln in rep.lines] == [ALL_JUDGES, "refusal", "task_completion", "tool_use"]
    g = lines[ALL_JUDGES]
    assert (g.limit_usd, g.spent_usd, g.pct_of_limit, g.uncharged_usd) == (10, 4.0, 40.0, 0.5)
    assert (g.month_to_date_usd, g.projected_month_usd, g.month_limit_usd, g.projected_pct_of_month_limit) == (8.5, 31.0, 310.0, 10.0)
    tc = lines["task_completion"]
    assert (tc.spent_usd, tc.pct_of_limit, tc.uncharged_usd, tc.month_to_date_usd) == (2.5, 62.5, 0.5, 7.0)
    assert tc.projected_month_usd == 7.0 / 8.5 * 31 and tc.month_limit_usd == 124.0
    tu = lines["tool_use"]
    assert (tu.limit_usd, tu.pct_of_limit, tu.spent_usd, tu.month_limit_usd, tu.projected_pct_of_month_limit) == (None, None, 1.5, None, None)
    assert lines["refusal"].spent_usd == 0.0 and lines["refusal"].pct_of_limit == 0.0
    # an hourly budget: the period is the hour of `now`, which saw nothing
    hourly = budget_report(store.query, store.database, BudgetSpec(period_s=3600, global_usd=1), now)
    assert hourly.lines[0].spent_usd == 0.0 and hourly.lines[0].month_limit_usd == 31 * 24


# ---- agents' own spend -------------------------------------------------------------------------
def seed_agents(store: ClickHouseStore) -> None:
    store.insert("traces", [["a1", "checkout", "planner", "ar", D1]], TRACE_COLS)
    store.insert("spans", [
        span("a1", "ar", kind="agent", service="checkout", agent="planner", tokens=(9_000_000, 9_000_000)),  # not an LLM call
        span("a1", "l1", parent="ar", service="checkout", model="model-a-1", response_model="model-a-2026",
             tokens=(1_000_000, 500_000), resource={"team": "payments"}),  # agent from the trace
        span("a1", "l2", parent="ar", service="checkout", model="model-b", tokens=(2_000_000, 1_000_000),
             start=D2),
        span("a1", "l3", parent="ar", service="checkout", model="secret-model", tokens=(300, 20)),
        span("a1", "l4", parent="ar", service="checkout", model="", tokens=(7, 3)),
        span("a1", "l5", parent="ar", service="checkout", model="model-b", tokens=(0, 0)),  # usage not recorded
        span("zz", "l6", service="batch", agent="summarizer", model="MODEL-A", tokens=(4_000_000, 0),
             resource={"service.namespace": "ops"}),  # no trace row yet
    ], SPAN_COLS)  # fmt: skip


def test_agent_spend_is_priced_per_model_and_unpriced_is_never_zero(store: ClickHouseStore, tmp_path: Path) -> None:
    seed_agents(store)
    (tmp_path / "p.yaml").write_text(PRICES_YAML)
    prices = load_prices(tmp_path / "p.yaml")
    rep = agent_spend(store.query, store.database, ("service", "agent", "model"), prices)
    got = {r.key: (r.llm_calls, r.input_tokens, r.output_tokens, r.cost_usd, r.unpriced_models, r.calls_without_usage) for r in rep.rows}
    assert got == {
        ("batch", "summarizer", "MODEL-A"): (1, 4_000_000, 0, 2.0, (), 0),
        ("checkout", "planner", ""): (1, 7, 3, None, ("",), 0),
        ("checkout", "planner", "model-a-2026"): (1, 1_000_000, 500_000, 1.5, (), 0),  # response model wins
        ("checkout", "planner", "model-b"): (2, 2_000_000, 1_000_000, 21.0, (), 1),
        ("checkout", "planner", "secret-model"): (1, 300, 20, None, ("secret-model",), 0),
    }
    t = rep.total
    assert (t.llm_calls, t.cost_usd, t.unpriced_models, t.unpriced_input_tokens, t.unpriced_output_tokens) == (6, 24.5, ("", "secret-model"), 307, 23)
    assert [(u.model, u.llm_calls, u.input_tokens) for u in rep.unpriced] == [("", 1, 7), ("secret-model", 1, 300)]
    assert rep.prices_as_of.startswith("2026-03-01")
    # grouped without the model: priced parts are summed, the unpriced part is named, not zeroed
    by_team = {r.key: r for r in agent_spend(store.query, store.database, ("team",), prices).rows}
    assert by_team.keys() == {("checkout",), ("ops",), ("payments",)}
    assert by_team[("payments",)].cost_usd == 1.5 and by_team[("ops",)].cost_usd == 2.0
    mixed = by_team[("checkout",)]
    assert (mixed.cost_usd, mixed.fully_priced, mixed.unpriced_models, mixed.unpriced_calls) == (21.0, False, ("", "secret-model"), 2)
    # the window applies to the span start time
    rows = agent_spend(store.query, store.database, ("day",), prices, Window(since=D2)).rows
    assert [(r.key, r.llm_calls, r.cost_usd) for r in rows] == [(("2026-03-03",), 1, 21.0)]


def test_agent_usage_view_counts_llm_spans_once(store: ClickHouseStore) -> None:
    seed_agents(store)
    store.insert("spans", [span("a1", "l1", parent="ar", service="checkout", model="model-a-1", response_model="model-a-2026",
                                tokens=(1_000_000, 500_000), resource={"team": "payments"})], SPAN_COLS)  # replayed span
    _, rows = store.query(f"SELECT agent_name, team, sum(llm_calls), sum(input_tokens) FROM {store.database}.agent_llm_usage_daily "
                          "GROUP BY agent_name, team ORDER BY agent_name, team")  # fmt: skip
    assert rows == [("planner", "checkout", 4, 2_000_307), ("planner", "payments", 1, 1_000_000), ("summarizer", "ops", 1, 4_000_000)]


def test_results_survive_the_worker_api_json_round_trip(store: ClickHouseStore, tmp_path: Path) -> None:
    """The CLI may read through the worker's /api/sql, which sends rows as JSON (worker._jsonable)."""
    from stream.worker import _jsonable

    seed_judging(store)
    seed_agents(store)

    def via_api(sql: str) -> tuple[list[str], list[Any]]:
        cols, rows = store.read_only_query(sql)
        return cols, json.loads(json.dumps([[_jsonable(v) for v in r] for r in rows]))

    assert judge_spend(via_api, store.database, ("day", "team")) == judge_spend(store.query, store.database, ("day", "team"))
    (tmp_path / "p.yaml").write_text(PRICES_YAML)
    prices = load_prices(tmp_path / "p.yaml")
    assert agent_spend(via_api, store.database, ("day", "agent"), prices) == agent_spend(store.query, store.database, ("day", "agent"), prices)
    budget = BudgetSpec(global_usd=5)
    assert budget_report(via_api, store.database, budget, D2) == budget_report(store.query, store.database, budget, D2)


# ---- price table ---------------------------------------------------------------------------------
def test_default_price_table_is_dated_and_prices_known_models() -> None:
    doc = default_price_file()
    assert datetime.fromisoformat(doc.as_of) and doc.currency == "USD" and len(doc.prices) > 40
    t = load_prices()
    expect = {"gpt-4o-mini-2024-07-18": (0.15, 0.60), "gpt-4o-2024-08-06": (2.5, 10.0), "gpt-4o-2024-05-13": (5.0, 15.0),
              "claude-3-5-sonnet-20241022": (3.0, 15.0), "anthropic.claude-3-haiku-20240307-v1:0": (0.25, 1.25),
              "models/gemini-2.0-flash-001": (0.10, 0.40), "gemini-2.5-flash-lite": (0.10, 0.40), "GPT-4.1-MINI": (0.40, 1.60)}  # fmt: skip
    for model, (pin, pout) in expect.items():
        m = t.lookup(model)
        assert m is not None and (m.price.input_per_1m, m.price.output_per_1m) == (pin, pout), model
    for unknown in ("o1-pro", "gpt-4o-realtime-preview", "claude-opus-4-5-20251101", "llama-3-70b", ""):
        assert t.lookup(unknown) is None, unknown  # a new variant is unpriced, not a neighbour's price


def test_user_prices_win_and_can_replace_defaults(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text('as_of: 2026-01-15\nprices:\n  "gpt-4o-mini*": {input_per_1m: 0.125, output_per_1m: 0.5}\n'
                 '  "gpt-*": {input_per_1m: 9, output_per_1m: 9}\n  "GPT-4O-MINI-2024-07-18": {input_per_1m: 1, output_per_1m: 1}\n')  # fmt: skip
    t = load_prices(p)
    assert t.lookup("gpt-4o-mini-2024-07-18").pattern == "gpt-4o-mini-2024-07-18"  # exact beats globs
    assert t.lookup("gpt-4o-mini-x").price.input_per_1m == 0.125  # most literal characters wins
    assert t.lookup("gpt-4.1").price.input_per_1m == 9  # the user's broad glob beats the defaults
    m = t.lookup("claude-3-5-haiku-20241022")
    assert m.table == "default" and m.price.output_per_1m == 4.0
    assert t.as_of == f"2026-01-15 ({p}); {default_price_file().as_of} (default)"
    assert t.cost("gpt-4o-mini-x", 2_000_000, 1_000_000) == 0.75 and t.cost("nope", 1, 1) is None
    p.write_text(PRICES_YAML)
    assert load_prices(p).lookup("gpt-4o") is None  # replace_defaults


@pytest.mark.parametrize("text, match", [
    ("prices: {a: {input_per_1m: 1, output_per_1m: 1}}", "as_of"),
    ("as_of: x\nprices: {a: {input_per_1m: -1, output_per_1m: 1}}", "greater than or equal"),
    ("as_of: x\ncurrency: EUR\nprices: {a: {input_per_1m: 1, output_per_1m: 1}}", "USD"),
    ("as_of: x\nprices: {A: {input_per_1m: 1, output_per_1m: 1}, a: {input_per_1m: 2, output_per_1m: 2}}", "duplicate"),
    ("as_of: x\nprices: {a: {input_per_1m: .inf, output_per_1m: 1}}", "finite"),
    ("as_of: x\nprices: {a: {input: 1, output_per_1m: 1}}", "prices.a"),
    ("as_of: [unclosed", "yaml"),
], ids=["no-date", "negative", "currency", "duplicate", "infinite", "unknown-field", "bad-yaml"])  # fmt: skip
def test_invalid_price_files_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(PriceError, match=match):
        load_prices(p)


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
    from stream.cli import app

    for k in ("TRACEJUDGE_CONFIG", "TRACEJUDGE_JUDGING_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TRACEJUDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_DSN", chdb_dsn)
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_DATABASE", store.database)
    monkeypatch.setenv("COLUMNS", "250")

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
