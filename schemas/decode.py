"""Kafka message value -> validated, normalized :class:`Span` list.

Accepts exactly what the OpenTelemetry Collector's kafka exporter writes: an OTLP
``ExportTraceServiceRequest`` as protobuf (``otlp_proto``) or OTLP/JSON (``otlp_json``). The
exporter sets no content-type header, so ``encoding="auto"`` sniffs: OTLP/JSON starts with ``{``
(0x7B), which can never start a valid ExportTraceServiceRequest protobuf (it would be field 15,
wire type 3).

A message is all-or-nothing: any invalid span rejects the whole message with a
:class:`DecodeError` whose ``reason`` is a short stable code (used as the dead-letter reason) and
``detail`` says which span and what is wrong. Nothing is half-stored.

Invalid UTF-8 in a protobuf ``string`` field (which upb refuses, but the Collector's Go code
passes on) is not a reason to reject: on that failure path only, :mod:`schemas.utf8_repair`
re-parses the message, puts U+FFFD for each invalid sequence and keeps the original bytes in the
span attribute ``tracejudge.invalid_utf8`` (lossless). OTLP/JSON that is not UTF-8 is not JSON
(RFC 8259) and is dead-lettered as ``undecodable`` with the offending byte's offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from google.protobuf.json_format import ParseError as JsonParseError
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.model import Span, SpanEvent, StatusCode
from schemas.normalize import normalize_new
from schemas.otlp_json import parse_otlp_json
from schemas.utf8_repair import repair_request

Encoding = Literal["auto", "otlp_proto", "otlp_json"]

_OTEL_KIND = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR)
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_NS = 2**63 - 1  # the latest instant ClickHouse's DateTime64(9) holds (2262-04-11)
TRUNCATION_MARK = "…[truncated]"


class DecodeError(ValueError):
    """A message that cannot be accepted; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 32 * 1024 * 1024
    max_attribute_bytes: int = 256 * 1024
    oversize_attribute_policy: Literal["truncate", "dead_letter"] = "truncate"


DEFAULT_LIMITS = Limits()


_JSON_OBJECT_START = re.compile(rb"[ \t\r\n]*\{")  # RFC 8259's whitespace, then an object (no copy of the value)


def sniff_encoding(value: bytes) -> Literal["otlp_proto", "otlp_json"]:
    """OTLP/JSON starts with ``{``, after JSON's whitespace. A leading newline is ambiguous: 0x0A
    also starts every protobuf request (field 1, length-delimited: ``\\n{`` is a first
    ResourceSpans of 123 bytes), so a value led by a newline is JSON only when protobuf cannot read it."""
    head = value[:1]
    if head == b"{":
        return "otlp_json"
    if head in (b" ", b"\t", b"\r", b"\n") and _JSON_OBJECT_START.match(value):
        if head != b"\n" or not _reads_as_protobuf(value):
            return "otlp_json"
    return "otlp_proto"


def _reads_as_protobuf(value: bytes) -> bool:
    """``value`` is a protobuf request, strings that are not UTF-8 (which are repaired) aside."""
    try:
        ExportTraceServiceRequest.FromString(value)
    except ProtobufDecodeError:
        return repair_request(value) is not None
    return True


def is_json(value: bytes, encoding: Encoding) -> bool:
    """Whether ``value`` is taken for OTLP/JSON (named by ``encoding``, or sniffed when ``auto``)."""
    return encoding == "otlp_json" or (encoding == "auto" and sniff_encoding(value) == "otlp_json")


