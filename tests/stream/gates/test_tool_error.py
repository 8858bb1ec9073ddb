from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.tool_error import ToolErrorGate, ToolErrorSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, fixture_trace, weather_trace


def result(text: str) -> Callable[[], Trace]:
    return lambda: weather_trace(result=text)


def span_error() -> Trace:
    return weather_trace(result=None, error=True, status_message="upstream 503")


def error_type_only() -> Trace:
    return weather_trace(result=None, error_type="TimeoutError")


def no_tools() -> Trace:
    t = AgentTrace()
    t.llm(user="hi", answer="hello")
    return t.build()


def messages_only(result_text: str) -> Callable[[], Trace]:
    """No tool spans: the call and its result are only in the chat messages."""

    def build() -> Trace:
        t = AgentTrace()
        t.llm(user="weather?", tool_calls=[("get_weather", {"city": "Paris"})], finish="tool_calls")
        t.history.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_0",
                                                     "response": result_text}]})  # fmt: skip
        t.llm(answer="done")
        return t.build()

    return build


@pytest.mark.parametrize(
    ("trace", "spec", "outcome", "reason", "evidence"),
    [
        (weather_trace, {}, GateOutcome.PASS, "1 tool call without error", []),
        (result('{"error": null, "temperature_c": 18}'), {}, GateOutcome.PASS, "1 tool call without error", []),
        (result('{"error": "city not found"}'), {}, GateOutcome.FAIL, "1 failed tool call of 1: get_weather",
         [('{"error": "city not found"}', "result matches")]),
        (result("Traceback (most recent call last):\n  File x\nKeyError: 'city'"), {}, GateOutcome.FAIL,
         "1 failed tool call of 1: get_weather", [("Traceback (most recent call last):", "result matches")]),
        (result("Error: quota exceeded"), {}, GateOutcome.FAIL, "1 failed tool call of 1: get_weather",
         [("Error: quota exceeded", "result matches")]),
        (result("No error here"), {}, GateOutcome.PASS, "1 tool call without error", []),
        (result("NOT FOUND"), {"result_patterns": ["NOT FOUND"]}, GateOutcome.FAIL,
         "1 failed tool call of 1: get_weather", [("NOT FOUND", "result matches 'NOT FOUND'")]),
        (span_error, {}, GateOutcome.FAIL, "1 failed tool call of 1: get_weather", [("upstream 503", "span error")]),
        (error_type_only, {}, GateOutcome.FAIL, "1 failed tool call of 1: get_weather", [("TimeoutError", "span error")]),
        (span_error, {"ignore_tools": ["get_weather"]}, GateOutcome.NOT_APPLICABLE, "no tool calls", []),
        (no_tools, {}, GateOutcome.NOT_APPLICABLE, "no tool calls", []),
        (messages_only('{"error": "boom"}'), {}, GateOutcome.FAIL, "1 failed tool call of 1: get_weather",
         [('{"error": "boom"}', "result matches")]),
        (messages_only('{"temperature_c": 18}'), {}, GateOutcome.PASS, "1 tool call without error", []),
    ],
    ids=["clean", "json-error-null", "json-error", "traceback", "error-prefix", "error-inside-text", "custom-pattern",
         "span-status", "error-type", "ignored-tool", "no-tools", "messages-only-error", "messages-only-ok"],
)
def test_tool_error(trace: Callable[[], Trace], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                    evidence: list[tuple[str, str]]) -> None:  # fmt: skip
    r = ToolErrorGate(ToolErrorSpec(**spec)).evaluate(trace())
    assert (r.outcome, r.reason) == (outcome, reason)
    assert len(r.evidence) == len(evidence)
    for e, (text, detail) in zip(r.evidence, evidence, strict=True):
        assert (e.text or "").startswith(text)
        assert detail in (e.detail or "") and "get_weather" in (e.detail or "")


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_pass(stem: str) -> None:
    r = ToolErrorGate(ToolErrorSpec()).evaluate(fixture_trace(stem))
    assert (r.outcome, r.reason) == (GateOutcome.PASS, "1 tool call without error")


@pytest.mark.parametrize("stem", ERROR_FIXTURES)
def test_error_fixtures_have_no_tool_call(stem: str) -> None:
    assert ToolErrorGate(ToolErrorSpec()).evaluate(fixture_trace(stem)).outcome == GateOutcome.NOT_APPLICABLE


def calls(*results: tuple[str, str | None]) -> Trace:
    """Tool spans in order: (name, result); a None result is a span with error status."""
    t = AgentTrace()
    t.llm(user="weather?", tool_calls=[(name, {}) for name, _ in results], finish="tool_calls")
    for name, res in results:
        t.tool(name, {"city": "Paris"}, result=res, error=res is None, status_message="timeout" if res is None else None)
    t.llm(answer="18°C")
    return t.build()


OK, ERR = '{"temperature_c": 18}', '{"error": "rate limited"}'


