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


_HOW = "recovered by a later span of the same name and parent without error"


def retried_tool(second_args: Any, second_raises: bool = False, exceptions: int = 1) -> Trace:
    """A tool call that raises (``exceptions`` times, recorded on its span) and is made again."""
    t = AgentTrace()
    t.llm(user="hi", tool_calls=[("lookup", {"q": "x"})], finish="tool_calls")
    t.tool("lookup", {"q": "x", "page": 1}, error=True, exception=("httpx.ReadTimeout", "timed out"))
    if exceptions == 2:  # a second exception event on the same span
        t.children[-1].events.append(("exception", {"exception.type": "httpx.ReadTimeout", "exception.message": "again"}))
    t.tool("lookup", second_args, result="ok" if not second_raises else None, error=second_raises,
           exception=("httpx.ReadTimeout", "timed out") if second_raises else None)  # fmt: skip
    t.llm(answer="done")
    return t.build()


@pytest.mark.parametrize(
    ("trace", "outcome", "reason"),
    [
        (lambda: retried_tool('{"page": 1, "q": "x"}'), GateOutcome.PASS, f"1 exception on 5 spans {_HOW} and with the same input"),
        (lambda: retried_tool({"q": "x", "page": 1}, exceptions=2), GateOutcome.PASS,
         f"2 exceptions on 5 spans {_HOW} and with the same input"),
        (lambda: retried_tool({"q": "x", "page": 2}), GateOutcome.FAIL,
         f"1 exception: httpx.ReadTimeout (1 {_HOW} but with other input)"),
        (lambda: retried_tool({"q": "x", "page": 1}, second_raises=True), GateOutcome.FAIL,
         "2 exceptions: httpx.ReadTimeout"),
    ],
    ids=["same-arguments", "two-exceptions-same-span", "other-arguments", "retry-raised-too"],
)
def test_identical_retry_skips_exceptions_of_a_span_retried_with_the_same_input(
    trace: Callable[[], Trace], outcome: GateOutcome, reason: str
) -> None:
    t = trace()
    r = ExceptionGate(ExceptionSpec(ignore_recovered="identical_retry")).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    default = ExceptionGate(ExceptionSpec()).evaluate(t)
    assert default.outcome == GateOutcome.FAIL and len(default.evidence) >= len(r.evidence)
    wider = ExceptionGate(ExceptionSpec(ignore_recovered=True)).evaluate(t)
    assert len(wider.evidence) <= len(r.evidence)
    if outcome == GateOutcome.FAIL and "other input" in reason:
        assert wider.outcome == GateOutcome.PASS and default.reason.endswith(f"(1 {_HOW})")
