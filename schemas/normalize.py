"""Fill a :class:`Span`'s normalized GenAI layer from its raw OTLP layer.

:func:`normalize_span` reads only ``name``, ``attributes``, ``events``, ``resource_attributes``
and ``status_code``, assigns the normalized fields in place and returns the same span. It runs on
every span, so it never validates (``Model.fast`` only), parses JSON only when the key is
there, and never raises: a part that meets odd input is left at its empty default.

Conventions, in order of precedence where a span carries several:

* ``genai`` — current OpenTelemetry GenAI conventions (``gen_ai.provider.name``,
  ``gen_ai.input.messages`` ...), or any other ``gen_ai.*`` attribute without a deprecated marker;
* ``openinference`` — ``openinference.span.kind`` is set;
* ``genai_deprecated`` — ``gen_ai.system``, ``gen_ai.usage.prompt_tokens``, ``gen_ai.prompt``
  (JSON or Traceloop's flattened ``gen_ai.prompt.N.*``), message events; Traceloop (OpenLLMetry)
  workflow/task/agent/tool spans that only carry ``traceloop.*`` attributes count here too;
* ``none`` — nothing recognizable.

Span kind comes from ``gen_ai.operation.name``, else ``openinference.span.kind`` (LLM/EMBEDDING →
llm, TOOL → tool, AGENT → agent, RETRIEVER/RERANKER → retrieval, CHAIN and the rest → other),
else ``traceloop.span.kind`` (workflow/agent → agent, tool → tool, task → other), else Traceloop's
``llm.request.type``, else the span name's first word (``chat gpt-4o``, ``execute_tool x`` ...),
else ``llm`` when a provider or request model is present.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import methodcaller
from typing import Any

from schemas.coerce import Attrs, as_str, as_text, first_count, first_str, get_str, loads, str_list
from schemas.genai import has_message_events
from schemas.messages import parse_side
from schemas.model import ExceptionEvent, Span, SpanKind, StatusCode, TokenUsage
from schemas.openinference import SPAN_KINDS as _OI_KINDS
from schemas.openinference import finish_reasons_from_output_value, request_model_from_invocation

_OPERATION_KINDS: dict[str, SpanKind] = {
    "chat": SpanKind.LLM,
    "text_completion": SpanKind.LLM,
    "generate_content": SpanKind.LLM,
    "embeddings": SpanKind.LLM,
    "execute_tool": SpanKind.TOOL,
    "invoke_agent": SpanKind.AGENT,
    "create_agent": SpanKind.AGENT,
    "invoke_workflow": SpanKind.AGENT,
    "retrieval": SpanKind.RETRIEVAL,
}
_TRACELOOP_KINDS: dict[str, tuple[SpanKind, str | None]] = {
    "workflow": (SpanKind.AGENT, "invoke_workflow"),
    "agent": (SpanKind.AGENT, "invoke_agent"),
    "tool": (SpanKind.TOOL, "execute_tool"),
    "task": (SpanKind.OTHER, None),
}
# Enum members read per span, as module constants: ``SpanKind.TOOL`` goes through EnumType's
# ``__getattr__`` hook on Python 3.11 (~160 ns a read, ~20x a global's).
_LLM, _TOOL, _AGENT, _OTHER, _ERROR = SpanKind.LLM, SpanKind.TOOL, SpanKind.AGENT, SpanKind.OTHER, StatusCode.ERROR
_GENAI_PREFIX = methodcaller("startswith", "gen_ai.")
_TRACELOOP_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}

_LLM_MARKERS = frozenset(("gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model"))
_CURRENT_MARKERS = frozenset(
    ("gen_ai.provider.name", "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
)
_DEPRECATED_MARKERS = frozenset((
    "gen_ai.system", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens", "gen_ai.prompt",
    "gen_ai.completion", "gen_ai.prompt.0.role", "gen_ai.prompt.0.content", "gen_ai.completion.0.role",
    "gen_ai.completion.0.content",
))  # fmt: skip

_ASSOC = "traceloop.association.properties."
_CONVERSATION_KEYS = (
    "gen_ai.conversation.id", "session.id", _ASSOC + "session_id", _ASSOC + "conversation_id", _ASSOC + "thread_id",
)  # fmt: skip
_USER_KEYS = ("user.id", "enduser.id", "gen_ai.user.id", _ASSOC + "user_id")

_USAGE_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    "total": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_creation": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
}


# ---- sections (each fills a group of fields; a failing one leaves its defaults) ----------------


# The sections below spell ``get_str`` inline for the keys every span reads:
# ``(v or None) if type(v) is str else (None if v is None else as_str(v))`` with ``v = attrs.get(key)``.


def _classify(span: Span, attrs: Attrs) -> None:
    kind: SpanKind | None = None
    v = attrs.get("gen_ai.operation.name")
    operation = (v or None) if type(v) is str else (None if v is None else as_str(v))
    if operation is not None:
        kind = _OPERATION_KINDS.get(operation)
    v = attrs.get("openinference.span.kind")
    oi_kind = (v or None) if type(v) is str else (None if v is None else as_str(v))
    if kind is None and oi_kind is not None:
        kind_name, oi_op = _OI_KINDS.get(oi_kind.upper(), ("other", None))
        kind, operation = SpanKind(kind_name), operation or oi_op
    v = attrs.get("traceloop.span.kind")
    tl_kind = (v or None) if type(v) is str else (None if v is None else as_str(v))
    if kind is None and tl_kind is not None and tl_kind in _TRACELOOP_KINDS:
        kind, tl_op = _TRACELOOP_KINDS[tl_kind]
        operation = operation or tl_op
    if kind is None and (req_type := get_str(attrs, "llm.request.type")) in _TRACELOOP_REQUEST_TYPES:
        kind, operation = _LLM, operation or _TRACELOOP_REQUEST_TYPES[req_type or ""]
    if kind is None:
        first_word = span.name.split(" ", 1)[0]
        if first_word in _OPERATION_KINDS:
            kind, operation = _OPERATION_KINDS[first_word], operation or first_word
    if kind is None and not attrs.keys().isdisjoint(_LLM_MARKERS):
        kind = _LLM
    span.kind = kind or _OTHER
    span.operation = operation
    span.convention = _convention(span, attrs, oi_kind is not None, tl_kind is not None)


def _convention(span: Span, attrs: Attrs, openinference: bool, traceloop: bool) -> str:
    if not attrs.keys().isdisjoint(_CURRENT_MARKERS):  # C-level membership checks: runs per span
        return "genai"
    if openinference:
        return "openinference"
    if not attrs.keys().isdisjoint(_DEPRECATED_MARKERS) or (span.events and has_message_events(span.events)):
        return "genai_deprecated"
    if any(map(_GENAI_PREFIX, attrs)):  # = any(k.startswith("gen_ai.") for k in attrs), no generator frames
        return "genai"
    return "genai_deprecated" if traceloop else "none"


_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_AGENT_NAME_KEYS = ("gen_ai.agent.name", "agent.name")
_TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name")
_TOOL_CALL_ID_KEYS = ("gen_ai.tool.call.id", "tool_call.id")
# ``first_str(attrs, keys)`` is None when no key is there: one C-level check instead of a call
# that tests each key (most spans carry none of the conversation or user keys).
_CONVERSATION_SET, _USER_SET = frozenset(_CONVERSATION_KEYS), frozenset(_USER_KEYS)
_PROVIDER_SET, _AGENT_NAME_SET = frozenset(_PROVIDER_KEYS), frozenset(_AGENT_NAME_KEYS)
_TOOL_NAME_SET, _TOOL_CALL_ID_SET = frozenset(_TOOL_NAME_KEYS), frozenset(_TOOL_CALL_ID_KEYS)


def _identity(span: Span, attrs: Attrs) -> None:
    v = span.resource_attributes.get("service.name")
    span.service_name = ((v or None) if type(v) is str else (None if v is None else as_str(v))) or ""
    # a non-empty string under the first key is first_str's answer
    keys = attrs.keys()
    v = attrs.get("gen_ai.provider.name")
    if type(v) is not str or not v:
        v = None if keys.isdisjoint(_PROVIDER_SET) else first_str(attrs, _PROVIDER_KEYS)
    span.provider = v
    v = attrs.get("gen_ai.request.model")
    span.request_model = (v or None) if type(v) is str else (None if v is None else as_str(v))
    v = attrs.get("gen_ai.response.model")
    span.response_model = (v or None) if type(v) is str else (None if v is None else as_str(v))
    if "llm.model_name" in attrs:
        oi_model = as_str(attrs["llm.model_name"])
        span.response_model = span.response_model or oi_model
        span.request_model = span.request_model or request_model_from_invocation(attrs) or oi_model
    elif span.request_model is None and "llm.invocation_parameters" in attrs:
        span.request_model = request_model_from_invocation(attrs)
    v = attrs.get("gen_ai.conversation.id")
    if type(v) is not str or not v:
        v = None if keys.isdisjoint(_CONVERSATION_SET) else first_str(attrs, _CONVERSATION_KEYS)
    span.conversation_id = v
    span.user_id = None if keys.isdisjoint(_USER_SET) else first_str(attrs, _USER_KEYS)
    v = attrs.get("gen_ai.agent.name")
    if type(v) is not str or not v:
        v = None if keys.isdisjoint(_AGENT_NAME_SET) else first_str(attrs, _AGENT_NAME_KEYS)
    span.agent_name = v
    if span.agent_name is None and span.kind == _AGENT:
        if attrs.get("traceloop.span.kind") == "agent":
            span.agent_name = get_str(attrs, "traceloop.entity.name")
        elif span.name.startswith(("invoke_agent ", "create_agent ")):
            span.agent_name = span.name.split(" ", 1)[1] or None
    v = attrs.get("gen_ai.agent.id")
    span.agent_id = (v or None) if type(v) is str else (None if v is None else as_str(v))
    v = attrs.get("gen_ai.agent.version")
    span.agent_version = (v or None) if type(v) is str else (None if v is None else as_str(v))


_NO_USAGE = TokenUsage.fast()  # frozen: shared by every span without token counts
if tuple(_USAGE_KEYS) != tuple(TokenUsage.model_fields):  # _usage builds TokenUsage's whole field dict
    raise ImportError("schemas.normalize: _USAGE_KEYS must list TokenUsage's fields, in order")
_ANY_USAGE_KEY = frozenset(k for keys in _USAGE_KEYS.values() for k in keys)
_USAGE_ITEMS = tuple((field, keys, frozenset(keys)) for field, keys in _USAGE_KEYS.items())


def _usage(span: Span, attrs: Attrs) -> None:
    present = attrs.keys()
    if present.isdisjoint(_ANY_USAGE_KEY):
        span.usage = _NO_USAGE
        return
    # a non-negative int under the first key is first_count's answer; none of the keys, 0
    counts = {}
    for field, keys, key_set in _USAGE_ITEMS:
        v = attrs.get(keys[0])
        if type(v) is int and v >= 0:
            counts[field] = v
        else:
            counts[field] = 0 if present.isdisjoint(key_set) else first_count(attrs, keys)
    if not counts["total"]:
        counts["total"] = counts["input"] + counts["output"]
    span.usage = TokenUsage.wrap(counts) if any(counts.values()) else _NO_USAGE  # counts: every field, in order


def _finish_reasons(span: Span, attrs: Attrs) -> None:
    value = attrs.get("gen_ai.response.finish_reasons")
    if type(value) is list:  # str_list(value), inline for the common list of strings
        reasons = [s for v in value if (s := v if type(v) is str else as_str(v))]
    else:
        reasons = str_list(value) if value is not None else []
    if not reasons:  # only now pay for parsing the output messages
        outputs = parse_side(span.convention, attrs, span.events, "output")
        if outputs:  # most spans have none: no comprehension call
            reasons = [m.finish_reason for m in outputs if m.finish_reason]
    if not reasons and span.convention == "openinference":
        reasons = str_list(attrs.get("llm.finish_reason"))
        if not reasons and span.kind == _LLM:
            reasons = finish_reasons_from_output_value(attrs)
    span.finish_reasons = tuple(reasons)


def _tool(span: Span, attrs: Attrs) -> None:
    keys = attrs.keys()
    v = attrs.get("gen_ai.tool.name")
    if type(v) is not str or not v:
        v = None if keys.isdisjoint(_TOOL_NAME_SET) else first_str(attrs, _TOOL_NAME_KEYS)
    name = v
    v = attrs.get("gen_ai.tool.call.id")
    if type(v) is not str or not v:
        v = None if keys.isdisjoint(_TOOL_CALL_ID_SET) else first_str(attrs, _TOOL_CALL_ID_KEYS)
    call_id = v
    v = attrs.get("gen_ai.tool.call.arguments")
    arguments = v if v is None or type(v) is str else as_text(v)  # = as_text(v)
    v = attrs.get("gen_ai.tool.call.result")
    result = v if v is None or type(v) is str else as_text(v)
    if span.kind == _TOOL:
        if attrs.get("openinference.span.kind") == "TOOL":
            arguments = arguments or as_text(attrs.get("input.value")) or as_text(attrs.get("tool.parameters"))
            result = result or as_text(attrs.get("output.value"))
        if attrs.get("traceloop.span.kind") == "tool":
            name = name or get_str(attrs, "traceloop.entity.name")
            arguments = arguments or _traceloop_input(attrs.get("traceloop.entity.input"))
            result = result or _traceloop_output(attrs.get("traceloop.entity.output"))
        if name is None and span.name.startswith("execute_tool "):
            name = span.name.split(" ", 1)[1] or None
    span.tool_name = name
    span.tool_call_id = call_id
    span.tool_arguments = arguments
    span.tool_result = result


def _traceloop_input(value: Any) -> str | None:
    """Traceloop's ``@tool`` records ``{"args": [...], "kwargs": {...}}``; keyword-only calls → kwargs."""
    decoded = loads(value) if isinstance(value, str) and value.startswith('{"args"') else None
    if isinstance(decoded, dict) and not decoded.get("args") and isinstance(decoded.get("kwargs"), dict):
        return as_text(decoded["kwargs"])
    return as_text(value)


