"""Span rows round-trip through real ClickHouse byte for byte, hostile strings included."""

from __future__ import annotations

import gc
import json
import random

import pytest

from schemas.decode import decode_message
from schemas.model import CompletionReason, SpanEvent, Trace
from stream.rows import (
    RAW_SPAN_SELECT, SPAN_COLUMNS, TRACE_COLUMNS, decode_attrs, encode_attrs, from_json, span_from_row, span_row,
    trace_row,
)  # fmt: skip
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto

HOSTILE = {
    "nul": "a\x00b",
    "controls": "\x01\x07\x1b[31mred\x1b[0m\r\n\t",
    "sql": "'); DROP TABLE spans; --",
    "html": "<script>alert('x')</script>&amp;",
    "unicode": "naïve — 雪 🧪 \u202e",
    "json-ish": '{"$bytes": "not really"}',
}


def test_span_round_trips_through_clickhouse(store: ClickHouseStore) -> None:
    rng = random.Random(3)
    trace = genai_trace(rng, 4)
    extra = {f"hostile.{k}": v for k, v in HOSTILE.items()}
    extra.update({"typed.int": 7, "typed.float": 0.5, "typed.bool": True, "typed.bytes": b"\x00\xff",
                  "typed.list": ["a", "b"], "typed.empty": ""})  # fmt: skip
    trace[1].attrs.update(extra)
    spans = decode_message(proto(trace))
    rows = [span_row(s, "topic", 3, 42, 1_700_000_000_000, late=False) for s in spans]
    assert len(rows[0]) == len(SPAN_COLUMNS)
    store.insert("spans", rows, SPAN_COLUMNS)
    _, back = store.query(f"SELECT {RAW_SPAN_SELECT} FROM {store.database}.spans FINAL ORDER BY span_id")
    restored = {s.span_id: (s, off) for s, off in map(span_from_row, back)}
    for original in spans:
        again, offset = restored[original.span_id]
        assert offset == 42
        assert again == original  # raw layer and re-normalized layer, field by field
    hostile = next(s for s in spans if "hostile.sql" in s.attributes)
    for k, v in HOSTILE.items():
        assert restored[hostile.span_id][0].attributes[f"hostile.{k}"] == v


MARK_LIKE = {  # maps spelled like the JSON marks for bytes values (stream.rows.MARKS)
    "bytes-valid-base64": {"$bytes": "aGk="},
    "bytes-not-base64": {"$bytes": "not base64!"},
    "map": {"$map": {"a": 1}},
    "nested": [{"$bytes": "x"}, {"k": {"$map": {"$bytes": "y"}}}, b"\x00real bytes"],
}


def test_maps_spelled_like_a_bytes_mark_round_trip_through_clickhouse(store: ClickHouseStore) -> None:
    """A map whose only key is ``$bytes`` (a kvlist attribute, or an event's attributes with one
    key so named) read back as bytes, or, not being base64, raised on every read: recovering the
    partition's open traces retried it forever with the pipeline's lock held, and the worker
    consumed nothing (after a restart too)."""
    rng = random.Random(8)
    trace = genai_trace(rng, 2)
    trace[1].attrs.update({f"mark.{k}": v for k, v in MARK_LIKE.items()})
    req_spans = decode_message(proto(trace))
    span = next(s for s in req_spans if "mark.map" in s.attributes)
    span.events = (*span.events, SpanEvent(name="e", time_ns=1, attributes={"$bytes": "not base64!"}),
                   SpanEvent(name="f", time_ns=2, attributes={"$bytes": "aGk="}))  # fmt: skip
    store.insert("spans", [span_row(span, "t", 0, 5, 0, late=False)], SPAN_COLUMNS)
    _, back = store.query(f"SELECT {RAW_SPAN_SELECT} FROM {store.database}.spans FINAL")
    again, _ = span_from_row(back[0])
    assert again == span
    for k, v in MARK_LIKE.items():
        assert again.attributes[f"mark.{k}"] == v
    assert [e.attributes for e in again.events[-2:]] == [{"$bytes": "not base64!"}, {"$bytes": "aGk="}]


