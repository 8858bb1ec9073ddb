"""Decoding Kafka values exactly as the Collector writes them; every rejection has a reason."""

from __future__ import annotations

import gc
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import TRUNCATION_MARK, DecodeError, Limits, _utf8_len, decode, decode_message, sniff_encoding
from schemas.model import Span
from schemas.normalize import normalize_span
from schemas.otlp_json import parse_otlp_json, to_otlp_json
from tests.factories import SpanSpec, genai_trace, otlp_json, proto, request


def test_proto_and_json_decode_to_identical_spans() -> None:
    rng = random.Random(1)
    spans = [s for _ in range(3) for s in genai_trace(rng, 6)]
    spans[2].attrs.update({"n": 3, "f": 1.5, "b": True, "raw": b"\x00\x01", "list": ["x", "y"]})
    from_proto = decode_message(proto(spans))
    from_json = decode_message(otlp_json(spans))
    assert from_proto == from_json
    assert len(from_proto) == 18 and len({s.trace_id for s in from_proto}) == 3
    assert from_proto[2].attributes["raw"] == b"\x00\x01" and from_proto[2].attributes["n"] == 3


def test_json_ids_are_hex_and_ints_may_be_strings() -> None:
    rng = random.Random(2)
    spans = genai_trace(rng, 2)
    text = otlp_json(spans).decode()
    assert spans[0].trace_id.hex() in text  # hex, not base64
    patched = text.replace(f'"startTimeUnixNano":"{spans[0].start}"', f'"startTimeUnixNano":{spans[0].start}')
    assert decode_message(patched.encode())[0].start_ns == spans[0].start


def test_sniffing() -> None:
    assert sniff_encoding(b'{"resourceSpans":[]}') == "otlp_json"
    assert sniff_encoding(b' \r\n{"resourceSpans":[]}') == "otlp_json"
    assert sniff_encoding(b"\x0c{}") == "otlp_proto"  # not JSON whitespace
    assert sniff_encoding(proto(genai_trace(random.Random(0), 1))) == "otlp_proto"


def _resource_spans_of(size: int) -> bytes:
    """A protobuf request whose first ResourceSpans is ``size`` bytes long: it starts with
    0x0A (field 1, length-delimited) and the length byte."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.schema_url = "x"
    rs.schema_url = "x" * (size - len(rs.SerializeToString()) + 1)
    value = req.SerializeToString()
    assert value[:2] == b"\n" + bytes([size])
    return value


def test_a_leading_newline_is_json_only_when_protobuf_cannot_read_it() -> None:
    # 0x0A starts every protobuf request: ``\n{`` is one whose first ResourceSpans is 123 bytes long
    ambiguous = _resource_spans_of(ord("{"))
    assert sniff_encoding(ambiguous) == "otlp_proto"
    with pytest.raises(DecodeError) as exc:
        decode_message(ambiguous)
    assert exc.value.reason == "no_spans"  # read as the (empty) protobuf request it is
    spans = genai_trace(random.Random(0), 3)
    for lead in (b"\n", b"\n\r\n  ", b"\n\n"):
        value = lead + otlp_json(spans)
        assert sniff_encoding(value) == "otlp_json"
        decoded, req = decode(value)
        assert req is None  # read straight into spans, not through protobuf's JSON parser
        assert decoded == decode_message(otlp_json(spans)) == decode_message(proto(spans))
    assert sniff_encoding(b"\n\x7b") == "otlp_json"  # protobuf cannot read it: neither can JSON
    with pytest.raises(DecodeError) as exc:
        decode_message(b"\n\x7b")
    assert exc.value.reason == "undecodable" and "otlp_json" in exc.value.detail


def _bad_id(**kw: bytes) -> bytes:
    rng = random.Random(3)
    s = SpanSpec(rng.randbytes(16), rng.randbytes(8))
    for k, v in kw.items():
        setattr(s, k, v)
    return proto([s])


@pytest.mark.parametrize(
    "value,reason",
    [
        (b"", "empty_message"),
        (b"\xff\xfe\xfd", "undecodable"),
        (b"{not json", "undecodable"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "undecodable"),
        (b'{"resourceSpans": []}', "no_spans"),
        (_bad_id(trace_id=bytes(16)), "invalid_trace_id"),
        (_bad_id(trace_id=b"\x01" * 15), "invalid_trace_id"),
        (_bad_id(span_id=b"\x01" * 9), "invalid_span_id"),
        (_bad_id(parent=b"\x01" * 3), "invalid_parent_span_id"),
    ],
    ids=["empty", "garbage", "bad-json", "non-hex-id", "no-spans", "zero-trace", "short-trace", "long-span", "bad-parent"],
)
def test_rejections_carry_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_message(value)
    assert exc.value.reason == reason


def test_span_times_validated() -> None:
    rng = random.Random(4)
    s = SpanSpec(rng.randbytes(16), rng.randbytes(8), start=10, end=5)
    with pytest.raises(DecodeError, match="span_end_before_start"):
        decode_message(proto([s]))
    s.start, s.end = 0, 5
    with pytest.raises(DecodeError, match="missing_start_time"):
        decode_message(proto([s]))


def test_message_size_limit() -> None:
    value = proto(genai_trace(random.Random(5), 3))
    with pytest.raises(DecodeError, match="message_too_large"):
        decode_message(value, limits=Limits(max_message_bytes=len(value) - 1))


def test_invalid_utf8_in_a_string_field_is_repaired_with_the_original_kept() -> None:
    rng = random.Random(6)
    value = proto([SpanSpec(rng.randbytes(16), rng.randbytes(8), name="MARKERMARKER")])
    (span,) = decode_message(value.replace(b"MARKERMARKER", b"MARKER\xc3\x28RKER"))  # same length
    assert span.name == "MARKER\ufffd(RKER"
    # the original bytes, kept as a bytes value (stored as {"$bytes": base64} like any OTLP bytes value)
    assert span.attributes["tracejudge.invalid_utf8"] == {"name": b"MARKER\xc3\x28RKER"}


def test_a_string_length_prefix_past_the_message_end_is_undecodable() -> None:
    rng = random.Random(6)
    value = proto([SpanSpec(rng.randbytes(16), rng.randbytes(8), name="MARKERMARKER")])
    with pytest.raises(DecodeError, match="undecodable"):
        decode_message(value.replace(b"MARKERMARKER", b"MARKERMARKE"))


def test_json_round_trip_is_stable() -> None:
    req = request(genai_trace(random.Random(8), 5))
    assert parse_otlp_json(to_otlp_json(req)) == req


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes_never_crash(value: bytes) -> None:
    try:
        decode_message(value)
    except DecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_messages_never_crash(data: st.DataObject) -> None:
    base = bytearray(proto(genai_trace(random.Random(9), 4)))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    encoded = bytes(base)
    for value in (encoded, b"{" + encoded):
        try:
            decode_message(value)
        except DecodeError:
            pass


def test_decoded_field_dict_matches_span_fast() -> None:
    """decode_request builds each span's field dict itself (``Span.wrap``); ``model_dump`` and
    ``repr`` follow the dict's key order, so it must be the order ``Span.fast`` gave."""
    rng = random.Random(4)
    specs = genai_trace(rng, 3)
    specs[1].error = True
    for span in decode_message(proto(specs)):
        d = span.__dict__
        raw = [
            "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "start_ns", "end_ns", "status_code",
            "status_message", "attributes", "events", "resource_attributes", "scope_name", "scope_version",
            "truncated_attributes",
        ]  # fmt: skip
        via_fast = normalize_span(Span.fast(**{k: d[k] for k in raw}, usage=None, finish_reasons=None, exceptions=None))
        assert list(d) == list(via_fast.__dict__)
        assert span.model_dump() == via_fast.model_dump() and repr(span) == repr(via_fast)


