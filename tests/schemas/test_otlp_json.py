"""OTLP/JSON takes what protobuf takes: the same request, either encoding, decodes alike."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import DecodeError, decode
from schemas.otlp_json import to_otlp_json


def nested(where: str, kinds: list[bool]) -> ExportTraceServiceRequest:
    """One span whose attribute at ``where`` nests a kvlist (True) or an array (False) per level."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    ss = rs.scope_spans.add()
    span = ss.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    attrs = {"link": lambda: span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8).attributes,
             "scope": lambda: ss.scope.attributes, "event": lambda: span.events.add(name="e").attributes,
             "resource": lambda: rs.resource.attributes, "span": lambda: span.attributes}[where]()  # fmt: skip
    value = attrs.add(key="k").value
    for kvlist in kinds:
        value = value.kvlist_value.values.add(key="k").value if kvlist else value.array_value.values.add()
    value.string_value = "x"
    return req


def outcome(value: bytes, encoding: str) -> object:
    try:
        return [s.model_dump() for s in decode(value, encoding)[0]]  # type: ignore[arg-type]
    except DecodeError as exc:
        return exc.reason


@pytest.mark.parametrize("where", ["link", "scope", "event", "resource", "span"])
def test_deep_nesting_is_taken_or_refused_alike_in_both_encodings(where: str) -> None:
    """Around protobuf's own nesting limit (~31 kvlist or ~47 array levels): a link's or the
    scope's attributes, which the decoder drops, decode in both encodings up to that limit; kept
    ones are refused in both (attribute_too_deep at 16, undecodable past the parser's limit)."""
    rng = random.Random(where)
    seen = set()
    for levels in range(26, 50):
        for _ in range(4):
            req = nested(where, [rng.random() < 0.5 for _ in range(levels)])
            proto = outcome(req.SerializeToString(), "otlp_proto")
            assert outcome(to_otlp_json(req), "otlp_json") == proto, (where, levels)
            seen.add(isinstance(proto, list))
    assert seen == ({True, False} if where in ("link", "scope") else {False})  # both sides of the limit met
