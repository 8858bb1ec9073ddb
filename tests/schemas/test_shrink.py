"""schemas/shrink.py: a span's values shortened losslessly for the decoder's limit, and cut to fit
a repartition record when that is not enough, named so the reading worker records them."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import TRUNCATION_MARK, decode_message
from schemas.shrink import CUT_KEYS, MIN_KEPT_BYTES, fit_span, shorten_values, take_cut_keys
from schemas.split import split_by_trace
from tests.factories import SpanSpec, genai_trace, request


def big_trace(rng: random.Random, n: int, content: int) -> list[SpanSpec]:
    trace = genai_trace(rng, n)
    for i, s in enumerate(trace):
        s.attrs["gen_ai.input.messages"] = f"{i:04d}" + "x" * content
    return trace


def test_shortening_counts_values_and_leaves_a_part_under_the_limit_as_it_came() -> None:
    rng = random.Random(14)
    trace = big_trace(rng, 3, 100)
    trace[1].attrs["big"] = "b" * 10_000
    trace[1].attrs["list"] = ["c" * 10_000, "d", b"e" * 10_000]
    req = request(trace)
    original = req.SerializeToString()
    assert split_by_trace(req, max_bytes=100_000, max_value_bytes=1_000)[trace[0].trace_id.hex()] == [original]
    assert req.SerializeToString() == original  # the caller's request is never changed
    copy = ExportTraceServiceRequest.FromString(original)
    assert shorten_values(copy, 1_000) == 3
    assert shorten_values(copy, 1_000) == 0  # already short: idempotent
    values = {kv.key: kv.value for kv in copy.resource_spans[0].scope_spans[0].spans[1].attributes}
    assert values["big"].string_value == "b" * 1_001
    wide = ExportTraceServiceRequest.FromString(original)
    attrs = wide.resource_spans[0].scope_spans[0].spans[1].attributes
    attrs.add(key="wide").value.string_value = "€" * 600  # 1,800 bytes in 600 characters
    assert shorten_values(wide, 1_000) == 4
    assert attrs[-1].value.string_value == "€" * 334  # the 333 the decoder keeps (999 bytes), and one
    assert [len(v.string_value or v.bytes_value) for v in values["list"].array_value.values] == [1_001, 1, 1_001]


def test_fit_span_cuts_the_largest_values_first_and_only_as_far_as_needed() -> None:
    rng = random.Random(16)
    span = genai_trace(rng, 2)[1]
    span.attrs.update({"wide": "€" * 6_000, "blob": rng.randbytes(15_000), "small": "s" * 500,
                       "nested": ["n" * 4_000, {"deep": "d" * 12_000}]})  # fmt: skip
    pb = span.to_pb()
    event = pb.events.add(name="exception", time_unix_nano=span.start)
    event.attributes.add(key="exception.stacktrace").value.string_value = "frame\n" * 2_000  # 12 KB
    before = {kv.key: kv.value.SerializeToString() for kv in pb.attributes}
    cut = fit_span(pb, 30_000)
    assert pb.ByteSize() <= 30_000
    assert cut[:2] == ["wide", "blob"]  # 18,000 and 15,000 bytes: the largest first
    attrs = {kv.key: kv.value for kv in pb.attributes}
    assert [v.string_value for v in attrs[CUT_KEYS].array_value.values] == cut
    wide = attrs["wide"].string_value
    assert wide.endswith(TRUNCATION_MARK) and set(wide[: -len(TRUNCATION_MARK)]) == {"€"}  # whole characters
    assert len(wide.encode()) >= MIN_KEPT_BYTES - 3
    for key in ("small", *(k for k in ("nested", "blob") if k not in cut)):
        assert attrs[key].SerializeToString() == before[key]  # not cut: as it was


def test_fit_span_leaves_a_span_that_fits_or_that_cannot_fit() -> None:
    span = genai_trace(random.Random(17), 2)[1]
    span.attrs["big"] = "b" * 20_000
    pb = span.to_pb()
    whole = pb.SerializeToString()
    assert fit_span(pb, 50_000) == [] and pb.SerializeToString() == whole  # fits already
    span.name = "n" * 40_000  # no value to cut makes it fit: nothing is cut
    pb = span.to_pb()
    whole = pb.SerializeToString()
    assert fit_span(pb, 30_000) == [] and pb.SerializeToString() == whole


def test_take_cut_keys_moves_the_names_into_truncated_attributes() -> None:
    span = genai_trace(random.Random(18), 2)[1]
    span.attrs.update({"a": "a" * 50_000, "b": "b" * 5_000})
    pb = span.to_pb()
    assert fit_span(pb, 20_000) == ["a"]
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(pb)
    (decoded,) = decode_message(req.SerializeToString())
    assert decoded.truncated_attributes == () and CUT_KEYS in decoded.attributes
    assert take_cut_keys([decoded]) == 1 and take_cut_keys([decoded]) == 0
    assert decoded.truncated_attributes == ("a",) and CUT_KEYS not in decoded.attributes
    assert decoded.attributes["a"].endswith(TRUNCATION_MARK) and decoded.attributes["b"] == "b" * 5_000
    decoded.attributes[CUT_KEYS] = "not a list"  # from a foreign writer: removed, names nothing
    decoded.truncated_attributes = ("x",)
    assert take_cut_keys([decoded]) == 1 and decoded.truncated_attributes == ("x",)
