"""The trace as CEL sees it: a dict of plain values, built per trace with only what is used.

Fields (absent strings are ``""``, never ``null``, so ``.contains()`` / ``.matches()`` always work)::

    trace.trace_id, service, agent, conversation_id   string
    trace.completion_reason                            string (root_ended_idle, max_age, ...)
    trace.duration_ms                                  double
    trace.span_count, error_count                      int
    trace.usage.input / .output / .total               int (tokens)
    trace.models                                       list of string
    trace.final_output                                 string
    trace.user_messages                                list of string (distinct, in order; this turn)
    trace.tool_calls   list of {name, arguments, result, is_error}  (see trace_view.tool_uses)
    trace.spans        list of {span_id, name, kind, model, status, error_type, duration_ms,
                                tool_name, is_error}

Converting Python values into CEL values costs about 1-2 µs per string in the ``cel`` library,
so a 30-span ``trace.spans`` alone costs ~0.7 ms. The view therefore includes a field — at any
level — only when its name appears as a word in the expression (``trace.spans.exists(s,
s.status == "error")`` gets spans with only ``status``). A key built at run time (``s["sta" +
"tus"]``) is therefore missing and the evaluation errors out; it never passes silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas.model import Span, Trace
from stream.gates.trace_view import ToolUse, tool_uses, user_messages

NS_PER_MS = 1_000_000.0


def _usage(trace: Trace) -> dict[str, int]:
    u = trace.usage
    return {"input": u.input, "output": u.output, "total": u.total}


TRACE_FIELDS: dict[str, Callable[[Trace], Any]] = {
    "trace_id": lambda t: t.trace_id,
    "service": lambda t: t.service_name,
    "agent": lambda t: t.agent_name or "",
    "conversation_id": lambda t: t.conversation_id or "",
    "completion_reason": lambda t: t.completion_reason.value,
    "duration_ms": lambda t: t.duration_ns / NS_PER_MS,
    "span_count": lambda t: len(t.spans),
    "error_count": lambda t: t.error_count,
    "usage": _usage,
    "models": lambda t: t.models,
    "final_output": lambda t: t.final_output,
    "user_messages": lambda t: [text for _, text in user_messages(t)],
}
SPAN_FIELDS: dict[str, Callable[[Span], Any]] = {
    "span_id": lambda s: s.span_id,
    "name": lambda s: s.name,
    "kind": lambda s: s.kind.value,
    "model": lambda s: s.model or "",
    "status": lambda s: s.status_code.value,
    "error_type": lambda s: s.error_type or "",
    "duration_ms": lambda s: s.duration_ns / NS_PER_MS,
    "tool_name": lambda s: s.tool_name or "",
    "is_error": lambda s: s.is_error,
}
TOOL_CALL_FIELDS: dict[str, Callable[[ToolUse], Any]] = {
    "name": lambda u: u.name,
    "arguments": lambda u: u.arguments or "",
    "result": lambda u: u.result or "",
    "is_error": lambda u: u.span is not None and u.span.is_error,
}
ALL_FIELDS = frozenset(TRACE_FIELDS) | {"spans", "tool_calls"}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CelTraceView:
    """Builds ``{"trace": {...}}`` for one expression, with only the fields it names."""

    def __init__(self, expression: str) -> None:
        words = set(_WORD.findall(expression))
        self.trace_fields = [(k, f) for k, f in TRACE_FIELDS.items() if k in words]
        self.span_fields = [(k, f) for k, f in SPAN_FIELDS.items() if k in words] if "spans" in words else None
        self.tool_fields = (
            [(k, f) for k, f in TOOL_CALL_FIELDS.items() if k in words] if "tool_calls" in words else None
        )

    def build(self, trace: Trace) -> dict[str, Any]:
        view: dict[str, Any] = {k: f(trace) for k, f in self.trace_fields}
        if self.span_fields is not None:
            fields = self.span_fields
            spans = sorted(trace.spans, key=lambda s: s.start_ns)
            view["spans"] = [{k: f(s) for k, f in fields} for s in spans]
        if self.tool_fields is not None:
            fields_t = self.tool_fields
            view["tool_calls"] = [{k: f(u) for k, f in fields_t} for u in tool_uses(trace)]
        return {"trace": view}


def full_view(trace: Trace) -> dict[str, Any]:
    """Every field (for documentation, debugging and tests)."""
    return CelTraceView(" ".join([*ALL_FIELDS, *SPAN_FIELDS, *TOOL_CALL_FIELDS])).build(trace)
