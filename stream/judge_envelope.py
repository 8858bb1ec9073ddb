"""The message on ``traces.to_judge``: the full assembled trace plus why it was chosen.

JSON, keyed by trace id. Spans travel as their raw OTLP layer (attributes with bytes as
``{"$bytes": …}``); :func:`decode` re-normalizes them, so a judge sees exactly the spans the
worker assembled, and the decision (class, rule, p, policy version), failed gates and signals.

**Spans by reference.** A trace with many or large spans would make a message larger than the
broker accepts (Kafka's ``message.max.bytes``, ~1 MB by default), and a produce that can never
succeed would stall the input partition forever. So :func:`encode` with ``max_bytes`` (the worker's
``max_judge_message_bytes``) writes the full envelope when it fits, and otherwise the same envelope
with ``"spans_ref": {"count": N, "span_ids": [...]}`` in place of ``"spans"``: the spans are
already in ClickHouse (the pipeline produces to_judge only after its span inserts are
acknowledged). ``span_ids`` — the ids of exactly the spans the assembler held — are left out too
when even they do not fit; the judge then takes the trace's non-late stored spans and keeps the
first ``count`` by (start time, span id) (:func:`select_referenced`): spans past
``max_spans_per_trace`` were stored but not held, in arrival order, which the store does not keep
exactly, so that fallback is deterministic but may differ from the held set for such traces.

:func:`decode` refuses a by-reference envelope (a caller that cannot load spans must not judge an
empty trace); :func:`decode_partial` returns it with its :class:`SpansRef` and no spans, and
:func:`attach_referenced` (:func:`with_spans`) completes it once the judge loaded them
(``stream.judging``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from schemas.decode import NORMALIZED_PLACEHOLDERS
from schemas.model import CompletionReason, Span, SpanEvent, StatusCode, Trace
from schemas.normalize import normalize_new, normalize_span
from stream.rows import escape_marks, from_json, json_default, to_json

log = logging.getLogger(__name__)

FORMAT = "tracejudge.to_judge.v1"
_RAW_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "start_ns", "end_ns",
    "status_message", "attributes", "resource_attributes", "scope_name", "scope_version",
    "truncated_attributes",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpansRef:
    """The spans of a by-reference envelope: how many, and (when they fit) exactly which."""

    count: int
    span_ids: tuple[str, ...] | None = None


# The raw fields read from the span's dict in one C call (getattr on a pydantic model, per field,
# was a third of encode); the same values, in the same key order.
_raw_values = itemgetter(*_RAW_FIELDS)


def _span_raw(span: Span) -> dict[str, Any]:
    d = span.__dict__
    out = dict(zip(_RAW_FIELDS, _raw_values(d)))
    out["status_code"] = d["status_code"]._value_  # what the enum's .value property returns
    events = d["events"]
    out["events"] = [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in events] if events else []
    return out


def _finite(o: Any) -> bool:
    """No NaN or infinity anywhere in ``o`` (orjson would write them as null). Recurses only into
    containers: most values of an envelope are strings."""
    t = type(o)
    if t is float:
        return o - o == 0.0
    if t is dict:
        o = o.values()
    elif t is not list and t is not tuple:
        return True
    for v in o:
        t = type(v)
        if t is str or t is int or v is None:
            continue
        if t is float:  # checked here rather than by a call: sampling temperatures, scores
            if v - v != 0.0:
                return False
        elif (t is dict or t is list or t is tuple) and v and not _finite(v):  # empty: nothing to check
            return False
    return True


def _dumps(o: Any) -> bytes:
    """The envelope's JSON. orjson (~6x faster than json on ~100 KB envelopes, a few % of the
    worker's CPU) unless it would differ from :func:`to_json` in more than spelling: it writes NaN
    and infinities as null, and refuses integers past 64 bits (both legal attribute values)."""
    if _finite(o):
        try:
            out = orjson.dumps(o, default=json_default)
        except orjson.JSONEncodeError:
            pass
        else:  # a real map like a mark (stream.rows.MARKS), maybe: written escaped
            if b"$" not in out or (b'"$bytes"' not in out and b'"$map"' not in out):
                return out
            return orjson.dumps(escape_marks(o), default=json_default)
    return to_json(o).encode("utf-8")


def encode(trace: Trace, meta: dict[str, Any], max_bytes: int | None = None) -> bytes:
    """The envelope; with ``max_bytes``, by reference (see the module doc) when the full one is larger."""
    head = {
        "format": FORMAT,
        "trace_id": trace.trace_id,
        "completion_reason": trace.completion_reason.value,
        "first_seen_ns": trace.first_seen_ns,
        "last_seen_ns": trace.last_seen_ns,
        "completed_ns": trace.completed_ns,
        **meta,
    }
    full = _dumps({**head, "spans": [_span_raw(s) for s in trace.spans]})
    if max_bytes is None or len(full) <= max_bytes:
        return full
    ids = [s.span_id for s in trace.spans]
    ref = _dumps({**head, "spans_ref": {"count": len(ids), "span_ids": ids}})
    if len(ref) <= max_bytes:
        return ref
    ref = _dumps({**head, "spans_ref": {"count": len(ids)}})
    if len(ref) > max_bytes:
        log.warning("to_judge envelope of %s is %d bytes by reference (cap %d): its decision meta alone is too "
                    "large", trace.trace_id, len(ref), max_bytes)  # fmt: skip
    return ref


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)  # ~2.5x faster on envelopes of ~100 KB
    except orjson.JSONDecodeError:  # NaN attribute values, integers past 64 bits: json's rules
        return json.loads(text)


def _parse(value: bytes) -> Any:
    """The envelope's document. ``from_json`` walks the whole document for ``{"$bytes": …}`` and
    ``{"$map": …}`` objects (a fifth of decoding); such a key can only be spelled so or with a
    \\u00XX escape, so without either the walk would change nothing. The common case goes to orjson as bytes (it
    checks the UTF-8 itself: no ``str`` of the whole envelope); anything it refuses (invalid UTF-8,
    NaN, integers past 64 bits) takes the general path, which answers or fails exactly as before."""
    # ``b"$" in``, a memchr, is ~10x faster than looking for ``$bytes`` (and envelopes rarely hold a $)
    marks = b"$" in value and (b"$bytes" in value or b"$map" in value) if type(value) is bytes else True
    if type(value) is bytes and not marks and b"\\u00" not in value:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    text = value.decode("utf-8")
    return from_json(text) if "$bytes" in text or "$map" in text or "\\u00" in text else _loads(text)


# A span as :func:`encode` writes it: these keys, in this order. _span builds its field dict in the
# order ``Span.fast(**raw)`` gave for such a span (``model_dump`` and ``repr`` follow it): the fields
# with a static default in declaration order, the normalized layer's as placeholders, then usage,
# finish_reasons and exceptions (set by normalize_new), then the raw fields with a default factory
# in the envelope's order. Any other shape takes _span_general (``Span.fast``), as before.
_RAW_KEYS = [*_RAW_FIELDS, "status_code", "events"]
_EVENT_KEYS = ["name", "time_ns", "attributes"]
_STATUS = {c.value: c for c in StatusCode}
# schemas.decode checks the raw layer's static fields; the dict below also relies on this order
if [n for n, f in Span.model_fields.items() if f.default_factory is not None] != [
    "attributes", "events", "resource_attributes", "truncated_attributes", "usage", "finish_reasons", "exceptions",
]:  # fmt: skip  # a changed Span must not silently decode into a different shape
    raise ImportError("stream.judge_envelope: Span's fields changed; update _span")


def _span_general(raw: dict[str, Any]) -> Span:
    raw["status_code"] = StatusCode(raw["status_code"])
    raw["events"] = tuple([SpanEvent.fast(**e) for e in raw["events"]])
    if "truncated_attributes" in raw:
        raw["truncated_attributes"] = tuple(raw["truncated_attributes"])
    return normalize_span(Span.fast(**raw))


def _event(e: Any) -> SpanEvent:
    if type(e) is dict and list(e) == _EVENT_KEYS:
        return SpanEvent.wrap(e)  # = SpanEvent.fast(**e): the same dict, in the same order
    return SpanEvent.fast(**e)


def _span(raw: Any) -> Span:
    if type(raw) is not dict or list(raw) != _RAW_KEYS:
        return _span_general(raw)
    (trace_id, span_id, parent_span_id, name, otel_kind, start_ns, end_ns, status_message, attributes,
     resource_attributes, scope_name, scope_version, truncated_attributes, status, events) = raw.values()  # fmt: skip
    code = _STATUS.get(status) if type(status) is str else None
    if code is None:
        code = StatusCode(status)  # raises as before (or converts as before)
    events = tuple([_event(e) for e in events]) if type(events) is not list or events else ()
    truncated_attributes = tuple(truncated_attributes) if truncated_attributes else ()
    span = Span.wrap({
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": name,
        "otel_kind": otel_kind,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "status_code": code,
        "status_message": status_message,
        "scope_name": scope_name,
        "scope_version": scope_version,
        **NORMALIZED_PLACEHOLDERS,  # the normalized layer's defaults, as normalize_new expects
        "usage": None,  # usage, finish_reasons, exceptions: set by normalize_new
        "finish_reasons": None,
        "exceptions": None,
        "attributes": attributes,
        "resource_attributes": resource_attributes,
        "truncated_attributes": truncated_attributes,
        "events": events,
    })
    return normalize_new(span)


def decode_partial(value: bytes) -> tuple[Trace, dict[str, Any], SpansRef | None]:
    """(trace, meta, ref): for a by-reference envelope the trace has no spans yet and ``ref`` says
    which to load; for a full one ``ref`` is None."""
    doc = _parse(value)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} message")
    ref = None
    spans = []
    if "spans_ref" in doc:
        r = doc.pop("spans_ref")
        count = r["count"]
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"spans_ref.count is not a count: {count!r}")
        ids = r.get("span_ids")
        ref = SpansRef(count, tuple(ids) if ids is not None else None)
        if ref.span_ids is not None and len(ref.span_ids) != count:
            raise ValueError(f"spans_ref holds {len(ref.span_ids)} span ids for a count of {count}")
    else:
        spans = [_span(raw) for raw in doc.pop("spans")]
    trace = Trace.fast(
        trace_id=doc.pop("trace_id"),
        spans=spans,
        completion_reason=CompletionReason(doc.pop("completion_reason")),
        first_seen_ns=doc.pop("first_seen_ns"),
        last_seen_ns=doc.pop("last_seen_ns"),
        completed_ns=doc.pop("completed_ns"),
    )
    doc.pop("format")
    return trace, doc, ref


def decode(value: bytes) -> tuple[Trace, dict[str, Any]]:
    """A full envelope; raises ValueError for one whose spans are by reference (use
    :func:`decode_partial` and load them)."""
    trace, meta, ref = decode_partial(value)
    if ref is not None:
        raise ValueError("spans are by reference (spans_ref): load them from ClickHouse")
    return trace, meta


def select_referenced(ref: SpansRef, stored: Sequence[tuple[Span, bool]]) -> list[Span] | None:
    """The trace's spans out of its stored ones ((span, is_late) pairs, one per span id): exactly
    the listed ``span_ids`` in their order (the envelope's trace order), or else the first ``count``
    non-late spans by (start time, span id), the assembler's order; None when some are missing."""
    if ref.span_ids is not None:
        by_id = {s.span_id: s for s, _late in stored}
        if any(i not in by_id for i in ref.span_ids):
            return None
        return [by_id[i] for i in ref.span_ids]
    held = [s for s, late in stored if not late]
    if len(held) < ref.count:
        return None
    return sorted(held, key=lambda s: (s.start_ns, s.span_id))[: ref.count]


def attach_referenced(
    decoded: Sequence[tuple[Any, Trace, dict[str, Any], SpansRef | None]],
    stored: Mapping[str, Sequence[tuple[Span, bool]]],
) -> tuple[list[tuple[Any, Trace, dict[str, Any]]], list[tuple[Any, str]]]:
    """Complete by-reference envelopes ((item, trace, meta, ref) from :func:`decode_partial`, ref
    None for full ones) with their ``stored`` spans (trace id -> (span, is_late) pairs): (item,
    trace, meta) for each envelope whose spans are complete, (item, reason) for each whose
    referenced spans are not all stored — never a partial trace."""
    ok, missing = [], []
    for x, t, meta, ref in decoded:
        if ref is None:
            ok.append((x, t, meta))
            continue
        have = stored.get(t.trace_id, [])
        spans = select_referenced(ref, have)
        if spans is None:
            which = "its held span ids" if ref.span_ids is not None else "non-late spans"
            missing.append((x, f"trace {t.trace_id}: envelope references {ref.count} spans by reference, "
                               f"ClickHouse does not hold all of {which} ({len(have)} stored spans found)"))  # fmt: skip
            continue
        ok.append((x, with_spans(t, spans), meta))
    return ok, missing


def with_spans(trace: Trace, spans: list[Span]) -> Trace:
    return Trace.fast(
        trace_id=trace.trace_id,
        spans=spans,
        completion_reason=trace.completion_reason,
        first_seen_ns=trace.first_seen_ns,
        last_seen_ns=trace.last_seen_ns,
        completed_ns=trace.completed_ns,
    )
