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
   saying so, instead of a record the broker refuses for good holding its input partition. When
   no cut of its values could be enough (a status message holding a whole error body, thousands
   of streamed chunk events, thousands of flattened message attributes), its name and status
   message are cut too, its values cut further, and then its events and attributes dropped and
   counted: the span (ids, timing, status, kind) is always stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

#: :func:`fit_span` leaves at least this many bytes of a value it cuts, unless even that is too much
MIN_KEPT_BYTES = 1024

#: the floors :func:`fit_span` cuts values to, one pass each, while the span is too large (a value
#: cut shorter keeps little more than :data:`~schemas.decode.TRUNCATION_MARK`: events, newest
#: first, are dropped instead, as the OpenTelemetry SDK drops those over its limit)
FLOORS = (MIN_KEPT_BYTES, 256)

#: attributes :func:`fit_span` gives a span whose events or attributes it had to drop: how many
DROPPED_EVENTS = "tracejudge.dropped_events"
DROPPED_ATTRIBUTES = "tracejudge.dropped_attributes"
_MARKERS = 2 * (len(DROPPED_ATTRIBUTES) + 16)  # bytes the two count attributes take at most

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


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit_span` did to a span: the values (and name or status message) it cut, the
    events and attributes it dropped."""

    cut: tuple[str, ...] = ()
    dropped_events: int = 0
    dropped_attributes: int = 0

    def __bool__(self) -> bool:
        return bool(self.cut or self.dropped_events or self.dropped_attributes)

    def __str__(self) -> str:
        said = [", ".join(self.cut)] if self.cut else []
        said += [f"{n} {what} dropped" for n, what in ((self.dropped_events, "events"),
                                                        (self.dropped_attributes, "attributes")) if n]  # fmt: skip
        return "; ".join(said)


def fit_span(span: PbSpan, room: int) -> Fitted:
    """Make ``span``'s serialized size at most ``room``, losing as little of what is stored as it
    can, in stages, each only while the span is still too large:

    1. its largest string and bytes values (of its attributes and its events', nested ones too)
       are cut, largest first, each to no less than :data:`MIN_KEPT_BYTES` — unless that could not
       be enough, in which case first its links and trace state (the decoder stores neither) are
       cleared and its name and status message cut to :data:`MIN_KEPT_BYTES`
       (``span.name`` / ``span.status_message`` among the names below);
    2. the values are cut further, in passes down to each of :data:`FLOORS`;
    3. its events are dropped, newest first, ``exception`` events last, their number in the
       attribute :data:`DROPPED_EVENTS`;
    4. its attributes are dropped, largest first, their number in :data:`DROPPED_ATTRIBUTES`.

    Cut attributes' keys (and the name or status message) are named in :data:`CUT_KEYS`, the
    reading worker moves them into ``truncated_attributes``. Returns what was done (false when
    the span fits already). Any ``room`` of a few kilobytes is reached (the ids, two 1 KB texts
    and the markers)."""
    size = span.ByteSize()
    if size <= room:
        return Fitted()
    cut: list[str] = []
    values = _text_values(span)
    least = size + _names_size([k for k, _, _ in values]) - sum(max(n - MIN_KEPT_BYTES, 0) for *_, n in values)
    if least > room:  # cutting values alone cannot be enough
        span.ClearField("links")
        span.trace_state = ""
        for key, text in (("span.name", span.name), ("span.status_message", span.status.message)):
            if len(text) > MIN_KEPT_BYTES // 4 and len(text.encode("utf-8")) > MIN_KEPT_BYTES:
                kept = _prefix(text, MIN_KEPT_BYTES)
                if key == "span.name":
                    span.name = kept
                else:
                    span.status.message = kept
                cut.append(key)
        size = span.ByteSize()
    for floor in FLOORS:
        if size + _names_size(cut) <= room:
            break
        size = _cut_values(span, size, room, floor, cut)
    dropped: dict[str, int] = {}
    if size + _names_size(cut) > room:
        dropped[DROPPED_EVENTS] = _drop_events(span, room - _names_size(cut) - _MARKERS)
        size = span.ByteSize()
    if size + _names_size(cut) > room:
        dropped[DROPPED_ATTRIBUTES] = _drop_attributes(span, room - _MARKERS, cut)
    if dropped := {k: n for k, n in dropped.items() if n}:
        kept = {k for k, _, _ in _text_values(span)}  # names of values whose event or attribute is gone
        cut[:] = [k for k in cut if k in kept or k.startswith("span.")]
        for key, n in dropped.items():
            span.attributes.add(key=key).value.int_value = n
    if cut:
        names = span.attributes.add(key=CUT_KEYS).value.array_value.values
        for key in cut:
            names.add().string_value = key
    return Fitted(tuple(cut), dropped.get(DROPPED_EVENTS, 0), dropped.get(DROPPED_ATTRIBUTES, 0))


def _cut_values(span: PbSpan, size: int, room: int, floor: int, cut: list[str]) -> int:
    """One pass of :func:`fit_span`'s cuts down to ``floor`` bytes per value; returns the size."""
    named, names = set(cut), _names_size(cut)
    for key, value, n in sorted(_text_values(span), key=lambda c: c[2], reverse=True):
        if size + names <= room:
            break
        extra = 0 if key in named else _name_size(key) + (0 if names else len(CUT_KEYS) + 16)
        excess = size + names + extra - room
        keep = max(floor, n - excess)
        if keep >= n:  # the largest left is small already: cutting it gains nothing
            break
        _keep(value, keep)
        size -= n - keep  # an upper bound: a length prefix may shrink too
        if extra:
            named.add(key)
            cut.append(key)
            names += extra
    return span.ByteSize()


def _drop_events(span: PbSpan, room: int) -> int:
    """Drop events, newest first and ``exception`` ones last, until the span is at most ``room``."""
    order = sorted(range(len(span.events)), key=lambda i: (span.events[i].name == "exception", -i))
    size, gone = span.ByteSize(), set()
    for i in order:
        if size <= room:
            break
        size -= _framed(span.events[i].ByteSize())
        gone.add(i)
    for i in sorted(gone, reverse=True):
        del span.events[i]
    span.dropped_events_count += len(gone)
    return len(gone)


def _drop_attributes(span: PbSpan, room: int, cut: list[str]) -> int:
    """Drop attributes, largest first, until the span and the names of ``cut`` left are at most
    ``room``; their keys leave ``cut``."""
    order = sorted(range(len(span.attributes)), key=lambda i: span.attributes[i].ByteSize(), reverse=True)
    size, names, named, gone = span.ByteSize(), _names_size(cut), set(cut), set()
    for i in order:
        if size + names <= room:
            break
        kv = span.attributes[i]
        size -= _framed(kv.ByteSize())
        if kv.key in named:
            named.discard(kv.key)
            names -= _name_size(kv.key)
        gone.add(i)
    cut[:] = [k for k in cut if k in named]
    for i in sorted(gone, reverse=True):
        del span.attributes[i]
    span.dropped_attributes_count += len(gone)
    return len(gone)


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


def _text_values(span: PbSpan) -> list[tuple[str, AnyValue, int]]:
    """(top-level key, value, size in bytes) of every string and bytes value of the span's and its
    events' attributes, nested ones included."""
    out = [t for kv in span.attributes for t in _texts(kv.key, kv.value, 0)]
    out += [t for event in span.events for kv in event.attributes for t in _texts(kv.key, kv.value, 0)]
    return out


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
        v.string_value = _prefix(v.string_value, size)


def _prefix(text: str, size: int) -> str:
    """``text``'s longest prefix that fits ``size`` bytes in UTF-8 with the truncation mark after it."""
    return text.encode("utf-8")[: max(size - len(_MARK), 0)].decode("utf-8", "ignore") + TRUNCATION_MARK


def _names_size(keys: Sequence[str]) -> int:
    """An upper bound of the bytes the :data:`CUT_KEYS` attribute naming ``keys`` adds (none)."""
    return len(CUT_KEYS) + 16 + sum(_name_size(k) for k in keys) if keys else 0


def _name_size(key: str) -> int:
    return len(key.encode("utf-8")) + 8


def _framed(n: int) -> int:
    """Bytes a span's event or attribute of ``n`` bytes takes in it: a one-byte tag, its length."""
    return 1 + (n.bit_length() + 6) // 7 + n if n else 2