def test_a_mark_like_map_stored_before_marks_were_escaped_reads_back_without_raising() -> None:
    assert from_json('{"$bytes":"not base64!"}') == {"$bytes": "not base64!"}
    assert from_json('[{"$bytes":"aGk="}]') == [b"hi"]  # what it always meant


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_strings_are_stored_byte_for_byte(store: ClickHouseStore, value: str) -> None:
    rng = random.Random(5)
    trace = genai_trace(rng, 2)
    trace[0].name = value
    (root, _child) = decode_message(proto(trace))
    store.insert("spans", [span_row(root, "t", 0, 0, 0, late=False)], SPAN_COLUMNS)
    _, rows = store.query(
        f"SELECT name, hex(name) FROM {store.database}.spans FINAL WHERE span_id = {{id:String}}",
        {"id": root.span_id},
    )
    assert rows[0][0] == value
    assert bytes.fromhex(rows[0][1]) == value.encode("utf-8")


def test_encode_attrs_keeps_strings_and_spells_the_rest_as_json() -> None:
    attrs = {"s": "x", "i": 7, "b": True, "f": 0.5, "nan": float("nan"), "by": b"\x00\xff", "l": ["stop"],
             "d": {"a": [1]}, "e": "", "big": 2**70, "mixed": ["a", 1]}  # fmt: skip
    values, typed = encode_attrs(attrs)
    assert list(values) == list(attrs)  # same keys, same order
    assert typed == ("i", "b", "f", "nan", "by", "l", "d", "big", "mixed")
    assert values == {"s": "x", "i": "7", "b": "true", "f": "0.5", "nan": "NaN", "by": '{"$bytes":"AP8="}',
                      "l": '["stop"]', "d": '{"a":[1]}', "e": "", "big": str(2**70), "mixed": '["a",1]'}  # fmt: skip
    back = decode_attrs(values, typed)
    assert repr(back) == repr(attrs)
    only_strings = {"a": "1", "b": "2"}
    values, typed = encode_attrs(only_strings)
    assert (values, typed) == (only_strings, ()) and values is not only_strings  # a copy, never the span's dict


def test_rows_leave_the_garbage_collector_little_to_walk() -> None:
    """Rows wait in memory while their insert runs: what they hold must not stay GC-tracked (the
    worker's young collections walked ~4 tracked objects per row while these were lists)."""
    values, typed = encode_attrs({"gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 3})
    assert not gc.is_tracked(values)  # rebuilt: the copy of a dict holding a list was tracked
    specs = genai_trace(random.Random(5), 4)
    specs[1].attrs["gen_ai.response.finish_reasons"] = ["stop"]
    spans = decode_message(proto(specs))
    assert spans[1].finish_reasons == ("stop",) and not any(s.exceptions or s.events for s in spans)
    for span in spans:
        row = span_row(span, "t", 0, 1, 0, False)
        gc.collect()  # untracks tuples of strings (the row itself stays tracked: it holds dicts)
        assert [type(v).__name__ for v in row if gc.is_tracked(v)] == []


def test_trace_row_counts_tool_calls_and_providers_like_the_trace() -> None:
    out = [{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "t", "arguments": {}},
                                            {"type": "tool_call", "id": "c2", "name": "u", "arguments": {}}]}]  # fmt: skip
    rng = random.Random(9)
    specs = genai_trace(rng, 6)
    specs[2].attrs["gen_ai.output.messages"] = json.dumps(out)  # a tool span that also reports calls
    specs[4].attrs.pop("gen_ai.tool.name")  # a tool span without a name: no executed call
    specs[4].name = "execute_tool"
    specs[1].attrs["gen_ai.provider.name"] = "anthropic"
    spans = decode_message(proto(specs))
    trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
    row = dict(zip(TRACE_COLUMNS, trace_row(trace, "t", 0, 1), strict=True))
    assert row["tool_call_count"] == len(trace.tool_calls) == 3
    assert row["providers"] == sorted({s.provider for s in spans if s.provider}) == ["anthropic", "openai"]
