"""Normalization of payloads captured from real instrumentation libraries.

The fixtures in ``tests/fixtures/otlp`` were produced by ``tests/fixtures/capture/capture_payloads.py``
(see the README there): a weather agent asks for the weather, runs ``get_weather`` and answers;
the ``_error`` runs hit an HTTP 500 from the fake OpenAI server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.decode import decode_message
from schemas.model import Span, SpanKind, StatusCode

OTLP = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
SYSTEM = "You are a weather assistant. Use the get_weather tool for current conditions."
QUESTION = "What's the weather in Paris right now?"
ANSWER = "It is 18°C and partly cloudy in Paris right now."
TOOL_RESULT = '{"city": "Paris", "temperature_c": 18, "conditions": "partly cloudy"}'
FIXTURES = sorted(p.stem for p in OTLP.glob("*.pb"))


def load(stem: str, suffix: str = ".pb") -> list[Span]:
    spans = decode_message((OTLP / f"{stem}{suffix}").read_bytes())
    return sorted(spans, key=lambda s: s.start_ns)


def by_kind(spans: list[Span], kind: SpanKind) -> list[Span]:
    return [s for s in spans if s.kind == kind]


def test_all_fixtures_present() -> None:
    assert FIXTURES == [
        "openai_v2_agent",
        "openai_v2_error",
        "openai_v2_no_optin_agent",
        "openinference_agent",
        "openinference_error",
        "traceloop_agent",
        "traceloop_error",
    ]


@pytest.mark.parametrize("stem", FIXTURES)
def test_json_and_protobuf_normalize_alike(stem: str) -> None:
    fields = ("span_id", "kind", "provider", "request_model", "usage", "input_messages", "output_messages", "finish_reasons", "tool_name")
    as_pb = [s.model_dump(include=set(fields)) for s in load(stem, ".pb")]
    as_json = [s.model_dump(include=set(fields)) for s in load(stem, ".json")]
    assert as_pb == as_json


# (fixture, convention of the LLM spans, operation, provider, scope, finish reason of the tool-call turn)
AGENT_CASES = [
    pytest.param("openai_v2_agent", "genai", "openai", "opentelemetry.util.genai.handler", "tool_calls", id="openai_v2"),
    pytest.param("openinference_agent", "openinference", "openai", "openinference.instrumentation.openai", "tool_calls", id="openinference"),
    pytest.param("traceloop_agent", "genai", "openai", "opentelemetry.instrumentation.openai.v1", "tool_call", id="traceloop"),
]


@pytest.mark.parametrize(("stem", "convention", "provider", "scope", "tool_finish"), AGENT_CASES)
def test_agent_run_llm_spans(stem: str, convention: str, provider: str, scope: str, tool_finish: str) -> None:
    first, second = by_kind(load(stem), SpanKind.LLM)
    for span in (first, second):
        assert (span.convention, span.operation, span.provider, span.scope_name) == (convention, "chat", provider, scope)
        assert span.request_model == "gpt-4o-mini"
        assert span.response_model == "gpt-4o-mini-2024-07-18"
        assert span.system_instructions == SYSTEM
        assert [(m.role, m.content) for m in span.input_messages[:2]] == [("system", SYSTEM), ("user", QUESTION)]
        assert span.status_code != StatusCode.ERROR and not span.is_error
    assert (first.usage.input, first.usage.output, first.usage.total) == (82, 17, 99)
    assert (second.usage.input, second.usage.output, second.usage.total) == (118, 14, 132)

    assert first.finish_reasons == (tool_finish,)
    [call] = first.tool_calls
    assert (call.id, call.name, call.arguments) == ("call_w1", "get_weather", '{"city": "Paris"}')
    assert first.output_messages[0].role == "assistant" and first.output_messages[0].content == ""

    assert second.finish_reasons == ("stop",)
    assert [(m.role, m.content) for m in second.output_messages] == [("assistant", ANSWER)]
    assistant, tool = second.input_messages[2:]
    assert [c.name for c in assistant.tool_calls] == ["get_weather"]
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_w1", TOOL_RESULT)


@pytest.mark.parametrize("stem", ["openai_v2_agent", "openinference_agent"])
def test_hand_made_agent_and_tool_spans(stem: str) -> None:
    spans = load(stem)
    [agent] = by_kind(spans, SpanKind.AGENT)
    [tool] = by_kind(spans, SpanKind.TOOL)
    assert agent.is_root and agent.name == "invoke_agent weather_agent"
    assert (agent.operation, agent.agent_name, agent.agent_id, agent.conversation_id) == (
        "invoke_agent",
        "weather_agent",
        "agent-weather-1",
        "conv-7f3a",
    )
    assert (tool.tool_name, tool.tool_call_id, tool.tool_arguments, tool.tool_result) == (
        "get_weather",
        "call_w1",
        '{"city": "Paris"}',
        TOOL_RESULT,
    )
    assert tool.parent_span_id == agent.span_id
    assert all(s.service_name == f"weather-agent-{stem.split('_agent')[0]}" for s in spans)


def test_traceloop_decorator_spans() -> None:
    spans = load("traceloop_agent")
    [agent] = by_kind(spans, SpanKind.AGENT)
    [tool] = by_kind(spans, SpanKind.TOOL)
    assert (agent.name, agent.operation, agent.agent_name) == ("weather_agent.agent", "invoke_agent", "weather_agent")
    assert (tool.name, tool.operation, tool.tool_name) == ("get_weather.tool", "execute_tool", "get_weather")
    # traceloop records {"args": [], "kwargs": {...}} and a JSON-quoted return value; both unwrapped
    assert tool.tool_arguments == '{"city": "Paris"}'
    assert tool.tool_result == TOOL_RESULT
    assert {(s.conversation_id, s.user_id) for s in spans} == {("conv-7f3a", "user-42")}
    assert all(s.service_name == "weather-agent-traceloop" for s in spans)


def test_openai_v2_without_opt_in_has_no_content() -> None:
    llm = by_kind(load("openai_v2_no_optin_agent"), SpanKind.LLM)
    assert [s.finish_reasons for s in llm] == [("tool_calls",), ("stop",)]
    assert [s.usage.total for s in llm] == [99, 132]
    assert all(s.convention == "genai" and not s.input_messages and not s.output_messages for s in llm)


# (fixture, error.type on the LLM span, exception event on the LLM span)
ERROR_CASES = [
    pytest.param("openai_v2_error", "openai.InternalServerError", False, id="openai_v2"),
    pytest.param("openinference_error", "openai.InternalServerError", True, id="openinference"),
    pytest.param("traceloop_error", "InternalServerError", True, id="traceloop"),
]


@pytest.mark.parametrize(("stem", "llm_error_type", "llm_has_exception"), ERROR_CASES)
def test_error_run(stem: str, llm_error_type: str, llm_has_exception: bool) -> None:
    spans = load(stem)
    [agent] = by_kind(spans, SpanKind.AGENT)
    [llm] = by_kind(spans, SpanKind.LLM)
    for span in (agent, llm):
        assert span.status_code == StatusCode.ERROR and span.is_error
    assert agent.error_type == "openai.InternalServerError"
    assert agent.exceptions[0].type == "openai.InternalServerError"
    assert "Error code: 500" in (agent.exceptions[0].message or "")
    assert llm.error_type == llm_error_type
    assert bool(llm.exceptions) is llm_has_exception
    assert llm.request_model == "gpt-4o-mini-broken"
    assert [m.role for m in llm.input_messages] == ["system", "user"]
    assert llm.output_messages == [] and llm.usage.total == 0
