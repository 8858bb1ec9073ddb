"""bench/memory.py's input: an open trace is the first spans of a real trace, the root held back."""

from __future__ import annotations

import random
from pathlib import Path

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


def test_the_longest_event_loop_stall_is_read_from_the_worker_log(tmp_path: Path) -> None:
    from bench.harness import max_timer_drift

    log = tmp_path / "worker.log"
    log.write_text(
        "[INFO] Timer commit woke up too late, with a drift of +0.31 runtime=0.1 sleeptime=1.3\n"
        "[INFO] Timer Monitor.sampler woke up too late, with a drift of +12.49 runtime=0.0 sleeptime=13.4\n"
        "[INFO] something else +99.0\n"
    )
    assert max_timer_drift(log) == 12.49
    assert max_timer_drift(tmp_path / "missing.log") == 0.0