def _traceloop_output(value: Any) -> str | None:
    """Traceloop JSON-encodes the return value, so a string result arrives quoted: unquote it."""
    decoded = loads(value) if isinstance(value, str) and value.startswith('"') else None
    return decoded if isinstance(decoded, str) else as_text(value)


def _clean_error_type(value: str | None) -> str | None:
    """opentelemetry-instrumentation-openai-v2 2.4b0 records ``<class 'openai.X'>``; keep ``openai.X``."""
    if value is not None and value.startswith("<class '") and value.endswith("'>"):
        return value[8:-2] or None
    return value


def _errors(span: Span, attrs: Attrs) -> None:
    events = span.events
    exceptions = (
        tuple([
            ExceptionEvent.fast(
                type=as_str(e.attributes.get("exception.type")),
                message=as_str(e.attributes.get("exception.message")),
                stacktrace=as_str(e.attributes.get("exception.stacktrace")),
                time_ns=e.time_ns if isinstance(e.time_ns, int) else 0,
            )
            for e in events
            if e.name == "exception" and isinstance(e.attributes, dict)
        ])
        if events
        else ()  # most spans have no events: no comprehension call
    )
    v = attrs.get("error.type")
    error_type = (v or None) if type(v) is str else (None if v is None else as_str(v))
    if error_type is not None:
        error_type = _clean_error_type(error_type)
    if error_type is None and span.status_code == _ERROR:
        error_type = next((e.type for e in exceptions if e.type), None)
    span.exceptions = exceptions
    span.error_type = error_type


