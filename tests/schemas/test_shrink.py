"""schemas/shrink.py: a span's values shortened losslessly for the decoder's limit, and cut to fit
a repartition record when that is not enough, named so the reading worker records them."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import TRUNCATION_MARK, decode_message
from schemas.shrink import (
    CUT_KEYS,
    DROPPED_ATTRIBUTES,
    DROPPED_EVENTS,
    MIN_KEPT_BYTES,
    fit_span,
    shorten_values,
    take_cut_keys,
)
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
    fitted = fit_span(pb, 30_000)
    cut = list(fitted.cut)
    assert pb.ByteSize() <= 30_000 and fitted.dropped_events == fitted.dropped_attributes == 0
    assert cut[:2] == ["wide", "blob"]  # 18,000 and 15,000 bytes: the largest first
    attrs = {kv.key: kv.value for kv in pb.attributes}
    assert [v.string_value for v in attrs[CUT_KEYS].array_value.values] == cut
    wide = attrs["wide"].string_value
    assert wide.endswith(TRUNCATION_MARK) and set(wide[: -len(TRUNCATION_MARK)]) == {"€"}  # whole characters
    assert len(wide.encode()) >= MIN_KEPT_BYTES - 3
    for key in ("small", *(k for k in ("nested", "blob") if k not in cut)):
        assert attrs[key].SerializeToString() == before[key]  # not cut: as it was


def test_fit_span_leaves_a_span_that_fits_and_cuts_a_name_no_value_cut_could_make_fit() -> None:
    span = genai_trace(random.Random(17), 2)[1]
    span.attrs["big"] = "b" * 20_000
    pb = span.to_pb()
    whole = pb.SerializeToString()
    assert not fit_span(pb, 50_000) and pb.SerializeToString() == whole  # fits already
    span.name = "n" * 40_000  # no value cut makes it fit: the name is cut, the values stay whole
    pb = span.to_pb()
    pb.links.add(trace_id=span.trace_id, span_id=span.span_id)  # neither is stored: cleared first
    pb.trace_state = "vendor=" + "x" * 200
    fitted = fit_span(pb, 30_000)
    assert fitted.cut == ("span.name",) and str(fitted) == "span.name" and pb.ByteSize() <= 30_000
    assert pb.name == "n" * (MIN_KEPT_BYTES - 14) + TRUNCATION_MARK and len(pb.name.encode()) == MIN_KEPT_BYTES
    assert {kv.key: kv.value.string_value for kv in pb.attributes}["big"] == "b" * 20_000
    assert not pb.links and not pb.trace_state


def test_fit_span_cuts_a_status_message_and_drops_the_newest_events_keeping_exceptions() -> None:
    """A streaming model's span: an error body as its status message, 20,000 chunk events, the
    exception it ended with. Cutting values cannot be enough: the status message is cut, the
    values cut down to 256 bytes, then the newest chunk events dropped, as the OTel SDK drops
    events over its limit, and counted; the exception event is kept (as far as it fits)."""
    span = genai_trace(random.Random(19), 2)[1]
    pb = span.to_pb()
    pb.status.message = "upstream said: " + "E" * 3_000_000
    for i in range(20_000):
        pb.events.add(name="chunk", time_unix_nano=i).attributes.add(key="gen_ai.content").value.string_value = f"t{i} "
    pb.events.add(name="exception").attributes.add(key="exception.stacktrace").value.string_value = "frame\n" * 50_000
    before = pb.ByteSize()
    fitted = fit_span(pb, 200_000)
    assert before > 3_000_000 and 190_000 < pb.ByteSize() <= 200_000  # no more dropped than needed
    assert fitted.cut == ("span.status_message", "exception.stacktrace") and fitted.dropped_attributes == 0
    assert fitted.dropped_events == pb.dropped_events_count == 20_001 - len(pb.events) > 10_000
    assert pb.status.message.startswith("upstream said: E") and pb.status.message.endswith(TRUNCATION_MARK)
    assert [e.attributes[0].value.string_value for e in pb.events[:-1]] == [f"t{i} " for i in range(len(pb.events) - 1)]
    assert pb.events[-1].name == "exception" and len(pb.events[-1].attributes[0].value.string_value.encode()) == 256
    attrs = {kv.key: kv.value for kv in pb.attributes}
    assert attrs[DROPPED_EVENTS].int_value == fitted.dropped_events and DROPPED_ATTRIBUTES not in attrs
    assert [v.string_value for v in attrs[CUT_KEYS].array_value.values] == list(fitted.cut)
    assert str(fitted) == f"span.status_message, exception.stacktrace; {fitted.dropped_events} events dropped"


def test_fit_span_cuts_thousands_of_attributes_to_256_bytes_then_drops_the_largest() -> None:
    """Flattened messages of a long conversation (OpenInference's ``llm.input_messages.N...``):
    every content cut to 1 KB is still over; cut to 256 bytes, then the largest dropped, their
    keys no longer named as cut, their number counted."""
    span = genai_trace(random.Random(20), 2)[1]
    for i in range(5_000):
        span.attrs[f"llm.input_messages.{i}.message.content"] = f"{i:05d}" + "c" * (1_200 + i % 7)
    pb = span.to_pb()
    fitted = fit_span(pb, 900_000)
    assert pb.ByteSize() <= 900_000 and fitted.dropped_events == 0
    attrs = {kv.key: kv.value for kv in pb.attributes}
    kept = [k for k in attrs if k.startswith("llm.input_messages.")]
    assert fitted.dropped_attributes == pb.dropped_attributes_count == 5_000 - len(kept) > 0
    assert attrs[DROPPED_ATTRIBUTES].int_value == fitted.dropped_attributes
    assert set(fitted.cut) == set(kept) and [v.string_value for v in attrs[CUT_KEYS].array_value.values] == list(fitted.cut)
    assert all(len(attrs[k].string_value.encode()) == 256 and attrs[k].string_value.endswith(TRUNCATION_MARK) for k in kept)
    assert "gen_ai.operation.name" in attrs  # small ones are the last to go


def test_fit_span_reaches_any_room_of_a_few_kilobytes() -> None:
    rng = random.Random(21)
    for _ in range(20):
        span = genai_trace(rng, 2)[1]
        span.name = "n" * rng.randrange(10, 50_000)
        for i in range(rng.randrange(0, 400)):
            span.attrs[f"a{i}"] = rng.choice(["x" * rng.randrange(1, 3_000), rng.randbytes(rng.randrange(1, 3_000)),
                                              [f"{i}" * 2_000, {"k": "v" * 3_000}], rng.randrange(10**9)])  # fmt: skip
        pb = span.to_pb()
        pb.status.message = "s" * rng.randrange(0, 50_000)
        for i in range(rng.randrange(0, 3_000)):
            pb.events.add(name=rng.choice(["chunk", "exception"])).attributes.add(key="c").value.string_value = "e" * i
        room = rng.randrange(4_000, 100_000)
        fitted = fit_span(pb, room)
        assert pb.ByteSize() <= room, (room, pb.ByteSize(), str(fitted))
        assert bool(fitted) or not fitted.cut


def test_take_cut_keys_moves_the_names_into_truncated_attributes() -> None:
    span = genai_trace(random.Random(18), 2)[1]
    span.attrs.update({"a": "a" * 50_000, "b": "b" * 5_000})
    pb = span.to_pb()
    assert fit_span(pb, 20_000).cut == ("a",)
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
