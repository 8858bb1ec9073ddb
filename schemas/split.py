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

Before it is cut, such a part sheds the attribute bytes the decoder would drop anyway
(:func:`shorten_values`, given the worker's ``max_attribute_bytes``): a single span with a
multi-megabyte value (a base64 image in its input messages) then fits one record, and what is
stored of it is the same as if it had come keyed. Parts under the limit are sent as they came.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

#: bytes a part spends, at most, on the tags and length prefixes around one message it holds (a
#: span, a scope's or a resource's container; lengths under 2^28 take at most 4 bytes each)
_FRAMING = 32

#: nesting the decoder reads (deeper values are dead-lettered as ``attribute_too_deep``)
_MAX_DEPTH = 17


def split_by_trace(req: ExportTraceServiceRequest, max_bytes: int | None = None,
                   max_value_bytes: int | None = None) -> dict[str, list[bytes]]:  # fmt: skip
    """Per trace id, its part(s) of ``req``, serialized: one part, or, when it is larger than
    ``max_bytes``, its attribute values first shortened to ``max_value_bytes`` (see
    :func:`shorten_values`) and then, if still larger, several parts each at most ``max_bytes``
    (a single span larger than that goes alone)."""
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
        out[tid] = [whole] if max_bytes is None or len(whole) <= max_bytes else _cut(part, max_bytes)
    return out


def shorten_values(req: ExportTraceServiceRequest, limit: int) -> int:
    """Shorten, in place, every string or bytes attribute value of ``req``'s resources, spans and
    span events that :mod:`schemas.decode` would truncate under ``max_attribute_bytes = limit``:
    the decoder keeps a string's longest prefix of at most ``limit`` bytes in UTF-8 and a bytes
    value's first ``limit`` bytes; the value becomes that prefix and one character (byte) more.
    Still over the limit, it is truncated to the same prefix and recorded in
    ``truncated_attributes`` as the whole value would be, so nothing the decoder would store is
    lost. Values in arrays and key-value lists count alike; scope attributes and links, which the
    decoder does not store, are left as they are. Returns how many values were shortened."""
    n = 0
    for rs in req.resource_spans:
        n += _shorten_kvs(rs.resource.attributes, limit)
        for ss in rs.scope_spans:
            for span in ss.spans:
                n += _shorten_kvs(span.attributes, limit)
                for event in span.events:
                    n += _shorten_kvs(event.attributes, limit)
    return n


def _shorten_kvs(kvs: Any, limit: int, depth: int = 0) -> int:
    n = 0
    for kv in kvs:
        n += _shorten(kv.value, limit, depth)
    return n


def _shorten(v: AnyValue, limit: int, depth: int) -> int:
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        if len(s) * 4 > limit:  # may take more than ``limit`` bytes
            kept = s[:limit].encode("utf-8")[:limit].decode("utf-8", "ignore")  # what the decoder keeps
            if len(kept) + 1 < len(s):
                v.string_value = s[: len(kept) + 1]
                return 1
    elif which == "bytes_value":
        if len(v.bytes_value) > limit + 1:
            v.bytes_value = v.bytes_value[: limit + 1]
            return 1
    elif depth < _MAX_DEPTH:  # deeper nesting is dead-lettered by the decoder before any split
        if which == "array_value":
            return sum(_shorten(x, limit, depth + 1) for x in v.array_value.values)
        if which == "kvlist_value":
            return _shorten_kvs(v.kvlist_value.values, limit, depth + 1)
    return 0


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
