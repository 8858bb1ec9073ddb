"""Make a span's OTLP form smaller for the repartition topic, in two steps (schemas/split.py).

1. :func:`shorten_values` drops only what the decoder drops anyway: every attribute value over
   ``max_attribute_bytes`` becomes what the decoder keeps of it plus one character, so it decodes
   exactly as the whole value did. Nothing that would be stored is lost.
2. :func:`fit_span`, for a span still larger alone than a repartition record may be (several
   values each near ``max_attribute_bytes``), cuts its largest string and bytes values further,
   as the decoder cuts one over the limit (a string keeps a prefix and gets
   :data:`~schemas.decode.TRUNCATION_MARK`, bytes keep a prefix), and names them in the attribute
   :data:`CUT_KEYS`. A worker reading the repartition topic moves those names into the span's
   ``truncated_attributes`` (:func:`take_cut_keys`): the span is stored, a little shorter and
   saying so, instead of a record the broker refuses for good holding its input partition.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from schemas.decode import TRUNCATION_MARK
from schemas.model import Span

#: attribute naming the keys :func:`fit_span` cut (a list of strings); read and removed only on
#: the repartition topic, where the worker itself wrote it
CUT_KEYS = "tracejudge.cut_attributes"

#: nesting the decoder reads (deeper values are dead-lettered as ``attribute_too_deep``)
_MAX_DEPTH = 17

#: :func:`fit_span` leaves at least this many bytes of a value it cuts
MIN_KEPT_BYTES = 1024

_MARK = TRUNCATION_MARK.encode("utf-8")


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


def fit_span(span: PbSpan, room: int) -> list[str]:
    """Cut ``span``'s largest string and bytes values (of its attributes and its events', nested
    ones too) until its serialized size is at most ``room``, each to no less than
    :data:`MIN_KEPT_BYTES`, largest first; name the cut attributes' keys in :data:`CUT_KEYS`.
    Returns those keys: none when it fits already, or when it would not fit even with every
    value cut (its name, ids or resource that large), in which case nothing is cut."""
    values = sorted(_text_values(span), key=lambda c: c[2], reverse=True)
    least = span.ByteSize() + _names_size([k for k, _, _ in values]) - sum(max(n - MIN_KEPT_BYTES, 0) for *_, n in values)
    if least > room:  # its other fields alone are too large: cutting its values would only lose them
        return []
    cut: list[str] = []
    for key, value, size in values:
        if span.ByteSize() + _names_size(cut) <= room:
            break
        excess = span.ByteSize() + _names_size(cut if key in cut else [*cut, key]) - room
        keep = max(MIN_KEPT_BYTES, size - excess)
        if keep >= size:  # the largest left is small already: cutting it gains nothing
            break
        _keep(value, keep)
        if key not in cut:
            cut.append(key)
    if cut:
        names = span.attributes.add(key=CUT_KEYS).value.array_value.values
        for key in cut:
            names.add().string_value = key
    return cut


def take_cut_keys(spans: Sequence[Span]) -> int:
    """Move :data:`CUT_KEYS` out of each span's attributes into its ``truncated_attributes``.
    Returns how many spans had it."""
    n = 0
    for span in spans:
        names = span.attributes.pop(CUT_KEYS, None)
        if names is None:
            continue
        n += 1
        keys = [k for k in names if isinstance(k, str)] if isinstance(names, list) else []
        span.truncated_attributes = tuple(dict.fromkeys([*span.truncated_attributes, *keys]))
    return n


def _text_values(span: PbSpan) -> Iterator[tuple[str, AnyValue, int]]:
    """(top-level key, value, size in bytes) of every string and bytes value of the span's and its
    events' attributes, nested ones included."""
    for kv in span.attributes:
        yield from _texts(kv.key, kv.value, 0)
    for event in span.events:
        for kv in event.attributes:
            yield from _texts(kv.key, kv.value, 0)


def _texts(key: str, v: AnyValue, depth: int) -> Iterator[tuple[str, AnyValue, int]]:
    which = v.WhichOneof("value")
    if which == "string_value":
        yield key, v, len(v.string_value.encode("utf-8"))
    elif which == "bytes_value":
        yield key, v, len(v.bytes_value)
    elif depth < _MAX_DEPTH:
        if which == "array_value":
            for x in v.array_value.values:
                yield from _texts(key, x, depth + 1)
        elif which == "kvlist_value":
            for kv in v.kvlist_value.values:
                yield from _texts(key, kv.value, depth + 1)


def _keep(v: AnyValue, size: int) -> None:
    """Cut ``v`` to ``size`` bytes at most: a string to its longest prefix that fits with the
    truncation mark after it, bytes to their first ``size``."""
    if v.WhichOneof("value") == "bytes_value":
        v.bytes_value = v.bytes_value[:size]
    else:
        v.string_value = v.string_value.encode("utf-8")[: size - len(_MARK)].decode("utf-8", "ignore") + TRUNCATION_MARK


def _names_size(keys: Sequence[str]) -> int:
    """An upper bound of the bytes the :data:`CUT_KEYS` attribute naming ``keys`` adds (none)."""
    return len(CUT_KEYS) + 16 + sum(len(k.encode("utf-8")) + 8 for k in keys) if keys else 0
