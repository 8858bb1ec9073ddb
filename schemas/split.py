"""Split an OTLP request per trace, as the Collector's ``partition_traces_by_id`` does.

Used to repartition unkeyed (or mixed) input: each part keeps its spans' resource and scope and is
keyed by its 32-hex trace id, so the repartition topic carries exactly what a Collector with
``partition_traces_by_id: true`` would have written.

A part is cut further when it is larger than ``max_bytes``: the worker's producer does not
compress, and a broker takes a record up to its ``message.max.bytes`` (1 MB by default), so the
uncompressed part of one large trace from a compressed input message could be refused for good and
hold its input partition. Its spans then go in several parts, in order, each under ``max_bytes``
(a span that is larger alone goes alone); the assembler joins a trace's spans from any number of
messages, as it does for a Collector that sends a trace's spans in several batches.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

#: bytes a part spends, at most, on the tags and length prefixes around one message it holds (a
#: span, a scope's or a resource's container; lengths under 2^28 take at most 4 bytes each)
_FRAMING = 32


def split_by_trace(req: ExportTraceServiceRequest, max_bytes: int | None = None) -> dict[str, list[bytes]]:
    """Per trace id, its part(s) of ``req``, serialized: one part, or several each at most
    ``max_bytes`` when it is larger (a single span larger than that goes alone)."""
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
        out[tid] = [whole] if max_bytes is None or len(whole) <= max_bytes else _cut(part, max_bytes)
    return out


def _cut(part: ExportTraceServiceRequest, max_bytes: int) -> list[bytes]:
    """``part``'s spans in order, in as few parts as keep each at most ``max_bytes``."""
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
