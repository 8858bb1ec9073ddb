"""Shared helpers for the finance tests (test_costs_*.py): column lists and hand-placed
judge_calls, traces and spans rows whose sums are known exactly (costs and prices are binary
fractions), the two seeders (judged traces and agents' own LLM spans), and a small price file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stream.store import ClickHouseStore

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