def parse_request(value: bytes, encoding: Encoding = "auto") -> ExportTraceServiceRequest:
    if encoding == "auto":
        encoding = sniff_encoding(value)
    try:
        if encoding == "otlp_json":
            return parse_otlp_json(value)
        try:
            return ExportTraceServiceRequest.FromString(value)
        except ProtobufDecodeError:
            # the failure path only: strings that are not UTF-8 are repaired losslessly
            repaired = repair_request(value)
            if repaired is not None:
                return repaired[0]
            raise
    except UnicodeDecodeError as exc:  # OTLP/JSON bytes that are not UTF-8 are not JSON: no repair
        raise DecodeError(
            "undecodable",
            f"OTLP/JSON must be UTF-8 (RFC 8259): byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "is not (invalid UTF-8 is repaired in protobuf input only)",
        ) from None
    except (ProtobufDecodeError, JsonParseError, ValueError, TypeError, RecursionError) as exc:
        # ValueError covers json.JSONDecodeError
        raise DecodeError("undecodable", f"not an OTLP {encoding} ExportTraceServiceRequest: {exc}") from None


class _AttrConverter:
    """Converts OTLP KeyValue lists to dicts, enforcing the attribute size limit."""

    __slots__ = ("limits", "truncated")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.truncated: list[str] = []

    def value(self, key: str, v: Any, depth: int = 0) -> Any:
        which = v.WhichOneof("value")
        if which == "string_value":
            return self.string(key, v.string_value)
        if which == "int_value":
            return v.int_value
        if which == "bool_value":
            return v.bool_value
        if which == "double_value":
            return v.double_value
        if which == "bytes_value":
            return self.blob(key, v.bytes_value)
        if depth > 16:
            raise DecodeError("attribute_too_deep", f"attribute {key!r} nests deeper than 16 levels")
        if which == "array_value":
            return [self.value(key, x, depth + 1) for x in v.array_value.values]
        if which == "kvlist_value":
            return {kv.key: self.value(key, kv.value, depth + 1) for kv in v.kvlist_value.values}
        return None

    def attrs(self, kvs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        limit4 = self.limits.max_attribute_bytes // 4
        keys = _KEYS
        for kv in kvs:
            key = kv.key
            key = keys.get(key) or _intern_key(key)
            v = kv.value
            # The common case, inline: a non-empty string_value can only be the set member (an unset
            # one reads ""), so no WhichOneof call; at most 4 bytes per character fits the limit.
            if (s := v.string_value) and len(s) <= limit4:
                out[key] = s
            elif s:  # a long string: reuse it, reading string_value again would copy it again
                out[key] = self.string(key, s)
            elif v.WhichOneof("value") == "int_value":  # the next most common (token counts, ports)
                out[key] = v.int_value
            else:
                out[key] = self.value(key, v)
        return out

    def string(self, key: str, s: str) -> str:
        """``s`` if its UTF-8 form fits the limit, else its longest prefix that does, marked. Never
        encodes the whole of a long string: a 10 MB value costs a 256 KB slice here, not another
        10 MB copy (the huge-input test measures the worker's peak RSS)."""
        limit = self.limits.max_attribute_bytes
        if len(s) * 4 <= limit:
            return s
        if len(s) <= limit:  # fits in characters; in bytes only if the encoding does
            if len(s.encode("utf-8")) <= limit:
                return s
        elif s.isascii():  # one byte per character, and isascii() is O(1) for a str
            self._oversize(key, len(s))
            return s[:limit] + TRUNCATION_MARK
        self._oversize(key, _utf8_len(s))
        return s[:limit].encode("utf-8")[:limit].decode("utf-8", "ignore") + TRUNCATION_MARK

    def blob(self, key: str, b: bytes) -> bytes:
        """``b``, or its first ``max_attribute_bytes`` bytes, recorded as truncated (no mark appended)."""
        if len(b) > self.limits.max_attribute_bytes:
            self._oversize(key, len(b))
            b = b[: self.limits.max_attribute_bytes]
        return b

    def _oversize(self, key: str, size: int) -> None:
        if self.limits.oversize_attribute_policy == "dead_letter":
            raise DecodeError(
                "attribute_too_large",
                f"attribute {key!r} is {size} bytes (limit {self.limits.max_attribute_bytes})",
            )
        if key not in self.truncated:
            self.truncated.append(key)


def _utf8_len(s: str, chunk: int = 1 << 20) -> int:
    """Bytes in the UTF-8 form of ``s``, encoding at most ``chunk`` characters at a time."""
    return sum(len(s[i : i + chunk].encode("utf-8")) for i in range(0, len(s), chunk))


# Attribute keys repeat on every span: one shared string per key keeps open traces smaller (50k open
# traces hold millions of keys) and makes dict lookups hit on identity. Bounded: keys are untrusted.
_KEYS: dict[str, str] = {}
_MAX_KEYS = 20_000


def _intern_key(key: str) -> str:
    if len(_KEYS) < _MAX_KEYS and len(key) <= 256:
        _KEYS[key] = key
    return key


def _bad_id(raw: bytes, size: int, what: str, ri: int, si: int, pi: int) -> NoReturn:
    """The error path of the id checks inlined in :func:`decode_request`: always raises."""
    shown = raw.hex() if len(raw) <= 64 else raw[:32].hex() + "…"
    raise DecodeError(f"invalid_{what}", f"{_where(ri, si, pi)}: {what} must be {size} non-zero bytes, got {shown!r}")


def _where(ri: int, si: int, pi: int) -> str:
    return f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"


# new_span builds each span's complete field dict itself (``Span.wrap``, ~2 µs/span less
# than ``Span.fast`` with keywords), keeping the key order ``Span.fast`` gave (``model_dump`` follows
# it): fields with a static default first, in declaration order (the raw layer's, then the
# normalized layer's as placeholders), then the fields with a default factory. normalize_new
# overwrites every placeholder; usage / finish_reasons / exceptions are None until then.
_RAW_STATIC = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "start_ns", "end_ns", "status_code",
    "status_message", "scope_name", "scope_version",
)  # fmt: skip
_FACTORY_FIELDS = (
    "attributes", "events", "resource_attributes", "truncated_attributes", "usage", "finish_reasons", "exceptions"
)  # fmt: skip
#: the normalized layer's fields with their defaults, in declaration order: what a span built from
#: its raw layer holds until normalize_new fills them (also stream.judge_envelope)
NORMALIZED_PLACEHOLDERS = {
    name: f.default
    for name, f in Span.model_fields.items()
    if f.default_factory is None and name not in _RAW_STATIC
}
if (
    [n for n, f in Span.model_fields.items() if f.default_factory is None][: len(_RAW_STATIC)] != list(_RAW_STATIC)
    or {n for n, f in Span.model_fields.items() if f.default_factory is not None} != set(_FACTORY_FIELDS)
):  # a changed Span must not silently decode into a different shape
    raise ImportError("schemas.decode: Span's fields changed; update _RAW_STATIC / _FACTORY_FIELDS and new_span")


