"""schemas/split.py: an OTLP request split per trace, and a trace's part cut under a size limit."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import Limits, decode_message
from schemas.split import split_by_trace
from tests.factories import SpanSpec, genai_trace, request


def test_split_by_trace_keeps_resource_and_scope() -> None:
    rng = random.Random(7)
    traces = [genai_trace(rng, 4) for _ in range(3)]
    parts = split_by_trace(request([s for t in traces for s in t]))
    assert sorted(parts) == sorted(t[0].trace_id.hex() for t in traces)
    for tid, values in parts.items():
        assert len(values) == 1  # no limit: one part per trace
        spans = decode_message(values[0])
        assert {s.trace_id for s in spans} == {tid} and len(spans) == 4
        assert all(s.service_name == "support-bot" and s.scope_name == "tests.factories" for s in spans)


def big_trace(rng: random.Random, n: int, content: int) -> list[SpanSpec]:
    """A trace of ``n`` spans, each carrying ~``content`` bytes of conversation."""
    trace = genai_trace(rng, n)
    for i, s in enumerate(trace):
        s.attrs["gen_ai.input.messages"] = f'[{{"role":"user","parts":[{{"type":"text","content":"{i:04d}' + "x" * content + '"}]}]'
    return trace


def two_scopes(spans: list[SpanSpec]) -> ExportTraceServiceRequest:
    """``spans`` under two resources and two scopes each, as a mixed batch of a Collector."""
    req = ExportTraceServiceRequest()
    quarter = len(spans) // 4
    for r in range(2):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        for k in range(2):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope-{r}-{k}"
            chunk = spans[(2 * r + k) * quarter:(2 * r + k + 1) * quarter] if (r, k) != (1, 1) else spans[3 * quarter:]
            ss.spans.extend(s.to_pb() for s in chunk)
    return req


def test_a_part_over_the_limit_is_cut_in_order_under_it_with_its_resources_and_scopes() -> None:
    rng = random.Random(11)
    big = big_trace(rng, 40, 30_000)  # ~1.2 MB
    small = genai_trace(rng, 5)
    req = two_scopes(big + small)
    limit = 200_000
    parts = split_by_trace(req, max_bytes=limit)
    assert len(parts[small[0].trace_id.hex()]) == 1  # under the limit: one part, as without it
    pieces = parts[big[0].trace_id.hex()]
    assert len(pieces) > 1 and all(len(p) <= limit for p in pieces)
    assert len(pieces) <= 1_300_000 // (limit - 40_000)  # packed: not a span per part
    spans = [s for p in pieces for s in decode_message(p)]
    assert [s.span_id for s in spans] == [s.span_id.hex() for s in big]  # every span once, in order
    whole = decode_message(split_by_trace(req)[big[0].trace_id.hex()][0])
    assert [(s.service_name, s.scope_name, s.attributes) for s in spans] == [
        (s.service_name, s.scope_name, s.attributes) for s in whole
    ]


def test_a_span_larger_than_the_limit_goes_alone() -> None:
    rng = random.Random(12)
    trace = big_trace(rng, 6, 1_000)
    trace[3].attrs["gen_ai.input.messages"] = "y" * 50_000
    pieces = split_by_trace(request(trace), max_bytes=20_000)[trace[0].trace_id.hex()]
    sizes = [len(decode_message(p)) for p in pieces]
    assert sum(sizes) == 6 and 1 in sizes
    alone = next(p for p in pieces if any(s.span_id == trace[3].span_id.hex() for s in decode_message(p)))
    assert len(decode_message(alone)) == 1 and len(alone) > 20_000
    assert all(len(p) <= 20_000 for p in pieces if p is not alone)


def test_a_part_over_the_limit_sheds_only_what_the_decoder_drops() -> None:
    """Values the decoder truncates (strings with multi-byte characters, bytes, values nested in
    arrays and key-value lists, span events, the resource) are shortened before the part is cut:
    a span that was larger alone now fits one record, and it decodes exactly as the whole did."""
    rng = random.Random(13)
    trace = big_trace(rng, 6, 500)
    limit = 4_000  # the worker's max_attribute_bytes
    trace[2].attrs["gen_ai.input.messages"] = "ä" * 9_000 + "tail"  # 2 bytes per character
    trace[2].attrs["image"] = rng.randbytes(30_000)
    trace[3].attrs["gen_ai.output.messages"] = ["short", "q" * 50_000, {"nested": ["€" * 3_000, "r" * 20_000]}]
    trace[4].attrs["just_over"] = "s" * (limit + 1)  # the decoder truncates it; shortening leaves it
    trace[4].attrs["at_limit"] = "t" * limit
    req = request(trace)
    req.resource_spans[0].resource.attributes.add(key="host.blob").value.string_value = "h" * 12_000
    event = req.resource_spans[0].scope_spans[0].spans[5].events.add(name="exception", time_unix_nano=trace[5].start)
    event.attributes.add(key="exception.stacktrace").value.string_value = "frame\n" * 5_000
    limits = Limits(max_attribute_bytes=limit)
    whole = decode_message(split_by_trace(req)[trace[0].trace_id.hex()][0], limits=limits)
    assert len(whole[2].truncated_attributes) >= 3  # the input really is truncated by the decoder

    pieces = split_by_trace(req, max_bytes=20_000, max_value_bytes=limit)[trace[0].trace_id.hex()]
    assert all(len(p) <= 20_000 for p in pieces)
    spans = [s for p in pieces for s in decode_message(p, limits=limits)]
    assert [s.model_dump() for s in spans] == [s.model_dump() for s in whole]
    # without shortening, the large spans go alone and over the limit
    assert any(len(p) > 20_000 for p in split_by_trace(req, max_bytes=20_000)[trace[0].trace_id.hex()])


def test_a_span_larger_alone_than_the_limit_is_cut_to_fit_and_reported() -> None:
    rng = random.Random(15)
    trace = big_trace(rng, 4, 500)
    for k in ("a", "b", "c"):
        trace[2].attrs[k] = k * 9_000  # each under max_value_bytes: nothing for shorten_values
    fitted: list[tuple[str, str, list[str]]] = []
    parts = split_by_trace(request(trace), max_bytes=15_000, max_value_bytes=10_000, on_fit=lambda *a: fitted.append(a))
    pieces = parts[trace[0].trace_id.hex()]
    assert all(len(p) <= 15_000 for p in pieces) and sum(len(decode_message(p)) for p in pieces) == 4
    assert len(fitted) == 1 and fitted[0][:2] == (trace[0].trace_id.hex(), trace[2].span_id.hex())
    assert sorted(fitted[0][2].cut) == ["a", "b"]  # the two largest, as far as needed; "c" stays whole
    assert not fitted[0][2].dropped_events and not fitted[0][2].dropped_attributes
    # without max_value_bytes (no decoder limit known), the span goes alone, whole
    assert max(len(p) for p in split_by_trace(request(trace), max_bytes=15_000)[trace[0].trace_id.hex()]) > 15_000
