"""What one input message becomes: ingested here, or its request cut per trace for repartitioning."""

from __future__ import annotations

import random

import pytest

from schemas.decode import TRUNCATION_MARK, DecodeError
from schemas.shrink import CUT_KEYS
from stream.config import Settings
from stream.counters import Counters
from stream.dlq import InMessage
from stream.input_message import MessageReader, partitioned_by_trace
from tests.factories import genai_trace, otlp_json, proto, request


def reader() -> MessageReader:
    return MessageReader(Settings(), Counters())


@pytest.mark.parametrize("encode", [proto, otlp_json])
def test_keyed_by_its_trace_is_ingested_here_and_anything_else_is_split(encode: object) -> None:
    t, u = genai_trace(random.Random(1), 3), genai_trace(random.Random(2), 2)
    tid = t[0].trace_id.hex().encode()
    r = reader()
    spans, to_split = r.read(InMessage("in", 0, 0, tid.upper(), encode(t), None))  # type: ignore[operator]
    assert len(spans) == 3 and to_split is None
    for key in (None, b"x" * 32, tid):  # unkeyed, another key, or two traces under one key
        value = encode(t + u if key == tid else t)  # type: ignore[operator]
        spans, to_split = r.read(InMessage("in", 0, 1, key, value, None))
        assert to_split is not None and len(to_split.resource_spans) >= 1
        assert spans and r.read(InMessage("in", 0, 1, key, value, None), repartition=False)[1] is None
    assert r.counters.otlp_json_slow_messages == 0  # the Collector's shape, or protobuf


def test_partitioned_by_trace_needs_the_32_hex_trace_id_of_every_span() -> None:
    t = genai_trace(random.Random(3), 2)
    tid = t[0].trace_id.hex()
    spans = reader().read(InMessage("in", 0, 0, None, proto(t), None))[0]
    assert partitioned_by_trace(tid.encode(), spans) and partitioned_by_trace(tid.upper().encode(), spans)
    assert not partitioned_by_trace(None, spans) and not partitioned_by_trace(tid[:31].encode(), spans)


def test_undecodable_raises_for_the_caller_to_dead_letter() -> None:
    with pytest.raises(DecodeError) as exc:
        reader().read(InMessage("in", 0, 0, None, b"\xffjunk", None))
    assert exc.value.reason == "undecodable"


def test_json_off_the_fast_path_is_counted_with_or_without_a_leading_newline() -> None:
    t = genai_trace(random.Random(4), 3)
    fast = otlp_json(t)
    slow = fast.replace(b'"traceId"', b'"trace_id"')  # snake_case: protobuf's JSON parser takes it, slowly
    r = reader()
    want = r.read(InMessage("in", 0, 0, None, proto(t), None), repartition=False)[0]
    for offset, value in enumerate((fast, b"\n" + fast, slow, b"\n" + slow)):
        assert r.read(InMessage("in", 0, offset, None, value, None), repartition=False)[0] == want
    assert r.counters.otlp_json_slow_messages == 2


