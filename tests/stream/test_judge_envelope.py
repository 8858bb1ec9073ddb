"""The to_judge envelope: full when it fits under ``max_bytes``, spans by reference otherwise."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from pydantic import BaseModel

from stream import judge_envelope
from schemas.model import SpanEvent
from schemas.normalize import normalize_span
from stream.judge_envelope import SpansRef, decode, decode_partial, encode, select_referenced
from stream.rows import to_json
from tests.factories import T0, SpanSpec
from tests.judges.fake_llm import build_trace, trace_from

META = {"decision": {"class": "suspected_failure", "rule": "r", "stratum": "s", "p": 1.0, "policy_version": "pv1"},
        "failed_gates": [{"gate": "g", "type": "t", "reason": "why", "evidence": []}],
        "signals": [{"type": "x", "polarity": "neg", "source": "s", "evidence": "e", "message_index": None}]}  # fmt: skip


def big_trace(n: int, pad: int, seed: int = 1):  # noqa: ANN201
    rng = random.Random(seed)
    tid, root = rng.randbytes(16), rng.randbytes(8)
    specs = [SpanSpec(tid, root, name="invoke_agent support", end=T0 + 10**10,
                      attrs={"gen_ai.operation.name": "invoke_agent", "service.name": "support-bot"})]  # fmt: skip
    for i in range(n):
        specs.append(SpanSpec(tid, rng.randbytes(8), root, f"step {i}", T0 + (n - i) * 1000, T0 + 10**9,
                              {"note": f"span {i} " + "x" * pad}))  # fmt: skip
    return trace_from(specs)


def test_a_small_trace_is_inline_and_unchanged_by_the_cap() -> None:
    trace = build_trace("where is my order?", "It ships tomorrow.", '{"status": "shipped"}', seed=3)
    value = encode(trace, META, 900_000)
    assert value == encode(trace, META)  # no cap: the old envelope, byte for byte
    doc = json.loads(value)
    assert "spans" in doc and "spans_ref" not in doc
    got, meta = decode(value)
    assert got == trace and meta == META
    assert decode_partial(value) == (got, meta, None)


def test_a_big_trace_goes_by_reference_with_its_held_span_ids_under_the_cap() -> None:
    trace = big_trace(100, 1000)
    assert len(encode(trace, META)) > 100_000
    value = encode(trace, META, 20_000)
    assert len(value) <= 20_000
    doc = json.loads(value)
    assert "spans" not in doc
    assert doc["spans_ref"] == {"count": 101, "span_ids": [s.span_id for s in trace.spans]}
    got, meta, ref = decode_partial(value)
    assert meta == META and got.spans == []
    assert (got.trace_id, got.completion_reason, got.first_seen_ns, got.last_seen_ns, got.completed_ns) == (
        trace.trace_id, trace.completion_reason, trace.first_seen_ns, trace.last_seen_ns, trace.completed_ns)
    assert ref == SpansRef(101, tuple(s.span_id for s in trace.spans))
    with pytest.raises(ValueError, match="by reference"):
        decode(value)  # a caller that cannot load spans never sees an empty trace


def test_span_ids_are_left_out_when_even_they_do_not_fit() -> None:
    trace = big_trace(1000, 10)
    value = encode(trace, META, 10_000)
    assert len(value) <= 10_000
    assert json.loads(value)["spans_ref"] == {"count": 1001}
    assert decode_partial(value)[2] == SpansRef(1001, None)


def test_referenced_spans_rebuild_the_trace_the_worker_assembled() -> None:
    trace = big_trace(30, 1000)
    _, _, ref = decode_partial(encode(trace, META, 10_000))
    assert ref is not None and ref.span_ids is not None
    extra = big_trace(3, 10, seed=9).spans  # e.g. stored late spans, or spans past max_spans_per_trace
    stored = [(s, False) for s in reversed(trace.spans)] + [(s, True) for s in extra]
    spans = select_referenced(ref, stored)
    assert spans == trace.spans
    assert judge_envelope.with_spans(decode_partial(encode(trace, META, 10_000))[0], spans) == trace
    assert select_referenced(ref, stored[1:]) is None  # one held span missing: never a partial trace


def test_count_only_reference_keeps_the_first_non_late_spans_by_start_time() -> None:
    trace = big_trace(10, 10)
    first = sorted(trace.spans, key=lambda s: (s.start_ns, s.span_id))
    later = big_trace(2, 10, seed=5).spans  # start later than every span of trace (T0 + 10**10 root excluded)
    stored = [(s, False) for s in trace.spans] + [(s, True) for s in later]
    assert select_referenced(SpansRef(len(trace.spans)), stored) == first
    assert select_referenced(SpansRef(5), stored) == first[:5]
    assert select_referenced(SpansRef(len(trace.spans) + 1), stored) is None  # late spans never count


def test_attach_referenced_completes_by_reference_envelopes_and_names_the_missing_ones() -> None:
    small = build_trace("where is my order?", "It ships tomorrow.", '{"status": "shipped"}', seed=3)
    whole, short = big_trace(30, 1000), big_trace(20, 1000, seed=2)
    decoded = [(x, *decode_partial(encode(t, META, 10_000))) for x, t in (("a", small), ("b", whole), ("c", short))]
    assert [ref is None for *_, ref in decoded] == [True, False, False]
    stored = {whole.trace_id: [(s, False) for s in whole.spans], short.trace_id: [(s, False) for s in short.spans[1:]]}
    ok, missing = judge_envelope.attach_referenced(decoded, stored)
    assert ok == [("a", small, META), ("b", whole, META)]
    assert [(x, reason.split(":")[0]) for x, reason in missing] == [("c", f"trace {short.trace_id}")]
    assert "references 21 spans" in missing[0][1] and "(20 stored spans found)" in missing[0][1]



@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [1.5, -float("inf")], b"\x00\xff raw", {"k": [{"deep": float("nan")}]}, 1e-05, 2**62,
     {"$bytes": "aGk="}, {"$bytes": "not base64!"}, {"$map": {"$bytes": "x"}}, [{"$bytes": "x"}, b"\x01"],
     {"$bytes": float("nan")}],
    ids=["nan", "inf", "inf-in-list", "bytes", "nested-nan", "small-float", "big-int", "map-like-bytes",
         "map-like-bytes-not-base64", "map-like-map", "in-list", "map-like-with-nan"],
)  # fmt: skip
def test_every_attribute_value_survives_the_envelope(value: object) -> None:
    """The fast encoder (orjson) would write NaN/infinity as null: such envelopes take json's
    spelling, so no value changes on the way to the judge."""
    rng = random.Random(7)
    tid, root = rng.randbytes(16), rng.randbytes(8)
    trace = trace_from([SpanSpec(tid, root, name="invoke_agent", end=T0 + 10**9, attrs={"x": value, "s": "text"})])
    got, meta = decode(encode(trace, META))
    assert to_json(got.spans[0].attributes["x"]) == to_json(trace.spans[0].attributes["x"])  # NaN != NaN
    assert to_json(got.spans[0].attributes["x"]) != "null"
    assert meta == META
    if "NaN" not in to_json(value):  # equal as values too (a map like a bytes mark stays a map)
        assert got.spans[0].attributes["x"] == trace.spans[0].attributes["x"]


def test_integers_past_64_bits_take_jsons_spelling() -> None:
    """orjson refuses them (OTLP attributes cannot hold one, decision meta could)."""
    doc = {"n": 2**70, "p": float("nan"), "s": "x"}
    assert judge_envelope._dumps(doc) == b'{"n":1180591620717411303424,"p":NaN,"s":"x"}'
    assert judge_envelope._dumps({"n": 2**40, "s": "x"}) == orjson.dumps({"n": 2**40, "s": "x"})


def _model_state(o: object) -> object:
    """A model's full field dict, key order included (model_dump and repr follow it), recursively."""
    if isinstance(o, BaseModel):
        return [(k, _model_state(v)) for k, v in o.__dict__.items() if not k.startswith("_")]
    if isinstance(o, list):
        return [_model_state(v) for v in o]
    return o


