"""OTLP/JSON straight to spans, without protobuf's JSON parser on the way.

The reference path (:func:`schemas.otlp_json.parse_otlp_json`, then
:func:`schemas.decode.decode_request`) builds a protobuf request with ``json_format.ParseDict``,
which walks every field in pure Python: ~200 µs per span of the benchmark corpus, ten times all
the rest of decoding. The Collector's otlp_json marshaler writes one regular shape (camelCase
keys, ids in hex, 64-bit integers as strings or numbers, enums as numbers, bytes in base64), so
:func:`decode_otlp_json` reads that shape straight from ``orjson.loads``. Span links, scope
attributes and a resource's entity references, which the decoder does not keep, are checked (at
least as strictly as ``json_format``) and dropped, as the reference path drops them. Keys that
no OTLP field has (a newer producer's field, a vendor's) are skipped, as the reference path skips
them (``ignore_unknown_fields``); a ``null`` member counts as absent, as ``json_format`` clears it.

It only returns spans the reference path returns for the same bytes, field for field. Anything it
does not read exactly as the reference does — a snake_case key, an enum by name, a float where an
integer goes, a null in a list, a link id that is not an even number of hex digits — and every
input the reference rejects or truncates with the ``dead_letter`` policy (bad ids or times, too
deep nesting, JSON orjson refuses) makes it return ``None``: the caller then decodes the message
the reference way, which gives the verdict. tests/schemas/test_otlp_json_spans.py checks the
equality on the captured fixtures, factory traces, the benchmark corpus and fuzzed documents.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import orjson

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from schemas.decode import _KEYS, _MAX_NS, _OTEL_KIND, _STATUS, DecodeError, Limits, _AttrConverter, _intern_key, new_span
from schemas.model import Span, SpanEvent


class _Unusual(Exception):
    """Not the shape read here (or not valid): the reference path decides."""


_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
_UNSIGNED = re.compile(r"[0-9]{1,20}")
_SIGNED = re.compile(r"-?[0-9]{1,19}")
_LINK_ID = re.compile(r"(?:[0-9a-fA-F]{2})*")  # a link's ids are only hex-decoded by the reference path
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_U32, _U64, _I64 = 2**32, 2**64, 2**63


# per OTLP message read: the keys read (or checked and dropped) from its JSON object (a plain
# frozenset: the hot path's subset test is fastest so) -> every name json_format knows for that
# message (its fields' JSON and proto names)
_KNOWN: dict[frozenset[str], frozenset[str]] = {}


def _keys(message: Any, *read: str) -> frozenset[str]:
    keys, known = frozenset(read), frozenset(n for f in message.DESCRIPTOR.fields for n in (f.json_name, f.name))
    assert _KNOWN.setdefault(keys, known) == known, f"{message.DESCRIPTOR.name}: same keys read, other names"
    return keys


# any other key: skipped when no field of the message has that name, else the reference path
_TOP = _keys(ExportTraceServiceRequest, "resourceSpans")
_RESOURCE_SPANS = _keys(ResourceSpans, "resource", "scopeSpans", "schemaUrl")
_RESOURCE = _keys(Resource, "attributes", "droppedAttributesCount", "entityRefs")
_ENTITY_REF = _keys(EntityRef, "schemaUrl", "type", "idKeys", "descriptionKeys")
_SCOPE_SPANS = _keys(ScopeSpans, "scope", "spans", "schemaUrl")
_SCOPE = _keys(InstrumentationScope, "name", "version", "attributes", "droppedAttributesCount")
_SPAN = _keys(
    PbSpan, "traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "attributes",
    "events", "links", "status", "flags", "traceState", "droppedAttributesCount", "droppedEventsCount",
    "droppedLinksCount",
)  # fmt: skip
_LINK = _keys(PbSpan.Link, "traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags")
_EVENT = _keys(PbSpan.Event, "timeUnixNano", "name", "attributes", "droppedAttributesCount")
_STATUS_KEYS = _keys(Status, "code", "message")
_KEY_VALUE = _keys(KeyValue, "key", "value")
_ANY_VALUE = _keys(AnyValue, "stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue",
                   "bytesValue")  # fmt: skip
_VALUES = _keys(ArrayValue, "values")  # an ArrayValue's and a KeyValueList's
KINDS = (_TOP, _RESOURCE_SPANS, _RESOURCE, _ENTITY_REF, _SCOPE_SPANS, _SCOPE, _SPAN, _LINK, _EVENT, _STATUS_KEYS,
         _KEY_VALUE, _ANY_VALUE, _VALUES)  # fmt: skip
# a null member of one of these is absent for json_format (it clears the field)
_NULLABLE = frozenset().union(*KINDS)
# json_format takes a key of this form for an extension, and OTLP messages have none: it refuses it
_EXTENSION = re.compile(r"\[[a-zA-Z0-9\._]*\]$")
# unread fields of these objects, checked as json_format checks them: uint32 counts and flags, strings
_U32_FIELDS = ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount", "flags")
_STR_FIELDS = ("schemaUrl", "traceState")


def decode_otlp_json(value: bytes, limits: Limits) -> list[Span] | None:
    """The spans of an OTLP/JSON message, as ``decode_request(parse_otlp_json(value))`` gives
    them; ``None`` for anything else (that path then decodes it and gives its verdict)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    try:
        return _Reader(limits).request(doc)
    except (_Unusual, DecodeError, RecursionError):
        if b"null" not in value:
            return None
    try:  # once more with null members taken out, as json_format clears them
        return _Reader(limits).request(_without_nulls(doc))
    except (_Unusual, DecodeError, RecursionError):
        return None


