from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.loop import LoopGate, LoopSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, AgentTrace, fixture_trace


def calls(*args: tuple[str, Any]) -> Callable[[], Trace]:
    def build() -> Trace:
        t = AgentTrace()
        t.llm(user="find my order")
        for name, arguments in args:
            t.tool(name, arguments, result="{}")
        t.llm(answer="done")
        return t.build()

    return build


SAME_3 = calls(("search", {"q": "order 7", "page": 1}), ("search", '{"page":1,"q":"order 7"}'),
               ("search", '{ "q": "order 7", "page": 1 }'))  # fmt: skip
DIFFERENT = calls(("search", {"q": "a"}), ("search", {"q": "b"}), ("search", {"q": "c"}))
TWO_TOOLS = calls(("search", {"q": "a"}), ("lookup", {"q": "a"}), ("search", {"q": "a"}))
NOT_JSON = calls(("shell", "ls -la "), ("shell", "ls -la"), ("shell", "  ls -la"))


@pytest.mark.parametrize(
    ("trace", "spec", "outcome", "reason", "detail"),
    [
        (SAME_3, {}, GateOutcome.FAIL, "1 repeated call: search called 3 times with the same arguments (limit 3)",
         "search called 3 times"),
        (SAME_3, {"min_repeats": 4}, GateOutcome.PASS, "no tool call repeated 4 times with the same arguments", None),
        (SAME_3, {"ignore_tools": ["search"]}, GateOutcome.NOT_APPLICABLE, "no tool calls", None),
        (DIFFERENT, {}, GateOutcome.PASS, "no tool call repeated 3 times with the same arguments", None),
        (TWO_TOOLS, {"min_repeats": 2}, GateOutcome.FAIL,
         "1 repeated call: search called 2 times with the same arguments (limit 2)", "search called 2 times"),
        (NOT_JSON, {}, GateOutcome.FAIL, "1 repeated call: shell called 3 times with the same arguments (limit 3)",
         "shell called 3 times"),
        (calls(), {}, GateOutcome.NOT_APPLICABLE, "no tool calls", None),
        # arguments not recorded (content capture off): unknown, not the same
        (calls(("lookup", None), ("lookup", None), ("lookup", None)), {}, GateOutcome.NOT_APPLICABLE,
         "no tool call with recorded arguments (3 calls without recorded arguments not compared)", None),
        (calls(("lookup", None), ("search", {"q": "a"}), ("lookup", None), ("search", {"q": "a"}), ("lookup", None),
               ("search", {"q": "a"})), {}, GateOutcome.FAIL,
         "1 repeated call: search called 3 times with the same arguments (limit 3) (3 calls without recorded "
         "arguments not compared)", "search called 3 times"),
    ],
    ids=["same-args-canonicalized", "under-limit", "ignored", "different-args", "other-tool-between",
         "non-json-stripped", "no-tools", "no-arguments-recorded", "some-arguments-recorded"],
)
def test_loop(trace: Callable[[], Trace], spec: dict[str, Any], outcome: GateOutcome, reason: str,
              detail: str | None) -> None:  # fmt: skip
    t = trace()
    r = LoopGate(LoopSpec(**spec)).evaluate(t)
    assert (r.outcome, r.reason, r.severity) == (outcome, reason, "warning")
    if detail is None:
        assert r.evidence == []
    else:
        (e,) = r.evidence
        assert (e.detail or "").startswith(detail)
        tool_ids = [s.span_id for s in sorted(t.spans, key=lambda s: s.start_ns) if s.kind.value == "tool"]
        assert e.span_id in tool_ids


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_pass(stem: str) -> None:
    assert LoopGate(LoopSpec()).evaluate(fixture_trace(stem)).outcome == GateOutcome.PASS


def attempts(*outcomes: str) -> Trace:
    """The same search call made once per outcome: "timeout" (error status + exception event),
    "error" (the tool answered an error-looking result) or "ok"."""
    t = AgentTrace()
    t.llm(user="find my order", tool_calls=[("search", {"q": "order 7"})], finish="tool_calls")
    for o in outcomes:
        if o == "timeout":
            t.tool("search", {"q": "order 7"}, error=True, status_message="timeout", exception=("TimeoutError", "timeout"))
        else:
            t.tool("search", {"q": "order 7"}, result='{"error": "index busy"}' if o == "error" else '{"hits": 1}')
    t.llm(answer="found it")
    return t.build()


@pytest.mark.parametrize(
    ("outcomes", "outcome", "reason"),
    [
        (("timeout", "timeout", "ok"), GateOutcome.PASS,
         "no tool call repeated 3 times with the same arguments (2 calls with an error not counted)"),
        (("timeout", "ok", "ok", "ok"), GateOutcome.FAIL,
         "1 repeated call: search called 3 times with the same arguments (limit 3) (1 call with an error not counted)"),
        (("error", "error", "error"), GateOutcome.FAIL,
         "1 repeated call: search called 3 times with the same arguments (limit 3)"),  # answered: stuck, not a retry
        (("ok", "ok", "ok"), GateOutcome.FAIL, "1 repeated call: search called 3 times with the same arguments (limit 3)"),
    ],
    ids=["retried-timeouts", "repeats-after-a-retry", "same-error-result", "same-answer"],
)
def test_ignore_errors_does_not_count_retries_of_a_failing_call(outcomes: tuple[str, ...], outcome: GateOutcome,
                                                                reason: str) -> None:  # fmt: skip
    t = attempts(*outcomes)
    r = LoopGate(LoopSpec(ignore_errors=True)).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    assert LoopGate(LoopSpec()).evaluate(t).outcome == GateOutcome.FAIL  # off by default: every call counts
