from __future__ import annotations

from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.required_action import RequiredActionGate, RequiredActionSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, AgentTrace, fixture_trace

REFUND = {"trigger_keywords": ["refund", "money back"], "required_tools": ["issue_refund", "escalate_to_human"]}


def trace(user: str, tools: list[str], capture: bool = True) -> Trace:
    t = AgentTrace()
    t.llm(user=user, tool_calls=[(n, {}) for n in tools], finish="tool_calls", capture=capture)
    for name in tools:
        t.tool(name, {"order": 7}, result="{}")
    t.llm(answer="done", capture=capture)
    return t.build()


@pytest.mark.parametrize(
    ("user", "tools", "spec", "outcome", "reason", "evidence"),
    [
        ("I want a refund for order 7", ["lookup_order", "issue_refund"], REFUND, GateOutcome.PASS,
         "triggered and issue_refund was called", []),
        ("I want a REFUND for order 7", ["lookup_order"], REFUND, GateOutcome.FAIL,
         "user asked ('REFUND') but none of issue_refund, escalate_to_human was called",
         [("I want a REFUND for order 7", "trigger 'REFUND'")]),
        ("Give me my money back", ["escalate_to_human"], REFUND, GateOutcome.PASS,
         "triggered and escalate_to_human was called", []),
        ("Are refunds taxed?", ["lookup_order"], REFUND, GateOutcome.NOT_APPLICABLE,
         "no user message matches the trigger", []),
        ("cancel my subscription", [], {"trigger_patterns": [r"\bcancel\w*\b"], "required_tools": ["cancel_sub"]},
         GateOutcome.FAIL, "user asked ('cancel') but none of cancel_sub was called",
         [("cancel my subscription", "trigger 'cancel'")]),
        ("What's the weather?", ["get_weather"], REFUND, GateOutcome.NOT_APPLICABLE,
         "no user message matches the trigger", []),
    ],
    ids=["refund-done", "refund-missing-case-insensitive", "second-keyword-escalated", "whole-words-only",
         "regex-trigger", "not-triggered"],
)
def test_required_action(user: str, tools: list[str], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                         evidence: list[tuple[str, str]]) -> None:  # fmt: skip
    t = trace(user, tools)
    r = RequiredActionGate(RequiredActionSpec.model_validate(spec)).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [(e.text, e.detail) for e in r.evidence] == evidence
    first_llm = min(t.llm_spans, key=lambda s: s.start_ns)
    assert all(e.span_id == first_llm.span_id for e in r.evidence)


def test_no_captured_messages_is_not_applicable() -> None:
    r = RequiredActionGate(RequiredActionSpec.model_validate(REFUND)).evaluate(trace("refund please", [], capture=False))
    assert r.outcome == GateOutcome.NOT_APPLICABLE


@pytest.mark.parametrize("stem", [f for f in AGENT_FIXTURES if "no_optin" not in f])
def test_agent_fixtures(stem: str) -> None:
    spec = RequiredActionSpec(trigger_keywords=["weather"], required_tools=["get_weather"])
    assert RequiredActionGate(spec).evaluate(fixture_trace(stem)).outcome == GateOutcome.PASS
    spec = RequiredActionSpec(trigger_keywords=["weather"], required_tools=["get_forecast"])
    assert RequiredActionGate(spec).evaluate(fixture_trace(stem)).outcome == GateOutcome.FAIL