def _without_nulls(doc: Any) -> Any:
    """``doc`` without its null members of read keys (a null in a list stays: the reference refuses
    it). A null member of any other key is left for :func:`_known_only` to judge."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for k in [k for k, v in node.items() if v is None and k in _NULLABLE]:
                del node[k]
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return doc


def _known_only(x: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """``x`` without the keys that name no field of its message, which json_format skips; a key
    naming a field that is not read here (a snake_case name) or an extension: the reference path."""
    out, known = {}, _KNOWN[keys]
    for k, v in x.items():
        if k in keys:
            out[k] = v
        elif k in known or _EXTENSION.match(k):
            raise _Unusual
    return out


def _obj(x: Any, keys: frozenset[str]) -> dict[str, Any]:
    if type(x) is not dict:
        raise _Unusual
    if not x.keys() <= keys:
        x = _known_only(x, keys)
    for f in _U32_FIELDS:
        if f in x and not (type(v := x[f]) is int and 0 <= v < _U32):
            raise _Unusual
    for f in _STR_FIELDS:
        if f in x and type(x[f]) is not str:
            raise _Unusual
    return x


def _list(x: Any) -> list[Any]:
    if type(x) is not list:
        raise _Unusual
    return x


def _key_value(kv: Any) -> tuple[str, Any]:
    """A KeyValue not of the usual ``{"key", "value"}`` shape. A key without a value (json_format
    writes an unset value so) gets ``{}``: the reference's None."""
    kv = _obj(kv, _KEY_VALUE)
    if type(key := kv.get("key")) is not str:
        raise _Unusual
    return key, kv.get("value", {})


def _entity_ref(ref: Any) -> None:
    """Checked and dropped, as the reference path drops a resource's entity references."""
    ref = _obj(ref, _ENTITY_REF)
    _str(ref, "type")
    for f in ("idKeys", "descriptionKeys"):
        if not all([type(k) is str for k in _list(ref.get(f, []))]):
            raise _Unusual


def _str(o: dict[str, Any], key: str) -> str:
    v = o.get(key, "")
    if type(v) is not str:
        raise _Unusual
    return v


def _uint64(o: dict[str, Any], key: str) -> int:
    v = o.get(key, 0)
    if type(v) is str and _UNSIGNED.fullmatch(v):
        v = int(v)
    elif type(v) is not int:
        raise _Unusual
    if not 0 <= v < _U64:
        raise _Unusual
    return v


def _id(o: dict[str, Any], key: str, pattern: re.Pattern[str], zero: str) -> str | None:
    v = o.get(key, "")
    if type(v) is not str:
        raise _Unusual
    if not v:
        return None
    if not pattern.fullmatch(v) or v == zero:
        raise _Unusual
    return v.lower()


