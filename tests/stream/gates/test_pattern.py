from __future__ import annotations

from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.pattern import PatternGate, PatternSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, AgentTrace, fixture_trace


def trace(user: str = "What is my balance?", answer: str = "Your balance is $10.", args: Any = None,
          result: str | None = None) -> Trace:  # fmt: skip
    t = AgentTrace()
    t.llm(user=user, tool_calls=[("crm", args or {})], finish="tool_calls")
    t.tool("crm", args or {}, result=result)
    t.llm(answer=answer)
    return t.build()


@pytest.mark.parametrize(
    ("kwargs", "spec", "outcome", "reason", "evidence"),
    [
        ({}, {}, GateOutcome.PASS, "no rule matched in 1 output text", []),
        ({"answer": "Mail jane.doe@example.com or call."}, {}, GateOutcome.FAIL, "1 match in output: email ×1",
         [("ja****************om", "email in output")]),
        ({"answer": "Card 4111 1111 1111 1111, SSN 123-45-6789."}, {}, GateOutcome.FAIL,
         "2 matches in output: credit_card ×1, us_ssn ×1",
         [("41***************11", "credit_card in output"), ("12*******89", "us_ssn in output")]),
        ({"answer": "Card 4111 1111 1111 1111."}, {"redact_evidence": False}, GateOutcome.FAIL,
         "1 match in output: credit_card ×1", [("Card 4111 1111 1111 1111.", "credit_card in output")]),
        ({"user": "I am jane@example.com"}, {}, GateOutcome.PASS, "no rule matched in 1 output text", []),
        ({"user": "I am jane@example.com"}, {"target": "input"}, GateOutcome.FAIL, "1 match in input: email ×1",
         [("ja************om", "email in input")]),
        ({"user": "I am jane@example.com"}, {"target": "both"}, GateOutcome.FAIL, "1 match in both: email ×1",
         [("ja************om", "email in input")]),
        ({"args": {"query": "DROP TABLE users"}}, {"target": "tool_args", "patterns": {}, "keywords": ["drop table"]},
         GateOutcome.FAIL, "1 match in tool_args: keywords ×1", [("DR******LE", "keywords in crm arguments")]),
        ({"result": "ssn=123-45-6789"}, {"target": "tool_results"}, GateOutcome.FAIL,
         "1 match in tool_results: us_ssn ×1", [("12*******89", "us_ssn in crm result")]),
        ({}, {"target": "tool_results"}, GateOutcome.NOT_APPLICABLE, "no tool_results text in the trace", []),
        ({"answer": "This is not financial advice."}, {"mode": "missing_fails", "patterns": {"disclaimer": "not financial advice"}},
         GateOutcome.PASS, "every rule matched in output", []),
        ({}, {"mode": "missing_fails", "patterns": {"disclaimer": "not financial advice"}, "keywords": ["balance"]},
         GateOutcome.FAIL, "required in output but missing: disclaimer", [(None, "disclaimer not found")]),
        ({"answer": "Timestamp 1760000000000000000 ok"}, {}, GateOutcome.PASS, "no rule matched in 1 output text", []),
    ],
    ids=["clean", "email", "card-and-ssn", "unredacted-context", "input-not-checked-by-default", "input", "both",
         "tool-args-keyword", "tool-results", "no-target-text", "missing-fails-pass", "missing-fails-fail",
         "long-digit-run-not-a-card"],
)
def test_pattern(kwargs: dict[str, Any], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                 evidence: list[tuple[str | None, str]]) -> None:  # fmt: skip
    r = PatternGate(PatternSpec(**spec)).evaluate(trace(**kwargs))
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [(e.text, e.detail) for e in r.evidence] == evidence


@pytest.mark.parametrize(
    ("stem", "outcome"),
    [(f, GateOutcome.PASS) for f in AGENT_FIXTURES if "no_optin" not in f]
    + [("openai_v2_no_optin_agent", GateOutcome.NOT_APPLICABLE)],
)
def test_agent_fixtures(stem: str, outcome: GateOutcome) -> None:
    assert PatternGate(PatternSpec()).evaluate(fixture_trace(stem)).outcome == outcome
    paris = PatternGate(PatternSpec(target="input", patterns={}, keywords=["paris"])).evaluate(fixture_trace(stem))
    expected = GateOutcome.NOT_APPLICABLE if outcome == GateOutcome.NOT_APPLICABLE else GateOutcome.FAIL
    assert paris.outcome == expected
