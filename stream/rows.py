"""Span / Trace <-> ClickHouse rows.

Attribute maps are stored as ``Map(String, String)``: string values as they are (so
``attributes['gen_ai.request.model']`` reads naturally in SQL) and every other OTLP type as JSON,
with its key listed in ``typed_attributes`` so the round trip is lossless (bytes become
``{"$bytes": "<base64>"}``). :func:`span_from_row` rebuilds the raw layer and re-normalizes it, so a
recovered span is the same object the decoder produced.
"""

from __future__ import annotations

import base64
import functools
import gc
import json
from collections.abc import Sequence
from typing import Any

from schemas.model import Span, SpanEvent, StatusCode, Trace
from schemas.normalize import normalize_span

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "kind", "operation", "convention",
    "service_name", "scope_name", "scope_version", "start_time", "end_time", "duration_ms",
    "status_code", "status_message", "error_type", "exception_types", "exception_messages",
    "provider", "request_model", "response_model", "input_tokens", "output_tokens", "total_tokens",
    "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens", "finish_reasons", "tool_name", "tool_call_id",
    "tool_arguments", "tool_result", "conversation_id", "user_id", "agent_name", "agent_id",
    "agent_version", "attributes", "typed_attributes", "resource_attributes",
    "typed_resource_attributes", "events", "truncated_attributes", "is_late", "kafka_topic",
    "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip

TRACE_COLUMNS = (
    "trace_id", "service_name", "agent_name", "agent_version", "conversation_id", "user_id",
    "root_span_id", "root_name", "start_time", "end_time", "duration_ms", "span_count",
    "error_count", "llm_call_count", "tool_call_count", "input_tokens", "output_tokens",
    "total_tokens", "models", "providers", "completion_reason", "spans_not_held", "first_seen",
    "last_seen", "completed_at", "kafka_topic", "kafka_partition", "max_offset",
    "sample_class", "sample_rule", "sample_stratum", "inclusion_p", "sampled", "policy_version",
    "failed_gates", "gate_errors", "signals",
)  # fmt: skip

# Columns read back to rebuild a span's raw layer (recovery of open traces after a restart).
RAW_SPAN_SELECT = (
    "trace_id, span_id, parent_span_id, name, otel_kind, toUnixTimestamp64Nano(start_time), "
    "toUnixTimestamp64Nano(end_time), status_code, status_message, attributes, typed_attributes, "
    "resource_attributes, typed_resource_attributes, events, scope_name, scope_version, "
    "truncated_attributes, kafka_offset"
)


def json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return {"$bytes": base64.b64encode(o).decode("ascii")}
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


#: single-key objects that stand for something else in tracejudge's JSON: ``{"$bytes": base64}`` a
#: bytes value, ``{"$map": {...}}`` the map inside, taken as it is (a real map whose only key is one
#: of these is written wrapped so, and reads back unchanged)
MARKS = ("$bytes", "$map")


def to_json(o: Any) -> str:
    """JSON with bytes as ``{"$bytes": base64}`` (lossless for OTLP attribute values, a map that
    looks like one included: see :data:`MARKS`)."""
    text = json.dumps(o, ensure_ascii=False, separators=(",", ":"), default=json_default)
    if "$" in text and ('"$bytes"' in text or '"$map"' in text):  # a real map like a mark, maybe
        text = json.dumps(escape_marks(o), ensure_ascii=False, separators=(",", ":"), default=json_default)
    return text


def escape_marks(o: Any) -> Any:
    """``o`` with every map whose only key is one of :data:`MARKS` wrapped as ``{"$map": map}``."""
    if isinstance(o, dict):
        inner = {k: escape_marks(v) for k, v in o.items()}
        return {"$map": inner} if len(o) == 1 and next(iter(o)) in MARKS else inner
    if isinstance(o, list | tuple):
        return [escape_marks(v) for v in o]
    return o


_json = to_json
_is_tracked = gc.is_tracked


