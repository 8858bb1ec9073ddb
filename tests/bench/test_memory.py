"""bench/memory.py's input: an open trace is the first spans of a real trace, the root held back."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.generate import NS, build_trace
from bench.memory import split_open


def _spans(value: bytes) -> list:
    req = ExportTraceServiceRequest.FromString(value)
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_split_open_keeps_the_first_non_root_spans_and_holds_the_rest_back() -> None:
    rng = random.Random(4)
    for _ in range(20):
        _tid, value, n = build_trace(rng, 1_700_000_000 * NS)
        head, tail, kept = split_open(value, 6)
        first, rest = _spans(head), _spans(tail)
        assert kept == len(first) == min(6, n - 1)
        assert all(s.parent_span_id for s in first)  # the root never arrives early
        assert any(not s.parent_span_id for s in rest)
        assert sorted(s.span_id for s in first + rest) == sorted(s.span_id for s in _spans(value))
