from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import SpanKind, Trace
from stream.gates.base import GateOutcome
from stream.gates.span_error import SpanErrorGate, SpanErrorSpec
from tests.factories import SpanSpec, genai_trace
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, assemble, fixture_trace


def failing_tool() -> Trace:
    t = AgentTrace()
    t.llm(user="hi", tool_calls=[("lookup", {})], finish="tool_calls")
    t.tool("lookup", {}, error=True, status_message="connection refused")
    t.llm(answer="sorry")
    return t.build()


def error_on_llm_only() -> Trace:
    t = AgentTrace()
    t.llm(user="hi", error=True)
    t.tool("lookup", {})
    return t.build()


def plain() -> Trace:
    return assemble(genai_trace(random.Random(3), 5))


def no_tools() -> Trace:
    spans: list[SpanSpec] = genai_trace(random.Random(4), 2)  # root + one chat
    return assemble(spans)


@pytest.mark.parametrize(
    ("trace", "kinds", "outcome", "reason", "evidence"),
    [
        (plain, None, GateOutcome.PASS, "no error status on 5 spans", []),
        (failing_tool, None, GateOutcome.FAIL, "1 span with error status: execute_tool lookup",
         [("connection refused", "tool span 'execute_tool lookup'")]),
        (failing_tool, [SpanKind.LLM], GateOutcome.PASS, "no error status on 2 spans", []),
        (error_on_llm_only, [SpanKind.TOOL], GateOutcome.PASS, "no error status on 1 span", []),
        (error_on_llm_only, [SpanKind.TOOL, SpanKind.LLM], GateOutcome.FAIL,
         "1 span with error status: chat gpt-4o-mini", [("tool failed", "llm span 'chat gpt-4o-mini'")]),
        (no_tools, [SpanKind.TOOL], GateOutcome.NOT_APPLICABLE, "no spans of kind tool", []),
    ],
    ids=["clean", "tool-error", "tool-error-ignored-by-kind", "llm-error-ignored-by-kind", "llm-error-counted",
         "no-span-of-kind"],
)
def test_span_error(trace: Callable[[], Trace], kinds: list[SpanKind] | None, outcome: GateOutcome,
                    reason: str, evidence: list[tuple[str | None, str | None]]) -> None:
    t = trace()
    r = SpanErrorGate(SpanErrorSpec(kinds=kinds)).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [(e.text, e.detail) for e in r.evidence] == evidence
    assert all(e.span_id in {s.span_id for s in t.spans} for e in r.evidence)
    assert (r.gate, r.type, r.severity) == ("span_error", "span_error", "error")


@pytest.mark.parametrize("stem", ERROR_FIXTURES)
def test_error_fixtures_fail(stem: str) -> None:
    r = SpanErrorGate(SpanErrorSpec()).evaluate(fixture_trace(stem))
    assert r.outcome == GateOutcome.FAIL
    assert r.reason.startswith("2 spans with error status")
    assert all("Error code: 500" in (e.text or "") for e in r.evidence)


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_pass(stem: str) -> None:
    assert SpanErrorGate(SpanErrorSpec()).evaluate(fixture_trace(stem)).outcome == GateOutcome.PASS


def tool_calls(*calls: tuple[str, bool]) -> Trace:
    """One agent turn calling tools in order: (name, failed) each; a failed call has error status."""
    t = AgentTrace()
    t.llm(user="hi", tool_calls=[(name, {}) for name, _ in calls], finish="tool_calls")
    for name, failed in calls:
        t.tool(name, {}, error=failed, status_message="503 upstream" if failed else None)
    t.llm(answer="done")
    return t.build()


