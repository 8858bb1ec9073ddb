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
    ],
    ids=["same-args-canonicalized", "under-limit", "ignored", "different-args", "other-tool-between",
         "non-json-stripped", "no-tools"],
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