class _Reader:
    __slots__ = ("conv", "limit4", "checker")

    def __init__(self, limits: Limits) -> None:
        self.conv = _AttrConverter(limits)  # its string limits and truncation record, as the reference's
        self.limit4 = limits.max_attribute_bytes // 4
        self.checker: _Reader | None = None  # reads attributes that are dropped (no limits: not kept)

    def dropped_attrs(self, kvs: Any) -> None:
        """Attributes the reference path parses and then drops (a link's, the scope's): read to
        check them as strictly as kept ones, with no size limit, and thrown away."""
        if kvs == []:
            return
        if self.checker is None:
            self.checker = _Reader(Limits(max_attribute_bytes=1 << 62))
        self.checker.attrs(kvs)

    def request(self, doc: Any) -> list[Span] | None:
        spans: list[Span] = []
        conv = self.conv
        for rs in _list(_obj(doc, _TOP).get("resourceSpans", [])):
            rs = _obj(rs, _RESOURCE_SPANS)
            conv.truncated = []
            res = _obj(rs.get("resource", {}), _RESOURCE)
            for ref in _list(res.get("entityRefs", [])):
                _entity_ref(ref)
            resource = self.attrs(res.get("attributes", []))
            res_truncated = tuple([f"resource.{k}" for k in conv.truncated])
            for ss in _list(rs.get("scopeSpans", [])):
                ss = _obj(ss, _SCOPE_SPANS)
                scope = _obj(ss.get("scope", {}), _SCOPE)
                scope_name, scope_version = _str(scope, "name"), _str(scope, "version")
                self.dropped_attrs(scope.get("attributes", []))
                for ps in _list(ss.get("spans", [])):
                    spans.append(self.span(_obj(ps, _SPAN), scope_name, scope_version, resource, res_truncated))
        return spans or None  # no spans: the reference's no_spans

    def span(self, ps: dict[str, Any], scope_name: str, scope_version: str, resource: dict[str, Any],
             res_truncated: tuple[str, ...]) -> Span:  # fmt: skip
        trace_id = _id(ps, "traceId", _TRACE_ID, _ZERO_TRACE)
        span_id = _id(ps, "spanId", _SPAN_ID, _ZERO_SPAN)
        if trace_id is None or span_id is None:
            raise _Unusual
        start, end = _uint64(ps, "startTimeUnixNano"), _uint64(ps, "endTimeUnixNano")
        if not 0 < start <= end <= _MAX_NS:
            raise _Unusual
        kind = ps.get("kind", 0)
        status = _obj(ps.get("status", {}), _STATUS_KEYS)
        code = status.get("code", 0)
        if type(kind) is not int or not 0 <= kind < len(_OTEL_KIND) or type(code) is not int or not 0 <= code < 3:
            raise _Unusual
        self.conv.truncated = truncated = []
        attributes = self.attrs(ps.get("attributes", []))
        events = tuple([self.event(e) for e in _list(ps.get("events", []))])
        for link in _list(ps.get("links", [])):
            self.link(link)
        return new_span(
            trace_id, span_id, _id(ps, "parentSpanId", _SPAN_ID, _ZERO_SPAN), _str(ps, "name"), _OTEL_KIND[kind],
            start, end, _STATUS[code], _str(status, "message"), scope_name, scope_version, attributes, events,
            resource, (*truncated, *res_truncated) if truncated or res_truncated else (),
        )  # fmt: skip

    def link(self, link: Any) -> None:
        """Checked and dropped, as the reference path drops links (it only converts their hex ids)."""
        link = _obj(link, _LINK)
        for f in ("traceId", "spanId"):
            if f in link and not (type(i := link[f]) is str and _LINK_ID.fullmatch(i)):
                raise _Unusual
        self.dropped_attrs(link.get("attributes", []))

    def event(self, e: Any) -> SpanEvent:
        e = _obj(e, _EVENT)
        return SpanEvent.fast(name=_str(e, "name"), time_ns=_uint64(e, "timeUnixNano"),
                              attributes=self.attrs(e.get("attributes", [])))  # fmt: skip

    def attrs(self, kvs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys, limit4 = _KEYS, self.limit4
        for kv in _list(kvs):
            if type(kv) is dict and kv.keys() == _KEY_VALUE and type(key := kv["key"]) is str:
                v = kv["value"]
            else:
                key, v = _key_value(kv)
            key = keys.get(key) or _intern_key(key)
            # the common case inline: a short non-empty string
            if type(v) is dict and len(v) == 1 and type(s := v.get("stringValue")) is str and s and len(s) <= limit4:
                out[key] = s
            else:
                out[key] = self.value(key, v, 0)
        return out

    def value(self, key: str, v: Any, depth: int) -> Any:
        if type(v) is not dict:
            raise _Unusual
        if len(v) != 1:
            v = _obj(v, _ANY_VALUE)  # without unknown keys
            if not v:
                return None  # an empty AnyValue: the reference's None
            if len(v) != 1:
                raise _Unusual  # two members of its oneof
        [(which, x)] = v.items()
        if which == "stringValue" and type(x) is str:
            return self.conv.string(key, x)
        if which == "intValue":
            if type(x) is str and _SIGNED.fullmatch(x):
                x = int(x)
            if type(x) is int and -_I64 <= x < _I64:
                return x
        elif which == "boolValue" and type(x) is bool:
            return x
        elif which == "bytesValue" and type(x) is str:
            encoded = x.encode("utf-8")
            try:  # exactly json_format's reading of a bytes field (padded, URL-safe or standard alphabet)
                b = base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))
            except binascii.Error:
                raise _Unusual from None
            return self.conv.blob(key, b)
        elif which == "doubleValue":
            if type(x) is float and math.isfinite(x):
                return x
            if type(x) is int and -_I64 <= x < _I64:
                return float(x)
        elif depth > 16:  # the reference's attribute_too_deep
            raise _Unusual
        elif which == "arrayValue":
            return [self.value(key, e, depth + 1) for e in _list(_obj(x, _VALUES).get("values", []))]
        elif which == "kvlistValue":
            out = {}
            for kv in _list(_obj(x, _VALUES).get("values", [])):
                if type(kv) is dict and kv.keys() == _KEY_VALUE and type(k := kv["key"]) is str:
                    out[k] = self.value(key, kv["value"], depth + 1)
                else:
                    k, v = _key_value(kv)
                    out[k] = self.value(key, v, depth + 1)
            return out
        if which not in _ANY_VALUE:  # alone and no AnyValue field's name: an empty value
            return self.value(key, _obj(v, _ANY_VALUE), depth)
        raise _Unusual
