"""The message on ``traces.to_judge``: the full assembled trace plus why it was chosen.

JSON, keyed by trace id. Spans travel as their raw OTLP layer (attributes with bytes as
``{"$bytes": …}``); :func:`decode` re-normalizes them, so a judge sees exactly the spans the
worker assembled, and the decision (class, rule, p, policy version), failed gates and signals.
"""

from __future__ import annotations

from typing import Any

from schemas.model import CompletionReason, Span, SpanEvent, StatusCode, Trace
from schemas.normalize import normalize_span
from stream.rows import from_json, to_json

FORMAT = "tracejudge.to_judge.v1"
_RAW_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "start_ns", "end_ns",
    "status_message", "attributes", "resource_attributes", "scope_name", "scope_version",
    "truncated_attributes",
)  # fmt: skip


def _span_raw(span: Span) -> dict[str, Any]:
    out = {f: getattr(span, f) for f in _RAW_FIELDS}
    out["status_code"] = span.status_code.value
    out["events"] = [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in span.events]
    return out


def encode(trace: Trace, meta: dict[str, Any]) -> bytes:
    doc = {
        "format": FORMAT,
        "trace_id": trace.trace_id,
        "completion_reason": trace.completion_reason.value,
        "first_seen_ns": trace.first_seen_ns,
        "last_seen_ns": trace.last_seen_ns,
        "completed_ns": trace.completed_ns,
        **meta,
        "spans": [_span_raw(s) for s in trace.spans],
    }
    return to_json(doc).encode("utf-8")


def decode(value: bytes) -> tuple[Trace, dict[str, Any]]:
    doc = from_json(value.decode("utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} message")
    spans = []
    for raw in doc.pop("spans"):
        raw["status_code"] = StatusCode(raw["status_code"])
        raw["events"] = [SpanEvent.fast(**e) for e in raw["events"]]
        spans.append(normalize_span(Span.fast(**raw)))
    trace = Trace.fast(
        trace_id=doc.pop("trace_id"),
        spans=spans,
        completion_reason=CompletionReason(doc.pop("completion_reason")),
        first_seen_ns=doc.pop("first_seen_ns"),
        last_seen_ns=doc.pop("last_seen_ns"),
        completed_ns=doc.pop("completed_ns"),
    )
    doc.pop("format")
    return trace, doc
