"""Split an OTLP request per trace, as the Collector's ``partition_traces_by_id`` does.

Used to repartition unkeyed (or mixed) input: each part keeps its spans' resource and scope and is
keyed by its 32-hex trace id, so the repartition topic carries exactly what a Collector with
``partition_traces_by_id: true`` would have written.

A part is cut further when it is larger than ``max_bytes``: the worker's producer does not
compress by default (``producer_compression``), and a broker takes a record up to its
``message.max.bytes`` (1 MB by default), so the uncompressed part of one large trace from a
compressed input message could be refused for good and hold its input partition. Its spans then
go in several parts, in order, each under ``max_bytes``; the assembler joins a trace's spans from
any number of messages, as it does for a Collector that sends a trace's spans in several batches.

Before it is cut, such a part sheds the attribute bytes the decoder would drop anyway
(:func:`~schemas.shrink.shorten_values`, given the worker's ``max_attribute_bytes``): a single
span with a multi-megabyte value (a base64 image in its input messages) then fits one record, and
what is stored of it is the same as if it had come keyed. A span still larger alone is made to
fit (:func:`~schemas.shrink.fit_span`: its largest values cut further and named, then, only if
that cannot be enough, its name or status message cut, its events and attributes dropped and
counted). Only a part whose resource or scope alone is over the limit still goes over it. Parts
under the limit are sent as they came.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from schemas.shrink import Fitted, fit_span, shorten_values

#: bytes a part spends, at most, on the tags and length prefixes around one message it holds (a
#: span, a scope's or a resource's container; lengths under 2^28 take at most 4 bytes each)
_FRAMING = 32

#: called with (trace id, span id, what was done) for every span :func:`~schemas.shrink.fit_span` changed
OnFit = Callable[[str, str, Fitted], object]


def split_by_trace(req: ExportTraceServiceRequest, max_bytes: int | None = None,
                   max_value_bytes: int | None = None, on_fit: OnFit | None = None) -> dict[str, list[bytes]]:  # fmt: skip
    """Per trace id, its part(s) of ``req``, serialized: one part, or, when it is larger than
    ``max_bytes``, its attribute values first shortened to ``max_value_bytes`` (see
    :func:`~schemas.shrink.shorten_values`) and then, if still larger, several parts each at most
    ``max_bytes``. With ``max_value_bytes``, a span larger alone than that is first cut to fit
    (:func:`~schemas.shrink.fit_span`, reported to ``on_fit``); without, it goes alone."""
    parts: dict[str, ExportTraceServiceRequest] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            # per trace: the (resource, scope) container built for this scope_spans
            containers: dict[str, ScopeSpans] = {}
            for span in ss.spans:
                tid = span.trace_id.hex()
                scope = containers.get(tid)
                if scope is None:
                    part = parts.get(tid)
                    if part is None:
                        part = parts[tid] = ExportTraceServiceRequest()
                    scope = containers[tid] = _container(part, rs, ss)
                scope.spans.append(span)
    out: dict[str, list[bytes]] = {}
    for tid, part in parts.items():
        whole = part.SerializeToString()
        if max_bytes is not None and len(whole) > max_bytes and max_value_bytes is not None:
            if shorten_values(part, max_value_bytes):
                whole = part.SerializeToString()
        if max_bytes is None or len(whole) <= max_bytes:
            out[tid] = [whole]
        else:
            out[tid] = _cut(part, max_bytes, on_fit if max_value_bytes is not None else None)
    return out


def _cut(part: ExportTraceServiceRequest, max_bytes: int, on_fit: OnFit | None) -> list[bytes]:
    """``part``'s spans in order, in as few parts as keep each at most ``max_bytes``; a span
    larger alone is cut to fit when ``on_fit`` is given."""
    pieces: list[bytes] = []
    current = ExportTraceServiceRequest()
    size = 0  # an upper bound of ``current``'s serialized size
    for rs in part.resource_spans:
        head = rs.resource.ByteSize() + len(rs.schema_url.encode()) + _FRAMING
        for ss in rs.scope_spans:
            head_ss = head + ss.scope.ByteSize() + len(ss.schema_url.encode()) + _FRAMING
            scope: ScopeSpans | None = None
            for span in ss.spans:
                cost = span.ByteSize() + _FRAMING
                if on_fit is not None and head_ss + cost > max_bytes and max_bytes - head_ss - _FRAMING > 0:
                    if fitted := fit_span(span, max_bytes - head_ss - _FRAMING):
                        on_fit(span.trace_id.hex(), span.span_id.hex(), fitted)
                        cost = span.ByteSize() + _FRAMING
                extra = cost if scope is not None else head_ss + cost
                if size and size + extra > max_bytes:
                    pieces.append(current.SerializeToString())
                    current, size, scope, extra = ExportTraceServiceRequest(), 0, None, head_ss + cost
                if scope is None:
                    scope = _container(current, rs, ss)
                scope.spans.append(span)
                size += extra
    if current.resource_spans:
        pieces.append(current.SerializeToString())
    return pieces


def _container(req: ExportTraceServiceRequest, rs: ResourceSpans, ss: ScopeSpans) -> ScopeSpans:
    """A new (resource, scope) container in ``req`` with ``rs``'s resource and ``ss``'s scope."""
    out_rs = req.resource_spans.add()
    out_rs.resource.CopyFrom(rs.resource)
    out_rs.schema_url = rs.schema_url
    scope = out_rs.scope_spans.add()
    scope.scope.CopyFrom(ss.scope)
    scope.schema_url = ss.schema_url
    return scope
