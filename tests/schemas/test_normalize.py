"""Table-driven tests of :func:`schemas.normalize.normalize_span` per convention and odd input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.model import Span, SpanEvent, SpanKind, StatusCode
from schemas.normalize import normalize_span


def span(attrs: dict[str, Any] | None = None, name: str = "", events: list[SpanEvent] | None = None, **raw: Any) -> Span:
    return normalize_span(
        Span(trace_id="ab" * 16, span_id="cd" * 8, name=name, attributes=attrs or {}, events=events or [], **raw)
    )


def ev(name: str, **attributes: Any) -> SpanEvent:
    return SpanEvent(name=name, time_ns=5, attributes=attributes)


def roles_contents(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


# ---- kind / operation / convention ---------------------------------------------------------------

KIND_CASES = [
    ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}, "", SpanKind.LLM, "chat", "genai"),
    ({"gen_ai.operation.name": "embeddings"}, "", SpanKind.LLM, "embeddings", "genai"),
    ({"gen_ai.operation.name": "generate_content", "gen_ai.system": "gcp.gemini"}, "", SpanKind.LLM, "generate_content", "genai_deprecated"),
    ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}, "", SpanKind.TOOL, "execute_tool", "genai"),
    ({"gen_ai.operation.name": "invoke_agent"}, "", SpanKind.AGENT, "invoke_agent", "genai"),
    ({"gen_ai.operation.name": "create_agent"}, "", SpanKind.AGENT, "create_agent", "genai"),
    ({"gen_ai.operation.name": "invoke_workflow"}, "", SpanKind.AGENT, "invoke_workflow", "genai"),
    ({"gen_ai.operation.name": "retrieval"}, "", SpanKind.RETRIEVAL, "retrieval", "genai"),
    ({"openinference.span.kind": "LLM"}, "ChatCompletion", SpanKind.LLM, "chat", "openinference"),
    ({"openinference.span.kind": "EMBEDDING"}, "", SpanKind.LLM, "embeddings", "openinference"),
    ({"openinference.span.kind": "TOOL"}, "", SpanKind.TOOL, "execute_tool", "openinference"),
    ({"openinference.span.kind": "AGENT"}, "", SpanKind.AGENT, "invoke_agent", "openinference"),
    ({"openinference.span.kind": "CHAIN"}, "", SpanKind.OTHER, None, "openinference"),
    ({"openinference.span.kind": "retriever"}, "", SpanKind.RETRIEVAL, "retrieval", "openinference"),
    ({"openinference.span.kind": "RERANKER"}, "", SpanKind.RETRIEVAL, "rerank", "openinference"),
    ({"traceloop.span.kind": "workflow"}, "w.workflow", SpanKind.AGENT, "invoke_workflow", "genai_deprecated"),
    ({"traceloop.span.kind": "task"}, "t.task", SpanKind.OTHER, None, "genai_deprecated"),
    ({"traceloop.span.kind": "tool", "traceloop.entity.name": "x"}, "", SpanKind.TOOL, "execute_tool", "genai_deprecated"),
    ({"llm.request.type": "chat", "gen_ai.system": "openai"}, "openai.chat", SpanKind.LLM, "chat", "genai_deprecated"),
    ({}, "chat gpt-4o", SpanKind.LLM, "chat", "none"),
    ({}, "execute_tool search", SpanKind.TOOL, "execute_tool", "none"),
    ({}, "invoke_agent planner", SpanKind.AGENT, "invoke_agent", "none"),
    ({"gen_ai.system": "anthropic"}, "anthropic.messages", SpanKind.LLM, None, "genai_deprecated"),
    ({"http.method": "GET"}, "GET /", SpanKind.OTHER, None, "none"),
    ({"gen_ai.operation.name": 42}, "", SpanKind.OTHER, "42", "genai"),
]


@pytest.mark.parametrize(
    ("attrs", "name", "kind", "operation", "convention"),
    KIND_CASES,
    ids=[f"{i}-{c[4]}-{c[2].value}" for i, c in enumerate(KIND_CASES)],
)
def test_kind_operation_convention(attrs: dict[str, Any], name: str, kind: SpanKind, operation: str | None, convention: str) -> None:
    s = span(attrs, name=name)
    assert (s.kind, s.operation, s.convention) == (kind, operation, convention)


def test_deprecated_message_events_mark_convention() -> None:
    s = span(name="x", events=[ev("gen_ai.user.message", content="hi")])
    assert s.convention == "genai_deprecated"


# ---- provider / model / identity -----------------------------------------------------------------

IDENTITY_CASES = [
    pytest.param({"gen_ai.provider.name": "openai", "gen_ai.system": "az"}, ("openai", None, None), id="provider-wins"),
    pytest.param({"gen_ai.system": "anthropic", "gen_ai.request.model": "claude"}, ("anthropic", "claude", None), id="deprecated-system"),
    pytest.param({"llm.provider": "azure", "llm.system": "openai", "llm.model_name": "gpt-4o-2024"}, ("azure", "gpt-4o-2024", "gpt-4o-2024"), id="oi-provider"),
    pytest.param({"llm.system": "openai", "llm.model_name": "m-2024", "llm.invocation_parameters": '{"model": "m"}'}, ("openai", "m", "m-2024"), id="oi-invocation-model"),
    pytest.param({"llm.invocation_parameters": '{"model": "m"'}, (None, None, None), id="oi-bad-json"),
    pytest.param({"gen_ai.request.model": ["x"], "gen_ai.response.model": b"y"}, (None, None, None), id="wrong-types"),
]


@pytest.mark.parametrize(("attrs", "expected"), IDENTITY_CASES)
def test_provider_and_models(attrs: dict[str, Any], expected: tuple[Any, Any, Any]) -> None:
    s = span(attrs)
    assert (s.provider, s.request_model, s.response_model) == expected


CONTEXT_CASES = [
    pytest.param({"gen_ai.conversation.id": "c1", "user.id": "u1"}, ("c1", "u1"), id="genai"),
    pytest.param({"session.id": "s1", "user.id": "u2"}, ("s1", "u2"), id="openinference"),
    pytest.param({"traceloop.association.properties.session_id": "s2", "traceloop.association.properties.user_id": "u3"}, ("s2", "u3"), id="traceloop"),
    pytest.param({"gen_ai.conversation.id": 123, "enduser.id": "e1"}, ("123", "e1"), id="int-id-enduser"),
    pytest.param({"gen_ai.conversation.id": {"x": 1}, "gen_ai.user.id": "g1"}, (None, "g1"), id="dict-ignored"),
]


@pytest.mark.parametrize(("attrs", "expected"), CONTEXT_CASES)
def test_conversation_and_user(attrs: dict[str, Any], expected: tuple[Any, Any]) -> None:
    s = span(attrs)
    assert (s.conversation_id, s.user_id) == expected


def test_agent_and_service_fields() -> None:
    s = span(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "a1", "gen_ai.agent.version": "2.1"},
        name="invoke_agent planner",
        resource_attributes={"service.name": "svc"},
    )
    assert (s.agent_name, s.agent_id, s.agent_version, s.service_name) == ("planner", "a1", "2.1", "svc")
    assert span({"agent.name": "oi-agent", "openinference.span.kind": "AGENT"}).agent_name == "oi-agent"
    tl = span({"traceloop.span.kind": "agent", "traceloop.entity.name": "researcher"})
    assert tl.agent_name == "researcher"


# ---- usage ----------------------------------------------------------------------------------------

USAGE_CASES = [
    pytest.param({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}, (10, 5, 15, 0, 0, 0), id="current"),
    pytest.param({"gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3}, (7, 3, 10, 0, 0, 0), id="deprecated"),
    pytest.param({"gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": "4.0", "gen_ai.usage.total_tokens": 20}, (12, 4, 20, 0, 0, 0), id="numeric-strings-traceloop-total"),
    pytest.param(
        {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 60,
         "gen_ai.usage.cache_creation.input_tokens": 30, "gen_ai.usage.reasoning.output_tokens": 20},
        (100, 50, 150, 60, 30, 20),
        id="cache-reasoning",
    ),
    pytest.param({"gen_ai.usage.cache_read_input_tokens": 8, "gen_ai.usage.reasoning_tokens": 2}, (0, 0, 0, 8, 0, 2), id="traceloop-variants"),
    pytest.param(
        {"llm.token_count.prompt": 80, "llm.token_count.completion": 15, "llm.token_count.total": 95,
         "llm.token_count.prompt_details.cache_read": 40, "llm.token_count.prompt_details.cache_write": 20,
         "llm.token_count.completion_details.reasoning": 5},
        (80, 15, 95, 40, 20, 5),
        id="openinference",
    ),
    pytest.param({"gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": True}, (0, 0, 0, 0, 0, 0), id="garbage"),
    pytest.param({"gen_ai.usage.input_tokens": -3, "gen_ai.usage.prompt_tokens": 9}, (9, 0, 9, 0, 0, 0), id="negative-skipped"),
]


@pytest.mark.parametrize(("attrs", "expected"), USAGE_CASES)
def test_usage(attrs: dict[str, Any], expected: tuple[int, ...]) -> None:
    u = span(attrs).usage
    assert (u.input, u.output, u.total, u.cache_read, u.cache_creation, u.reasoning) == expected


# ---- messages -------------------------------------------------------------------------------------

CURRENT_INPUT = [
    {"role": "user", "parts": [{"type": "text", "content": "Weather?"}, {"type": "text", "content": "In Paris."}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": {"temp": 18}}]},
]
CURRENT_OUTPUT = [{"role": "assistant", "parts": [{"type": "text", "content": "18C"}], "finish_reason": "stop"}]


@pytest.mark.parametrize("decoded", [False, True], ids=["json-string", "decoded-list"])
def test_current_messages(decoded: bool) -> None:
    enc = (lambda v: v) if decoded else json.dumps
    s = span({"gen_ai.input.messages": enc(CURRENT_INPUT), "gen_ai.output.messages": enc(CURRENT_OUTPUT),
              "gen_ai.system_instructions": enc([{"type": "text", "content": "Be brief."}])})
    user, assistant, tool = s.input_messages
    assert (user.role, user.content) == ("user", "Weather?\nIn Paris.")
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [("c1", "get_weather", '{"city": "Paris"}')]
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "c1", '{"temp": 18}')
    assert roles_contents(s.output_messages) == [("assistant", "18C")]
    assert s.finish_reasons == ("stop",)
    assert s.system_instructions == "Be brief."


DEPRECATED_JSON = [
    pytest.param(
        {"gen_ai.prompt": json.dumps([{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
         "gen_ai.completion": json.dumps([{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
             {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}])},
        [("system", "sys"), ("user", "hi")], [("assistant", "")], [("t1", "f", '{"a":1}')], ["tool_calls"],
        id="json-openai-shape",
    ),
    pytest.param(
        {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hello",
         "gen_ai.prompt.1.role": "assistant", "gen_ai.prompt.1.tool_calls.0.id": "x", "gen_ai.prompt.1.tool_calls.0.name": "g",
         "gen_ai.prompt.1.tool_calls.0.arguments": "{}",
         "gen_ai.prompt.2.role": "tool", "gen_ai.prompt.2.tool_call_id": "x", "gen_ai.prompt.2.content": "done",
         "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_call",
         "gen_ai.completion.0.tool_calls.0.name": "search", "gen_ai.completion.0.tool_calls.0.arguments": '{"q": "x"}',
         "gen_ai.completion.0.tool_calls.0.id": "call_9"},
        [("user", "hello"), ("assistant", ""), ("tool", "done")], [("assistant", "")], [("call_9", "search", '{"q": "x"}')], ["tool_call"],
        id="traceloop-flattened",
    ),
    pytest.param(
        {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps([{"type": "text", "text": "look"}, {"type": "image_url"}]),
         "gen_ai.prompt.10.role": "user", "gen_ai.prompt.10.content": "later", "gen_ai.prompt.2.content": "[not json",
         "gen_ai.completion.0.content": "ok"},
        [("user", "look"), ("user", "[not json"), ("user", "later")], [("assistant", "ok")], [], [],
        id="flattened-index-order-multimodal",
    ),
]


@pytest.mark.parametrize(("attrs", "inputs", "outputs", "calls", "reasons"), DEPRECATED_JSON)
def test_deprecated_attribute_messages(attrs: dict[str, Any], inputs: list[Any], outputs: list[Any], calls: list[Any], reasons: list[str]) -> None:
    s = span(attrs)
    assert roles_contents(s.input_messages) == inputs
    assert roles_contents(s.output_messages) == outputs
    assert [(c.id, c.name, c.arguments) for c in s.tool_calls] == calls
    assert s.finish_reasons == tuple(reasons)


def test_traceloop_flattened_tool_message_keeps_call_id() -> None:
    s = span({"gen_ai.prompt.0.role": "tool", "gen_ai.prompt.0.tool_call_id": "x", "gen_ai.prompt.0.content": "r"})
    assert [(m.role, m.tool_call_id, m.content) for m in s.input_messages] == [("tool", "x", "r")]


def test_deprecated_message_events() -> None:
    events = [
        ev("gen_ai.system.message", content="sys"),
        ev("gen_ai.user.message", content="weather?"),
        ev("gen_ai.assistant.message", tool_calls=json.dumps([{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}])),
        ev("gen_ai.tool.message", content="sunny", id="c"),
        ev("gen_ai.choice", index=1, finish_reason="length", message=json.dumps({"content": "second"})),
        ev("gen_ai.choice", index=0, finish_reason="stop", body=json.dumps({"message": {"role": "assistant", "content": "first"}})),
        ev("exception", **{"exception.type": "ValueError"}),
    ]
    s = span({"gen_ai.system": "openai"}, events=events)
    assert roles_contents(s.input_messages) == [("system", "sys"), ("user", "weather?"), ("assistant", ""), ("tool", "sunny")]
    assert [c.name for c in s.input_messages[2].tool_calls] == ["w"]
    assert s.input_messages[3].tool_call_id == "c"
    assert roles_contents(s.output_messages) == [("assistant", "first"), ("assistant", "second")]
    assert s.finish_reasons == ("stop", "length")
    assert s.system_instructions == "sys"


def test_old_content_events() -> None:
    events = [ev("gen_ai.content.prompt", **{"gen_ai.prompt": '[{"role": "user", "content": "q"}]'}),
              ev("gen_ai.content.completion", **{"gen_ai.completion": '[{"role": "assistant", "content": "a"}]'})]
    s = span(events=events)
    assert (roles_contents(s.input_messages), roles_contents(s.output_messages)) == ([("user", "q")], [("assistant", "a")])


def test_openinference_messages() -> None:
    p, o = "llm.input_messages.", "llm.output_messages."
    s = span({
        "openinference.span.kind": "LLM",
        p + "0.message.role": "system", p + "0.message.content": "sys",
        p + "1.message.role": "user", p + "1.message.contents.0.message_content.type": "text",
        p + "1.message.contents.0.message_content.text": "a", p + "1.message.contents.1.message_content.type": "image",
        p + "1.message.contents.2.message_content.text": "b",
        p + "2.message.role": "tool", p + "2.message.tool_call_id": "c1", p + "2.message.content": "res",
        o + "0.message.role": "assistant", o + "0.message.tool_calls.0.tool_call.id": "c2",
        o + "0.message.tool_calls.0.tool_call.function.name": "f", o + "0.message.tool_calls.0.tool_call.function.arguments": "{}",
        "llm.finish_reason": "tool_calls",
    })
    assert roles_contents(s.input_messages) == [("system", "sys"), ("user", "a\nb"), ("tool", "res")]
    assert s.input_messages[2].tool_call_id == "c1"
    assert [(c.id, c.name, c.arguments) for c in s.tool_calls] == [("c2", "f", "{}")]
    assert s.finish_reasons == ("tool_calls",) and s.system_instructions == "sys"


def test_openinference_finish_reason_from_output_value() -> None:
    s = span({"openinference.span.kind": "LLM", "output.value": json.dumps({"choices": [{"finish_reason": "length"}]})})
    assert s.finish_reasons == ("length",)


FINISH_CASES = [
    pytest.param(["stop", "length"], ["stop", "length"], id="list"),
    pytest.param('["tool_calls"]', ["tool_calls"], id="json-string"),
    pytest.param("stop", ["stop"], id="single-string"),
    pytest.param(7, [], id="wrong-type"),
]


@pytest.mark.parametrize(("value", "expected"), FINISH_CASES)
def test_finish_reasons(value: Any, expected: list[str]) -> None:
    assert span({"gen_ai.response.finish_reasons": value}).finish_reasons == tuple(expected)


# ---- tools ----------------------------------------------------------------------------------------

TOOL_CASES = [
    pytest.param({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "w", "gen_ai.tool.call.id": "c",
                  "gen_ai.tool.call.arguments": {"city": "P"}, "gen_ai.tool.call.result": ["r"]},
                 ("w", "c", '{"city": "P"}', '["r"]'), id="genai-non-string"),
    pytest.param({"openinference.span.kind": "TOOL", "tool.name": "s", "input.value": '{"q": 1}', "output.value": "hit"},
                 ("s", None, '{"q": 1}', "hit"), id="openinference"),
    pytest.param({"openinference.span.kind": "TOOL", "tool.name": "s", "tool.parameters": '{"type": "object"}'},
                 ("s", None, '{"type": "object"}', None), id="openinference-parameters"),
    pytest.param({"traceloop.span.kind": "tool", "traceloop.entity.name": "t",
                  "traceloop.entity.input": '{"args": [], "kwargs": {"x": 1}}', "traceloop.entity.output": '"ok"'},
                 ("t", None, '{"x": 1}', "ok"), id="traceloop-unwrapped"),
    pytest.param({"traceloop.span.kind": "tool", "traceloop.entity.name": "t", "traceloop.entity.input": '{"args": [1], "kwargs": {}}',
                  "traceloop.entity.output": '{"a": 1}'}, ("t", None, '{"args": [1], "kwargs": {}}', '{"a": 1}'), id="traceloop-positional"),
    pytest.param({"gen_ai.operation.name": "execute_tool"}, ("from_name", None, None, None), id="name-fallback"),
]


@pytest.mark.parametrize(("attrs", "expected"), TOOL_CASES)
def test_tool_fields(attrs: dict[str, Any], expected: tuple[Any, ...]) -> None:
    s = span(attrs, name="execute_tool from_name")
    assert (s.tool_name, s.tool_call_id, s.tool_arguments, s.tool_result) == expected


# ---- errors ---------------------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param({"error.type": "timeout"}, StatusCode.ERROR, "timeout", id="error-type"),
    pytest.param({"error.type": "<class 'openai.RateLimitError'>"}, StatusCode.ERROR, "openai.RateLimitError", id="class-repr"),
    pytest.param({}, StatusCode.ERROR, "KeyError", id="from-exception-event"),
    pytest.param({}, StatusCode.OK, None, id="ok-status-no-error-type"),
]


@pytest.mark.parametrize(("attrs", "status", "error_type"), ERROR_CASES)
def test_errors(attrs: dict[str, Any], status: StatusCode, error_type: str | None) -> None:
    exc = ev("exception", **{"exception.type": "KeyError", "exception.message": "'k'", "exception.stacktrace": "tb"})
    s = span(attrs, events=[ev("other"), exc], status_code=status)
    assert s.error_type == error_type
    assert [(e.type, e.message, e.stacktrace, e.time_ns) for e in s.exceptions] == [("KeyError", "'k'", "tb", 5)]


# ---- odd input ------------------------------------------------------------------------------------

ODD_CASES = [
    pytest.param({"gen_ai.input.messages": "{not json", "gen_ai.output.messages": "[1, 2"}, id="invalid-json"),
    pytest.param({"gen_ai.input.messages": 12, "gen_ai.output.messages": True}, id="scalars"),
    pytest.param({"gen_ai.input.messages": '[1, null, "x", {"parts": 5}]'}, id="odd-items"),
    pytest.param({"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "tool_call"}]}]'}, id="tool-call-no-name"),
    pytest.param({"gen_ai.prompt.x.role": "user", "gen_ai.prompt.0.role": ["user"]}, id="bad-flat-keys"),
    pytest.param({"gen_ai.system_instructions": b"\xff", "gen_ai.response.finish_reasons": {"a": 1}}, id="bytes-and-dict"),
    pytest.param({"llm.input_messages.0.message.role": 3, "llm.input_messages.0.message.contents.x": "?"}, id="oi-odd"),
]


@pytest.mark.parametrize("attrs", ODD_CASES)
def test_odd_input_never_raises(attrs: dict[str, Any]) -> None:
    s = span({"gen_ai.operation.name": "chat", **attrs}, events=[ev("gen_ai.choice", message="{bad"), ev("exception", **{"exception.type": 5})])
    assert s.kind == SpanKind.LLM
    assert all(isinstance(m.content, str) for m in s.input_messages + s.output_messages)
    assert s.output_messages == [] or all(m.role for m in s.output_messages)


def test_odd_items_keep_what_parses() -> None:
    s = span({"gen_ai.input.messages": '[1, "plain", {"role": "user", "parts": [{"type": "text", "content": "ok"}]}]'})
    assert roles_contents(s.input_messages) == [("user", "plain"), ("user", "ok")]


def test_renormalizing_resets_fields() -> None:
    s = span({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 3, "gen_ai.output.messages": json.dumps(CURRENT_OUTPUT)})
    s.attributes = {}
    normalize_span(s)
    assert (s.kind, s.usage.input, s.output_messages, s.finish_reasons) == (SpanKind.OTHER, 0, [], ())


VALUES = ["", "x", "chat", "execute_tool", 0, 7, -3, 2.5, True, None, [], ["stop", 1, ""], {"a": 1}, b"\xff", " 12 ", '["stop"]']
KEYS = [
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "llm.provider", "gen_ai.request.model",
    "gen_ai.conversation.id", "session.id", "user.id", "gen_ai.agent.name", "agent.name", "gen_ai.tool.name",
    "tool.name", "gen_ai.tool.call.id", "tool_call.id", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
    "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt", "gen_ai.usage.total_tokens",
    "gen_ai.response.finish_reasons", "error.type", "openinference.span.kind", "traceloop.span.kind",
]  # fmt: skip


@pytest.mark.parametrize("key", KEYS)
def test_inlined_lookups_answer_as_the_helpers_do(key: str) -> None:
    """The sections answer the common value types inline; every value type gives what the helpers
    (first_str, get_str, first_count, str_list, as_text) give, with and without a fallback key."""
    from schemas.coerce import as_int, as_str, str_list

    for value in VALUES:
        for fallback in ({}, {"agent.name": "fb", "tool.name": "fb", "gen_ai.system": "fb", "llm.token_count.prompt": 4}):
            s = span({**fallback, key: value}, status_code=StatusCode.ERROR)
            if key == "gen_ai.provider.name":
                assert s.provider == (as_str(value) or fallback.get("gen_ai.system"))
            elif key == "gen_ai.usage.input_tokens":
                count = as_int(value)
                expected = count if count is not None and count >= 0 else fallback.get("llm.token_count.prompt", 0)
                assert s.usage.input == expected
            elif key == "gen_ai.response.finish_reasons" and isinstance(value, list):
                assert s.finish_reasons == tuple(str_list(value))
            elif key == "error.type":
                assert s.error_type == as_str(value)


def test_normalize_new_matches_normalize_span_on_a_fresh_span() -> None:
    from schemas.normalize import normalize_new

    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 3,
             "gen_ai.output.messages": json.dumps(CURRENT_OUTPUT)}  # fmt: skip
    a = Span.fast(trace_id="ab" * 16, span_id="cd" * 8, attributes=dict(attrs))
    b = Span.fast(trace_id="ab" * 16, span_id="cd" * 8, attributes=dict(attrs))
    assert list(normalize_new(a).__dict__.items()) == list(normalize_span(b).__dict__.items())
    assert a.output_messages == b.output_messages and a.output_messages