def test_any_span_shape_decodes_as_the_general_path_does() -> None:
    """Spans as encode writes them take a fast path; reordered keys, extra keys or odd values take
    the general one (``Span.fast``): both give the same span, field order included."""
    trace = build_trace("where is my order?", "It ships tomorrow.", '{"status": "shipped"}', seed=3)
    trace.spans[0].events = (SpanEvent.fast(name="exception", time_ns=5, attributes={"exception.type": "E"}),)
    normalize_span(trace.spans[0])
    value = encode(trace, META)
    fast, _ = decode(value)
    doc = json.loads(value)
    doc["spans"] = [  # same keys and values, another order
        {**dict(reversed(raw.items())), "events": [dict(reversed(e.items())) for e in raw["events"]]}
        for raw in doc["spans"]
    ]
    assert list(doc["spans"][0]) != judge_envelope._RAW_KEYS
    general, _ = decode(json.dumps(doc).encode())
    assert fast == general == trace
    for a, b in zip(fast.spans, general.spans, strict=True):
        assert _model_state(a)[:28] == _model_state(b)[:28]  # the static fields lead, in declaration order
        assert sorted(map(str, _model_state(a))) == sorted(map(str, _model_state(b)))
        assert (a.input_messages, a.output_messages, a.tool_calls) == (b.input_messages, b.output_messages, b.tool_calls)


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda s: s.update(status_code="bogus"), ValueError),
        (lambda s: s.update(events=None), TypeError),
        (lambda s: s.update(events=[1]), TypeError),
        (lambda s: s.pop("span_id"), None),  # Span.fast does not validate: decodes as before
    ],
)
def test_odd_spans_fail_or_decode_as_before(mutate, error) -> None:  # noqa: ANN001
    doc = json.loads(encode(build_trace("q", "a", "{}", seed=1), META))
    mutate(doc["spans"][0])
    if error is None:
        decode(json.dumps(doc).encode())
    else:
        with pytest.raises(error):
            decode(json.dumps(doc).encode())


def test_text_the_fast_parser_refuses_takes_jsons_path() -> None:
    value = encode(build_trace("q $5", "a", "{}", seed=2), META)  # a "$" that is not {"$bytes": …}
    assert decode(value)[0].spans[0].attributes == json.loads(value)["spans"][0]["attributes"]
    with pytest.raises(UnicodeDecodeError):
        decode(value.replace(b'"q', b'"\xff', 1))
    escaped = value.replace(b'"where', b'"\\u0077here', 1).replace(b'"trace_id":', b'"\\u0074race_id":', 1)
    assert decode(escaped) == decode(value)
