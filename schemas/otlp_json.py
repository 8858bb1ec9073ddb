"""OTLP/JSON <-> protobuf ``ExportTraceServiceRequest``.

OTLP/JSON is protobuf's JSON mapping with two differences that matter (OTLP spec, "JSON Protobuf
Encoding"): trace and span ids are hex strings, not base64; and field names are lowerCamelCase
(protobuf's parser also accepts those). int64 values may be strings and enums are integers, both
of which ``google.protobuf.json_format`` already accepts. So parsing = rewrite the id fields from
hex to base64, then let ``json_format`` do the rest.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_HEX = frozenset("0123456789abcdefABCDEF")


# json_format's nesting limit that takes exactly the messages protobuf's own parser (upb, limit 100)
# takes: its default (100) counts one level more, so a link attribute nested ~30 levels deep, which
# the protobuf decoder reads and drops, was refused in OTLP/JSON (tests/schemas/test_otlp_json.py)
MAX_MESSAGE_DEPTH = 101


class OtlpJsonError(ValueError):
    pass


def _ids(obj: dict[str, Any], convert: Any) -> None:
    for key in _ID_FIELDS:
        if key in obj and obj[key] is not None:
            obj[key] = convert(key, obj[key])


def _hex_to_b64(key: str, value: Any) -> str:
    if not isinstance(value, str) or (value and not set(value) <= _HEX) or len(value) % 2:
        raise OtlpJsonError(f"{key} is not a hex string: {str(value)[:80]!r}")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _b64_to_hex(_key: str, value: str) -> str:
    return base64.b64decode(value).hex()


def _walk_spans(doc: dict[str, Any], convert: Any) -> None:
    resource_spans = doc.get("resourceSpans", doc.get("resource_spans", []))
    if not isinstance(resource_spans, list):
        raise OtlpJsonError("resourceSpans must be a list")
    for rs in resource_spans:
        if not isinstance(rs, dict):
            raise OtlpJsonError("resourceSpans entries must be objects")
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])) or []:
            if not isinstance(ss, dict):
                raise OtlpJsonError("scopeSpans entries must be objects")
            for span in ss.get("spans", []) or []:
                if not isinstance(span, dict):
                    raise OtlpJsonError("spans entries must be objects")
                _ids(span, convert)
                for link in span.get("links", []) or []:
                    if isinstance(link, dict):
                        _ids(link, convert)


def parse_otlp_json(data: bytes | str) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON bytes; raise ValueError (OtlpJsonError / ParseError / UnicodeDecodeError)."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise OtlpJsonError("top level must be a JSON object")
    _walk_spans(doc, _hex_to_b64)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True, max_recursion_depth=MAX_MESSAGE_DEPTH)
    except ArithmeticError as exc:  # e.g. Infinity / 1e400 for an integer field: OverflowError
        raise OtlpJsonError(f"number out of range: {exc}") from None
    return req


def to_otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """Serialize as the Collector's otlp_json marshaler does (hex ids, camelCase, enums as ints)."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    _walk_spans(doc, _b64_to_hex)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