@pytest.mark.parametrize("encode", [proto, otlp_json])
def test_open_spans_leave_the_garbage_collector_little_to_walk(encode: Any) -> None:
    """A worker holds every span of its open traces: what a decoded span holds besides its field
    dict, its attribute dict and its token usage must not stay GC-tracked. Each young collection
    walks every tracked object (the four sequence fields were four lists per span, most of them
    empty: the shared empty tuple now, or a tuple of strings untracked at its first collection)."""
    specs = genai_trace(random.Random(9), 6)
    specs[1].attrs["gen_ai.response.finish_reasons"] = ["stop"]
    spans = decode_message(encode(specs))
    assert spans[1].finish_reasons == ("stop",)
    gc.collect()
    for s in spans:
        held = {"events": s.events, "truncated_attributes": s.truncated_attributes,
                "exceptions": s.exceptions, "finish_reasons": s.finish_reasons}  # fmt: skip
        assert [k for k, v in held.items() if gc.is_tracked(v)] == []
        assert Span.model_validate(s.model_dump()) == s  # validation gives the same tuples


@pytest.mark.parametrize(
    "value,stored",
    [
        ("a" * 64, "a" * 64),  # exactly the limit
        ("a" * 65, "a" * 64 + TRUNCATION_MARK),  # ASCII: one byte per character
        ("é" * 32, "é" * 32),  # 64 bytes in 32 characters
        ("é" * 33, "é" * 32 + TRUNCATION_MARK),  # fewer characters than the limit, more bytes
        ("a" + "é" * 40, "a" + "é" * 31 + TRUNCATION_MARK),  # the cut would split a character: dropped
        ("😀" * 100, "😀" * 16 + TRUNCATION_MARK),  # more characters than the limit, 4 bytes each
        ("x" * 10 + "😀" * 5, "x" * 10 + "😀" * 5),  # under a quarter of the limit in characters
    ],
)
def test_a_long_attribute_is_cut_at_the_byte_limit_on_a_character_boundary(value: str, stored: str) -> None:
    rng = random.Random(11)
    spec = SpanSpec(rng.randbytes(16), rng.randbytes(8), attrs={"v": value, "nested": ["ok", value], "short": "s"})
    (span,) = decode_message(proto([spec]), limits=Limits(max_attribute_bytes=64))
    assert span.attributes["v"] == stored and span.attributes["nested"] == ["ok", stored]
    assert span.attributes["short"] == "s"
    assert span.truncated_attributes == (("v", "nested") if stored != value else ())
    assert len(stored.removesuffix(TRUNCATION_MARK).encode()) <= 64


@pytest.mark.parametrize("value", ["a" * 65, "é" * 33, "😀" * 100, "a" * 50 + "😀" * 3000])
def test_dead_letter_policy_reports_the_attribute_s_exact_utf8_size(value: str) -> None:
    rng = random.Random(12)
    spec = SpanSpec(rng.randbytes(16), rng.randbytes(8), attrs={"v": value})
    with pytest.raises(DecodeError) as err:
        decode_message(proto([spec]), limits=Limits(max_attribute_bytes=64, oversize_attribute_policy="dead_letter"))
    assert err.value.reason == "attribute_too_large"
    assert f"is {len(value.encode())} bytes (limit 64)" in err.value.detail
    assert _utf8_len(value, chunk=7) == len(value.encode())  # counted a chunk at a time, never whole
