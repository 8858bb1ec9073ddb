from __future__ import annotations

from typing import Any

import pytest

from schemas.model import SpanKind, Trace
from stream.gates.base import GateOutcome
from stream.gates.latency import LatencyGate, LatencySpec
from tests.stream.gates.conftest import AGENT_FIXTURES, AgentTrace, fixture_trace


def trace(llm_ms: float = 50, tool_ms: float = 20, with_tool: bool = True) -> Trace:
    t = AgentTrace()
    t.llm(user="hi", duration_ms=llm_ms)
    if with_tool:
        t.tool("lookup", {}, duration_ms=tool_ms)
    return t.build()


@pytest.mark.parametrize(
    ("kwargs", "spec", "outcome", "reason", "details"),
    [
        ({}, {"max_ms": 1000}, GateOutcome.PASS, "trace took 73 ms <= 1000 ms", []),
        ({"llm_ms": 2000}, {"max_ms": 1000}, GateOutcome.FAIL, "trace took 2023 ms > 1000 ms",
         ["trace duration 2023 ms"]),
        ({"llm_ms": 2000}, {"max_ms": 1000, "span_kinds": [SpanKind.TOOL]}, GateOutcome.PASS,
         "slowest of 1 span took 20 ms <= 1000 ms", []),
        ({"llm_ms": 2000, "tool_ms": 1500}, {"max_ms": 1000, "span_kinds": [SpanKind.TOOL, SpanKind.LLM]},
         GateOutcome.FAIL, "2 spans over 1000 ms (slowest 2000 ms)",
         ["llm span 'chat gpt-4o-mini' took 2000 ms", "tool span 'execute_tool lookup' took 1500 ms"]),
        ({"with_tool": False}, {"span_kinds": [SpanKind.TOOL]}, GateOutcome.NOT_APPLICABLE, "no spans of kind tool", []),
    ],
    ids=["fast-trace", "slow-trace", "slow-llm-not-checked", "slow-spans", "no-span-of-kind"],
)
def test_latency(kwargs: dict[str, Any], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                 details: list[str]) -> None:  # fmt: skip
    t = trace(**kwargs)
    r = LatencyGate(LatencySpec(**spec)).evaluate(t)
    assert (r.outcome, r.reason, r.severity) == (outcome, reason, "warning")
    assert [e.detail for e in r.evidence] == details
    if r.evidence and "span_kinds" not in spec:
        assert r.evidence[0].span_id == t.root.span_id  # type: ignore[union-attr]


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_pass_default_and_fail_tiny_limit(stem: str) -> None:
    t = fixture_trace(stem)
    assert LatencyGate(LatencySpec()).evaluate(t).outcome == GateOutcome.PASS
    assert LatencyGate(LatencySpec(max_ms=0.001)).evaluate(t).outcome == GateOutcome.FAIL
