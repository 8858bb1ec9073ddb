"""bench/stages.py times every stage over all the spans it generated."""

from __future__ import annotations

from bench.generate import generate
from bench.stages import STAGES, one_round


def test_one_round_covers_every_span_and_stage() -> None:
    corpus = generate(400, seed=3)
    messages = [value for _, value in corpus.messages]
    n, cpu = one_round(messages)
    assert n == corpus.spans and n >= 400
    assert set(cpu) == set(STAGES)
    assert all(v >= 0 for v in cpu.values()) and sum(cpu.values()) > 0


def test_otlp_json_decoded_straight_gives_every_span() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from schemas.otlp_json import to_otlp_json

    corpus = generate(400, seed=4)
    messages = [to_otlp_json(ExportTraceServiceRequest.FromString(v)) for _, v in corpus.messages]
    n, cpu = one_round(messages, straight=True)
    assert n == corpus.spans and cpu["parse"] == 0 and cpu["decode+normalize"] > 0