def new_span(trace_id: str, span_id: str, parent: str | None, name: str, otel_kind: str, start: int, end: int,
             status: StatusCode, status_message: str, scope_name: str, scope_version: str,
             attributes: dict[str, Any], events: tuple[SpanEvent, ...], resource: dict[str, Any],
             truncated: tuple[str, ...]) -> Span:  # fmt: skip
    """A decoded span from its raw layer, normalized (``Span.wrap`` over the complete field dict,
    ~2 µs less per span than ``Span.fast`` with keywords). Both decoders build spans here."""
    return normalize_new(Span.wrap({
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "otel_kind": otel_kind,
        "start_ns": start,
        "end_ns": end,
        "status_code": status,
        "status_message": status_message,
        "scope_name": scope_name,
        "scope_version": scope_version,
        **NORMALIZED_PLACEHOLDERS,
        "attributes": attributes,
        "events": events,
        "resource_attributes": resource,
        "truncated_attributes": truncated,
        "usage": None,  # usage, finish_reasons, exceptions: set by normalize_new
        "finish_reasons": None,
        "exceptions": None,
    }))


def decode_request(req: ExportTraceServiceRequest, limits: Limits = DEFAULT_LIMITS) -> list[Span]:
    spans: list[Span] = []
    conv = _AttrConverter(limits)  # one per request; ``truncated`` is reset per resource and span
    for ri, rs in enumerate(req.resource_spans):
        conv.truncated = []
        resource = conv.attrs(rs.resource.attributes)
        res_truncated = tuple([f"resource.{k}" for k in conv.truncated])
        for si, ss in enumerate(rs.scope_spans):
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for pi, ps in enumerate(ss.spans):
                # ids: the valid case inline, _bad_id raises (same checks as before, per field)
                raw = ps.trace_id
                trace_id = raw.hex() if len(raw) == 16 and raw != _ZERO_TRACE else _bad_id(raw, 16, "trace_id", ri, si, pi)
                raw = ps.span_id
                span_id = raw.hex() if len(raw) == 8 and raw != _ZERO_SPAN else _bad_id(raw, 8, "span_id", ri, si, pi)
                raw = ps.parent_span_id
                parent = (
                    (raw.hex() if len(raw) == 8 and raw != _ZERO_SPAN else _bad_id(raw, 8, "parent_span_id", ri, si, pi))
                    if raw
                    else None
                )
                start, end = ps.start_time_unix_nano, ps.end_time_unix_nano
                if start == 0:
                    raise DecodeError("missing_start_time", f"{_where(ri, si, pi)} span {span_id}: start time is 0")
                if end < start:
                    raise DecodeError(
                        "span_end_before_start", f"{_where(ri, si, pi)} span {span_id}: end {end} < start {start}"
                    )
                if end > _MAX_NS:  # unrepresentable in DateTime64(9): the insert would fail forever
                    raise DecodeError(
                        "span_time_out_of_range", f"{_where(ri, si, pi)} span {span_id}: end {end} > {_MAX_NS}"
                    )
                conv.truncated = truncated = []
                attributes = conv.attrs(ps.attributes)
                pe = ps.events
                events = (
                    tuple([
                        SpanEvent.fast(name=e.name, time_ns=e.time_unix_nano, attributes=conv.attrs(e.attributes))
                        for e in pe
                    ])
                    if pe
                    else ()
                )
                kind = ps.kind
                status = ps.status
                code = status.code
                spans.append(new_span(
                    trace_id, span_id, parent, ps.name, _OTEL_KIND[kind] if 0 <= kind < len(_OTEL_KIND) else "unspecified",
                    start, end, _STATUS[code] if 0 <= code < 3 else StatusCode.UNSET, status.message, scope_name,
                    scope_version, attributes, events, resource,
                    (*truncated, *res_truncated) if truncated or res_truncated else (),
                ))  # fmt: skip
    if not spans:
        raise DecodeError("no_spans", "the message holds no spans (wrong message type or empty request)")
    return spans


