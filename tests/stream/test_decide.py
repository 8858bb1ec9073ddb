"""The default policy end to end through TraceDecider: what makes a trace a suspected failure."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.model import Trace
from stream.decide import TraceDecider
from stream.policy import load_policy
from tests.stream.gates.conftest import AgentTrace


def transient_tool_error(retry_arguments: Any, timeouts: int = 1, result: str = '{"temperature_c": 18}') -> Trace:
    """A tool call that times out ``timeouts`` times (error status + exception event, as OTel
    instrumentations record it), then is made again and answers; the agent then answers the user."""
    t = AgentTrace()
    t.llm(user="what's the weather in Paris?", tool_calls=[("get_weather", {"city": "Paris"})], finish="tool_calls")
    for _ in range(timeouts):
        t.tool("get_weather", {"city": "Paris"}, error=True, status_message="read timeout",
               exception=("httpx.ReadTimeout", "read timeout"))  # fmt: skip
    t.tool("get_weather", retry_arguments, result=result)
    t.llm(answer="It is 18°C in Paris.")
    return t.build()


@pytest.fixture(scope="module")
def decider() -> TraceDecider:
    return TraceDecider(load_policy(None))


def test_default_policy_does_not_suspect_an_error_an_identical_retry_got_past(decider: TraceDecider) -> None:
    d = decider.decide(transient_tool_error({"city": "Paris"}))
    assert d.failed_gates == [] and d.decision.stratum == "success:base"
    reasons = {r.gate: r.reason for r in d.gate_results}
    assert "1 error span of 5 recovered by a later successful span" in reasons["span_errors"]
    assert "1 failed call recovered by a later successful call of the same tool with the same" in reasons["tool_errors"]
    assert "1 exception on 5 spans recovered" in reasons["exceptions"]


def test_default_policy_suspects_an_error_retried_with_other_arguments(decider: TraceDecider) -> None:
    d = decider.decide(transient_tool_error({"city": "Lyon"}))
    assert d.failed_gates == ["span_errors", "exceptions", "tool_errors"]
    assert d.decision.stratum == "suspected_failure" and d.decision.p == 1.0
    tool = next(r for r in d.gate_results if r.gate == "tool_errors")
    assert tool.reason.endswith("(1 recovered by a later successful call of the same tool with other arguments)")


def test_default_policy_does_not_take_retries_of_a_failing_call_for_a_loop(decider: TraceDecider) -> None:
    d = decider.decide(transient_tool_error({"city": "Paris"}, timeouts=2))  # 3 identical calls, 2 timed out
    assert d.failed_gates == [] and d.decision.stratum == "success:base"
    loop = next(r for r in d.gate_results if r.gate == "tool_loop")
    assert loop.reason.endswith("(2 calls with an error not counted)")


def test_default_policy_suspects_a_retry_that_never_got_past_the_error(decider: TraceDecider) -> None:
    d = decider.decide(transient_tool_error({"city": "Paris"}, timeouts=2, result='{"error": "upstream down"}'))
    assert d.failed_gates == ["tool_errors"] and d.decision.stratum == "suspected_failure"
