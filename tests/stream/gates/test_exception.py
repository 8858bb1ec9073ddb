from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import SpanKind, Trace
from stream.gates.base import GateOutcome
from stream.gates.exception import ExceptionGate, ExceptionSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, fixture_trace


def raising_tool(exc_type: str = "httpx.ConnectTimeout") -> Trace:
    t = AgentTrace()
    t.llm(user="hi", tool_calls=[("lookup", {})], finish="tool_calls")
    t.tool("lookup", {}, error=True, exception=(exc_type, "timed out after 30s"))
    t.llm(answer="sorry")
    return t.build()


def clean() -> Trace:
    t = AgentTrace()
    t.llm(user="hi", answer="hello")
    return t.build()


@pytest.mark.parametrize(
    ("trace", "spec", "outcome", "reason", "evidence"),
    [
        (clean, {}, GateOutcome.PASS, "no counted exception on 2 spans", []),
        (raising_tool, {}, GateOutcome.FAIL, "1 exception: httpx.ConnectTimeout",
         [("timed out after 30s", "httpx.ConnectTimeout")]),
        (raising_tool, {"ignore_types": ["ConnectTimeout"]}, GateOutcome.PASS, "no counted exception on 4 spans", []),
        (raising_tool, {"ignore_types": ["httpx.*"]}, GateOutcome.PASS, "no counted exception on 4 spans", []),
        (raising_tool, {"only_types": ["openai.*"]}, GateOutcome.PASS, "no counted exception on 4 spans", []),
        (raising_tool, {"only_types": ["httpx.ConnectTimeout"]}, GateOutcome.FAIL, "1 exception: httpx.ConnectTimeout",
         [("timed out after 30s", "httpx.ConnectTimeout")]),
        (clean, {"kinds": [SpanKind.TOOL]}, GateOutcome.NOT_APPLICABLE, "no spans of kind tool", []),
    ],
    ids=["clean", "exception", "ignored-by-last-part", "ignored-by-glob", "not-in-only", "in-only", "no-span-of-kind"],
)
def test_exception(trace: Callable[[], Trace], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                   evidence: list[tuple[str | None, str | None]]) -> None:
    r = ExceptionGate(ExceptionSpec(**spec)).evaluate(trace())
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [(e.text, e.detail) for e in r.evidence] == evidence


@pytest.mark.parametrize("stem", ERROR_FIXTURES)
def test_error_fixtures_fail(stem: str) -> None:
    r = ExceptionGate(ExceptionSpec()).evaluate(fixture_trace(stem))
    assert r.outcome == GateOutcome.FAIL
    assert r.reason.endswith("openai.InternalServerError")
    assert r.evidence and all(e.detail == "openai.InternalServerError" for e in r.evidence)


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_pass(stem: str) -> None:
    assert ExceptionGate(ExceptionSpec()).evaluate(fixture_trace(stem)).outcome == GateOutcome.PASS