def parse_message(value: bytes | None, encoding: Encoding = "auto", limits: Limits = DEFAULT_LIMITS) -> ExportTraceServiceRequest:
    """Size-check and parse one Kafka message value (no span validation yet)."""
    if value is None or len(value) == 0:
        raise DecodeError("empty_message", "message value is empty (tombstone?)")
    if len(value) > limits.max_message_bytes:
        raise DecodeError("message_too_large", f"{len(value)} bytes > max_message_bytes {limits.max_message_bytes}")
    return parse_request(value, encoding)


def decode(
    value: bytes | None, encoding: Encoding = "auto", limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Span], ExportTraceServiceRequest | None]:
    """Decode one Kafka message value: its spans, and its protobuf request — ``None`` when OTLP/JSON
    was read straight into spans (:mod:`schemas.otlp_json_spans`; ``parse_message`` gives the
    request if it is needed). Raises :class:`DecodeError` for anything unacceptable."""
    if value and len(value) <= limits.max_message_bytes and is_json(value, encoding):
        from schemas.otlp_json_spans import decode_otlp_json  # it builds on this module's parts

        spans = decode_otlp_json(value, limits)
        if spans is not None:
            return spans, None
    req = parse_message(value, encoding, limits)
    return decode_request(req, limits), req


def decode_message(value: bytes | None, encoding: Encoding = "auto", limits: Limits = DEFAULT_LIMITS) -> list[Span]:
    """Decode one Kafka message value; raise :class:`DecodeError` for anything unacceptable."""
    return decode(value, encoding, limits)[0]