@pytest.mark.parametrize(
    ("results", "outcome", "reason", "kept"),
    [
        ((("w", None), ("w", OK)), GateOutcome.PASS,
         "2 tool calls: 1 failed call recovered by a later successful call of the same tool", 0),
        ((("w", ERR), ("w", None), ("w", OK)), GateOutcome.PASS,
         "3 tool calls: 2 failed calls recovered by a later successful call of the same tool", 0),
        ((("w", ERR), ("w", None)), GateOutcome.FAIL, "2 failed tool calls of 2: w", 2),
        ((("w", OK), ("w", ERR)), GateOutcome.FAIL, "1 failed tool call of 2: w", 1),
        ((("w", None), ("geo", OK)), GateOutcome.FAIL, "1 failed tool call of 2: w", 1),
        ((("w", None), ("w", OK), ("geo", ERR), ("w", ERR)), GateOutcome.FAIL,
         "2 failed tool calls of 4: geo, w (1 more recovered by a later successful call of the same tool, ignored)", 2),
    ],
    ids=["retry-ok", "two-retries-ok", "retries-failed", "error-after-success", "other-tool-ok", "mixed"],
)
def test_ignore_recovered_drops_failed_calls_a_later_call_made_good(
    results: tuple[tuple[str, str | None], ...], outcome: GateOutcome, reason: str, kept: int
) -> None:
    t = calls(*results)
    r = ToolErrorGate(ToolErrorSpec(ignore_recovered=True)).evaluate(t)
    assert (r.outcome, r.reason, len(r.evidence)) == (outcome, reason, kept)
    failed = [i for i, (_, res) in enumerate(results) if res != OK]
    default = ToolErrorGate(ToolErrorSpec()).evaluate(t)
    assert default.outcome == GateOutcome.FAIL and len(default.evidence) == len(failed)  # off by default
    recovered = len(failed) - kept  # what the option drops, named in the default's reason
    suffix = f" ({recovered} recovered by a later successful call of the same tool)"
    assert default.reason.endswith(suffix) == (recovered > 0), default.reason


def test_ignore_recovered_reads_calls_seen_only_in_messages() -> None:
    t = AgentTrace()
    t.llm(user="weather?", tool_calls=[("get_weather", {"city": "Paris"})] * 2, finish="tool_calls")  # call_0, call_1
    for call_id, response in (("call_0", ERR), ("call_1", OK)):
        t.history.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id,
                                                     "response": response}]})  # fmt: skip
    t.llm(answer="18°C")
    trace = t.build()
    assert ToolErrorGate(ToolErrorSpec()).evaluate(trace).outcome == GateOutcome.FAIL
    r = ToolErrorGate(ToolErrorSpec(ignore_recovered=True)).evaluate(trace)
    assert (r.outcome, r.reason) == (
        GateOutcome.PASS, "2 tool calls: 1 failed call recovered by a later successful call of the same tool")


def calls_with(*results: tuple[str, Any, str | None]) -> Trace:
    """Tool spans in order: (name, arguments, result); a None result is a span with error status.
    Arguments: a dict, a JSON text as given, or None (not recorded)."""
    t = AgentTrace()
    t.llm(user="weather?", tool_calls=[(name, args or {}) for name, args, _ in results], finish="tool_calls")
    for name, args, res in results:
        t.tool(name, args, result=res, error=res is None, status_message="timeout" if res is None else None)
    t.llm(answer="18°C")
    return t.build()


_SAME, _OTHER = "same arguments", "other arguments"


@pytest.mark.parametrize(
    ("results", "outcome", "reason"),
    [
        ((("w", {"city": "Paris", "unit": "C"}, None), ("w", '{"unit": "C", "city": "Paris"}', OK)), GateOutcome.PASS,
         f"2 tool calls: 1 failed call recovered by a later successful call of the same tool with the {_SAME}"),
        ((("w", {"city": "Paris"}, ERR), ("w", {"city": "Paris"}, None), ("w", {"city": "Paris"}, OK)),
         GateOutcome.PASS,
         f"3 tool calls: 2 failed calls recovered by a later successful call of the same tool with the {_SAME}"),
        ((("w", {"city": "Paris"}, None), ("w", {"city": "Lyon"}, OK)), GateOutcome.FAIL,
         f"1 failed tool call of 2: w (1 recovered by a later successful call of the same tool with {_OTHER})"),
        ((("w", None, None), ("w", None, OK)), GateOutcome.FAIL,
         f"1 failed tool call of 2: w (1 recovered by a later successful call of the same tool with {_OTHER})"),
        ((("w", {"city": "Paris"}, None), ("w", {"city": "Paris"}, OK), ("w", {"city": "Rome"}, None),
          ("w", {"city": "Lyon"}, OK)), GateOutcome.FAIL,
         f"1 failed tool call of 4: w (1 more recovered by a later successful call of the same tool with the {_SAME},"
         f" ignored; 1 recovered by a later successful call of the same tool with {_OTHER})"),
        ((("w", {"city": "Paris"}, OK), ("w", {"city": "Paris"}, None)), GateOutcome.FAIL, "1 failed tool call of 2: w"),
        ((("w", {"city": "Paris"}, None), ("geo", {"city": "Paris"}, OK)), GateOutcome.FAIL,
         "1 failed tool call of 2: w"),
    ],
    ids=["retry-keys-reordered", "two-retries", "other-arguments", "arguments-not-recorded", "mixed",
         "error-after-success", "other-tool"],
)
def test_identical_retry_drops_only_failed_calls_retried_with_the_same_arguments(
    results: tuple[tuple[str, Any, str | None], ...], outcome: GateOutcome, reason: str
) -> None:
    t = calls_with(*results)
    r = ToolErrorGate(ToolErrorSpec(ignore_recovered="identical_retry")).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    failed = [i for i, (_, _, res) in enumerate(results) if res != OK]
    wider = ToolErrorGate(ToolErrorSpec(ignore_recovered=True)).evaluate(t)  # never flags more than identical_retry
    assert len(wider.evidence) <= len(r.evidence) <= len(failed)
    assert len(ToolErrorGate(ToolErrorSpec()).evaluate(t).evidence) == len(failed)


def test_ignore_recovered_setting_is_validated_at_policy_load() -> None:
    assert ToolErrorSpec.model_validate({"ignore_recovered": "identical_retry"}).ignore_recovered == "identical_retry"
    assert ToolErrorSpec.model_validate({"ignore_recovered": True}).ignore_recovered is True
    with pytest.raises(ValidationError, match="identical_retry"):
        ToolErrorSpec.model_validate({"ignore_recovered": "sometimes"})