def test_repartition_records_are_keyed_by_trace_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(4)
    big, small = genai_trace(rng, 8), genai_trace(rng, 2)
    for s in big:
        s.attrs["gen_ai.input.messages"] = "m" * 6_000  # under max_attribute_bytes: kept whole, so the part is cut
    big[3].attrs["many"] = ["v" * 9_000] * 3  # 27 KB, each value under max_attribute_bytes: cut to fit
    big[5].name = "n" * 30_000  # not an attribute: the name itself is cut
    lone = genai_trace(rng, 1)  # its resource alone is over the limit: nothing to cut, it goes over
    settings = Settings(max_repartition_message_bytes=20_000, max_attribute_bytes=10_000)
    r = MessageReader(settings, Counters())
    req = request(big + small)
    heavy = request(lone).resource_spans[0]
    for k in range(3):
        heavy.resource.attributes.add(key=f"host.label.{k}").value.string_value = "r" * 9_000
    req.resource_spans.append(heavy)
    _, req = r.read(InMessage("in", 0, 0, None, req.SerializeToString(), None))
    assert req is not None
    records = r.repartition(req)
    assert {rec.topic for rec in records} == {settings.repartition_topic}
    keys = [rec.key for rec in records]
    assert keys.count(small[0].trace_id.hex().encode()) == keys.count(lone[0].trace_id.hex().encode()) == 1
    assert keys.count(big[0].trace_id.hex().encode()) == len(records) - 2 >= 3
    over = [rec for rec in records if len(rec.value) > 20_000]
    assert [rec.key for rec in over] == [lone[0].trace_id.hex().encode()] and r.counters.repartition_oversize_records == 1
    assert r.counters.repartition_spans_fitted == 2
    assert r.counters.repartition_parts_cut == len(records) - 3 and r.counters.repartitioned_messages == 1
    assert "over max_repartition_message_bytes 20000" in caplog.text and "cut to fit: many" in caplog.text
    assert "cut to fit: span.name" in caplog.text

    # read back from the repartition topic: every span once, the cut one saying what was cut
    back = [s for i, rec in enumerate(records) for s in r.read(InMessage(rec.topic, 0, i, rec.key, rec.value, None))[0]]
    assert sorted(s.span_id for s in back) == sorted(s.span_id.hex() for s in big + small + lone)
    fitted = next(s for s in back if s.span_id == big[3].span_id.hex())
    assert fitted.truncated_attributes == ("many",) and CUT_KEYS not in fitted.attributes
    values = fitted.attributes["many"]  # the largest cut only as far as needed, largest first
    cut = [v for v in values if v.endswith(TRUNCATION_MARK)]
    assert cut and all(v == "v" * (len(v) - len(TRUNCATION_MARK)) + TRUNCATION_MARK for v in cut)
    assert [v for v in values if v not in cut] == ["v" * 9_000] * (3 - len(cut))
    named = next(s for s in back if s.span_id == big[5].span_id.hex())
    assert named.truncated_attributes == ("span.name",) and named.name == "n" * (1_024 - 14) + TRUNCATION_MARK
    assert all(s.truncated_attributes == () for s in back if s not in (fitted, named))


def test_the_cut_keys_attribute_counts_only_on_the_repartition_topic() -> None:
    t = genai_trace(random.Random(5), 2)
    t[1].attrs[CUT_KEYS] = ["gen_ai.input.messages"]  # sent by anyone to the input topic: an ordinary attribute
    r = reader()
    spans, _ = r.read(InMessage("in", 0, 0, t[0].trace_id.hex().encode(), proto(t), None))
    assert spans[1].attributes[CUT_KEYS] == ["gen_ai.input.messages"] and spans[1].truncated_attributes == ()
    spans, _ = r.read(InMessage(Settings().repartition_topic, 0, 0, t[0].trace_id.hex().encode(), proto(t), None))
    assert CUT_KEYS not in spans[1].attributes and spans[1].truncated_attributes == ("gen_ai.input.messages",)


def test_the_repartition_topic_is_read_as_protobuf_whatever_the_input_encoding() -> None:
    """With ``input_encoding: otlp_json`` the worker read its own repartition records (protobuf)
    as JSON: every unkeyed message of a Collector writing otlp_json was dead-lettered there."""
    rng = random.Random(6)
    a, b = genai_trace(rng, 2), genai_trace(rng, 3)
    settings = Settings(input_encoding="otlp_json")
    r = MessageReader(settings, Counters())
    spans, req = r.read(InMessage(settings.input_topic, 0, 0, None, otlp_json(a + b), None))
    assert req is not None and len(spans) == 5
    records = r.repartition(req)
    back = [s for i, rec in enumerate(records) for s in r.read(InMessage(rec.topic, 0, i, rec.key, rec.value, None))[0]]
    assert sorted(s.span_id for s in back) == sorted(s.span_id.hex() for s in a + b)
    with pytest.raises(DecodeError):  # the input topic still takes only what it is told
        r.read(InMessage(settings.input_topic, 0, 1, None, proto(a), None))