@pytest.mark.parametrize(
    ("calls", "outcome", "reason"),
    [
        ((("lookup", True), ("lookup", False)), GateOutcome.PASS,
         "1 error span of 5 recovered by a later successful span of the same name and parent"),
        ((("lookup", True), ("lookup", True), ("lookup", False)), GateOutcome.PASS,
         "2 error spans of 6 recovered by a later successful span of the same name and parent"),
        ((("lookup", True), ("lookup", True)), GateOutcome.FAIL, "2 spans with error status: execute_tool lookup"),
        ((("lookup", False), ("lookup", True)), GateOutcome.FAIL, "1 span with error status: execute_tool lookup"),
        ((("lookup", True), ("search", False)), GateOutcome.FAIL, "1 span with error status: execute_tool lookup"),
        ((("lookup", True), ("lookup", False), ("lookup", True)), GateOutcome.FAIL,
         "1 span with error status: execute_tool lookup (1 more recovered by a later successful span of the same"
         " name and parent, ignored)"),
    ],
    ids=["retry-ok", "two-retries-ok", "retry-failed", "error-after-success", "other-tool-ok", "last-retry-failed"],
)
def test_ignore_recovered_drops_errors_a_later_sibling_made_good(calls: tuple[tuple[str, bool], ...],
                                                                 outcome: GateOutcome, reason: str) -> None:  # fmt: skip
    t = tool_calls(*calls)
    r = SpanErrorGate(SpanErrorSpec(ignore_recovered=True)).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    failed_last = [s.span_id for s in t.spans if s.status_code.name == "ERROR"][-1:]
    if outcome == GateOutcome.FAIL:
        assert failed_last[0] in [e.span_id for e in r.evidence]  # the call that was never made good
    default = SpanErrorGate(SpanErrorSpec()).evaluate(t)
    assert default.outcome == GateOutcome.FAIL  # off by default: every error span counts
    assert len(default.evidence) == sum(failed for _, failed in calls)
    recovered = len(default.evidence) - len(r.evidence)  # what the option drops, named in the default's reason
    assert default.reason.endswith(f" ({recovered} recovered by a later successful span of the same name and parent)"
                                   if recovered else "execute_tool lookup")  # fmt: skip


@pytest.mark.parametrize("stem", ERROR_FIXTURES)
def test_real_error_traces_are_not_recovered(stem: str) -> None:
    r = SpanErrorGate(SpanErrorSpec(ignore_recovered=True)).evaluate(fixture_trace(stem))
    assert r.outcome == GateOutcome.FAIL and r.reason.startswith("2 spans with error status")


_SAME = "recovered by a later successful span of the same name and parent with the same input"
_OTHER = "recovered by a later successful span of the same name and parent with other input"


def llm_retry(same_input: bool, capture: bool = True) -> Trace:
    """A chat call that fails and is made again: with the same messages, or after one more user turn."""
    t = AgentTrace()
    t.llm(user="hi", error=True, capture=capture)
    t.history.pop()  # the failed call answered nothing: a retry sends the same conversation
    t.llm(user=None if same_input else "hello?", answer="hello", capture=capture)
    return t.build()


def tool_retry(first: Any, second: Any) -> Trace:
    t = AgentTrace()
    t.llm(user="hi", tool_calls=[("lookup", {})], finish="tool_calls")
    t.tool("lookup", first, error=True, status_message="503 upstream")
    t.tool("lookup", second, result="ok")
    t.llm(answer="done")
    return t.build()


@pytest.mark.parametrize(
    ("trace", "outcome", "reason"),
    [
        (lambda: llm_retry(True), GateOutcome.PASS, f"1 error span of 3 {_SAME}"),
        (lambda: llm_retry(False), GateOutcome.FAIL, f"1 span with error status: chat gpt-4o-mini (1 {_OTHER})"),
        (lambda: llm_retry(True, capture=False), GateOutcome.FAIL,
         f"1 span with error status: chat gpt-4o-mini (1 {_OTHER})"),
        (lambda: tool_retry({"id": 1, "q": "x"}, '{"q": "x", "id": 1}'), GateOutcome.PASS, f"1 error span of 5 {_SAME}"),
        (lambda: tool_retry({"id": 1}, {"id": 2}), GateOutcome.FAIL,
         f"1 span with error status: execute_tool lookup (1 {_OTHER})"),
        (lambda: tool_retry(None, None), GateOutcome.FAIL, f"1 span with error status: execute_tool lookup (1 {_OTHER})"),
    ],
    ids=["llm-same-messages", "llm-other-messages", "llm-messages-not-recorded", "tool-same-arguments",
         "tool-other-arguments", "tool-arguments-not-recorded"],
)
def test_identical_retry_drops_only_errors_retried_with_the_same_input(trace: Callable[[], Trace],
                                                                     outcome: GateOutcome, reason: str) -> None:  # fmt: skip
    t = trace()
    r = SpanErrorGate(SpanErrorSpec(ignore_recovered="identical_retry")).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    assert SpanErrorGate(SpanErrorSpec(ignore_recovered=True)).evaluate(t).outcome == GateOutcome.PASS  # any retry
    assert SpanErrorGate(SpanErrorSpec()).evaluate(t).outcome == GateOutcome.FAIL
