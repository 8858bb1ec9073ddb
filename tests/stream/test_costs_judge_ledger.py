"""Finance, the judges' side: the views of 0006_finance.sql over the judge_calls ledger (attribution
to agent and team, daily sums, month-to-date burn), stream.costs.judge_spend (grouping, half-open
windows, argument validation) and the budget report with its month-end projection, on real
embedded ClickHouse. Agents' own spend and the price table are in test_costs_agents_prices.py,
the `tracejudge costs` command in test_costs_cli.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from judges.config import BudgetSpec
from stream.costs import (
    AGENT_DIMS,
    ALL_JUDGES,
    JUDGE_DIMS,
    CostsError,
    Window,
    budget_report,
    judge_spend,
    parse_by,
    parse_instant,
    project_month_end,
)
from stream.store import ClickHouseStore
from tests.stream.costs_support import CALL_COLS, D1, D2, call, seed_judging

VIEWS = ("judge_calls_attributed", "judge_cost_daily", "judge_budget_daily", "agent_llm_calls", "agent_llm_usage_daily")


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