def from_json(text: str) -> Any:
    return _unbytes(json.loads(text))


def _unbytes(o: Any) -> Any:
    if isinstance(o, dict):
        if len(o) == 1:
            key, value = next(iter(o.items()))
            if key == "$bytes" and isinstance(value, str):
                try:
                    return base64.b64decode(value, validate=True)
                except ValueError:  # not ours (a map stored before marks were escaped): kept as it is
                    return {key: value}
            if key == "$map" and isinstance(value, dict):
                return {k: _unbytes(v) for k, v in value.items()}
        return {k: _unbytes(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_unbytes(v) for v in o]
    return o


def encode_attrs(attrs: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(the values as strings, the keys whose value was not a string and is spelled as JSON).

    Both are objects the garbage collector does not walk once a row has met one collection (rows
    wait in memory while an insert runs): a dict of strings built as one is never tracked, a tuple
    of strings is untracked at its first collection."""
    # Most values are strings (every value, on most tool and agent spans): copy the dict at C speed,
    # then overwrite only the others (same keys, same order), rather than build it key by key.
    out: dict[str, str] = dict(attrs)
    typed: list[str] = []
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            continue
        typed.append(k)
        if t is int:  # the common non-string values, without json.dumps's per-call overhead
            out[k] = str(v)
        elif t is bool:
            out[k] = "true" if v else "false"
        elif t is float and v - v == 0.0:  # finite: json writes float.__repr__ (nan/inf need json's spelling)
            out[k] = repr(v)
        elif t is list and len(v) <= 8 and all(type(x) is str and len(x) <= 64 for x in v):
            out[k] = _str_list_json(tuple(v))  # finish reasons, stop sequences: few distinct values
        else:  # lists, dicts, bytes, nan/inf
            out[k] = _json(v)
    if not typed:
        return out, ()
    if _is_tracked(out):  # copied from a dict that held a list (finish reasons): rebuild untracked
        out = dict(zip(out, out.values()))
    return out, tuple(typed)


@functools.lru_cache(maxsize=4096)
def _str_list_json(values: tuple[str, ...]) -> str:
    return _json(list(values))


def decode_attrs(values: dict[str, str], typed: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(values)
    for k in typed:
        if k in out:
            out[k] = _unbytes(json.loads(out[k]))
    return out


_U64_MAX = 2**64 - 1


def _u64(n: int) -> int:
    """Token counts are UInt64 columns: saturate (a sum of absurd counts must not make the insert
    fail on every retry)."""
    return n if n <= _U64_MAX else _U64_MAX


def span_row(
    span: Span, topic: str, partition: int, offset: int, ingested_ms: int, late: bool,
    resource_cache: dict[int, Any] | None = None,
) -> tuple[Any, ...]:
    """One ``spans`` row. ``resource_cache`` (keyed by the resource dict's id, so only valid while
    those spans are alive) encodes a resource shared by many spans once."""
    # Fields are read from the span's dict: attribute access on a pydantic model goes through its
    # ``__getattr__`` hook (~2x slower), and this reads ~45 fields per span. ``_value_`` is what
    # the enums' ``.value`` property returns.
    d = span.__dict__
    attrs, typed = encode_attrs(d["attributes"])
    resource = d["resource_attributes"]
    if resource_cache is None:
        res, res_typed = encode_attrs(resource)
    else:
        key = id(resource)
        if key not in resource_cache:
            resource_cache[key] = encode_attrs(resource)
        res, res_typed = resource_cache[key]
    u = d["usage"].__dict__
    inp, out, total, cache_read, cache_creation, reasoning = (
        u["input"], u["output"], u["total"], u["cache_read"], u["cache_creation"], u["reasoning"]
    )  # fmt: skip
    if max(inp, out, total, cache_read, cache_creation, reasoning) > _U64_MAX:  # rare: one test, not 6 calls
        inp, out, total, cache_read, cache_creation, reasoning = map(
            _u64, (inp, out, total, cache_read, cache_creation, reasoning)
        )
    events = (
        _json([{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in d["events"]])
        if d["events"]
        else "[]"
    )
    exceptions = d["exceptions"]
    if exceptions:  # tuples, not lists: see encode_attrs
        exc_types, exc_messages = tuple([e.type or "" for e in exceptions]), tuple([e.message or "" for e in exceptions])
    else:  # most spans: no list comprehension calls
        exc_types = exc_messages = ()
    start, end = d["start_ns"], d["end_ns"]
    return (
        d["trace_id"], d["span_id"], d["parent_span_id"] or "", d["name"], d["otel_kind"],
        d["kind"]._value_, d["operation"] or "", d["convention"], d["service_name"], d["scope_name"],
        d["scope_version"], start, end, (end - start) / 1e6,
        d["status_code"]._value_, d["status_message"], d["error_type"] or "",
        exc_types, exc_messages,
        d["provider"] or "", d["request_model"] or "", d["response_model"] or "",
        inp, out, total, cache_read, cache_creation, reasoning,
        d["finish_reasons"], d["tool_name"] or "", d["tool_call_id"] or "",
        d["tool_arguments"] or "", d["tool_result"] or "", d["conversation_id"] or "",
        d["user_id"] or "", d["agent_name"] or "", d["agent_id"] or "", d["agent_version"] or "",
        attrs, typed, res, res_typed, events, d["truncated_attributes"], 1 if late else 0,
        topic, partition, offset, ingested_ms,
    )  # fmt: skip


def span_from_row(row: tuple[Any, ...]) -> tuple[Span, int]:
    """Rebuild a span from a :data:`RAW_SPAN_SELECT` row; returns (span, kafka_offset)."""
    (trace_id, span_id, parent, name, otel_kind, start_ns, end_ns, status, status_message, attrs,
     typed, res, res_typed, events_json, scope_name, scope_version, truncated, offset) = row  # fmt: skip
    events = tuple(
        SpanEvent.fast(name=e["name"], time_ns=e["time_ns"], attributes=_unbytes(e["attributes"]))
        for e in json.loads(events_json or "[]")
    )
    span = Span.fast(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent or None, name=name,
        otel_kind=otel_kind, start_ns=int(start_ns), end_ns=int(end_ns),
        status_code=StatusCode(status), status_message=status_message,
        attributes=decode_attrs(attrs, typed), events=events,
        resource_attributes=decode_attrs(res, res_typed), scope_name=scope_name,
        scope_version=scope_version, truncated_attributes=tuple(truncated),
    )  # fmt: skip
    return normalize_span(span), int(offset)


def trace_row(
    trace: Trace, topic: str, partition: int, max_offset: int, spans_not_held: int = 0, decision: Any = None
) -> tuple[Any, ...]:
    """One ``traces`` row; ``decision`` is the trace's :class:`stream.decide.TraceDecision`, if any."""
    from stream.decision_rows import decision_columns  # decision code depends on rows, not back
    root = trace.root
    usage = trace.usage
    return (
        trace.trace_id, trace.service_name, trace.agent_name or "", trace.agent_version or "",
        trace.conversation_id or "", trace.user_id or "", root.span_id if root else "",
        root.name if root else "", trace.start_ns, trace.end_ns, trace.duration_ns / 1e6,
        len(trace.spans) + spans_not_held, trace.error_count, len(trace.llm_spans),
        trace.tool_call_count, _u64(usage.input), _u64(usage.output), _u64(usage.total), trace.models,
        sorted({p for s in trace.spans if (p := s.provider)}), trace.completion_reason.value,
        spans_not_held, trace.first_seen_ns // 1_000_000, trace.last_seen_ns // 1_000_000,
        trace.completed_ns // 1_000_000, topic, partition, max_offset,
    ) + decision_columns(decision)  # fmt: skip