_SECTIONS: tuple[Callable[[Span, Attrs], None], ...] = (_classify, _identity, _usage, _finish_reasons, _tool, _errors)
_DEFAULTS: dict[str, Any] = {
    name: Span.model_fields[name].default
    for name in (
        "kind", "operation", "convention", "service_name", "provider", "request_model", "response_model",
        "conversation_id", "user_id", "agent_name", "agent_id", "agent_version", "tool_name", "tool_call_id",
        "tool_arguments", "tool_result", "error_type",
    )
}  # fmt: skip


class _Work:
    """The span's own field dict behind a plain object: pydantic's ``__setattr__`` costs ~1 µs per
    assignment, and there are ~50 per span."""


def normalize_span(span: Span) -> Span:
    """Fill ``span``'s normalized layer from its raw layer, in place; return ``span``.

    The sections write straight into the span's field dict through :class:`_Work`."""
    values = span.__dict__
    values.update(_DEFAULTS)
    values.pop("_parsed_input", None)  # raw layer may have changed: parse messages anew
    values.pop("_parsed_output", None)
    return normalize_new(span)


def normalize_new(span: Span) -> Span:
    """:func:`normalize_span` for a span just built from its raw layer (``Span.fast`` or ``wrap``
    with the model's defaults for the normalized fields, no parsed messages): skips resetting them."""
    values = span.__dict__
    values["finish_reasons"] = values["exceptions"] = ()
    work = _Work()
    work.__dict__ = values
    attrs = values["attributes"]  # the dict, not span.attributes: pydantic's attribute hook costs
    if not isinstance(attrs, dict):
        attrs = {}
    for section in _SECTIONS:
        try:
            section(work, attrs)  # type: ignore[arg-type]  # duck-typed: same field names as Span
        except Exception:  # noqa: BLE001 - odd input must never break ingestion; leave defaults
            if section is _usage:
                values["usage"] = _NO_USAGE
            continue
    return span
