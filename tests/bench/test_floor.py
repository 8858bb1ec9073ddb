"""bench/floor.py makes the same rows from OTLP/JSON as from protobuf, so the two floors compare."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.floor import FLOOR_COLUMNS, floor_rows
from bench.generate import generate
from schemas.otlp_json import to_otlp_json
from tests.factories import genai_trace, proto


def test_json_and_protobuf_floor_rows_are_the_same() -> None:
    values = [v for _, v in generate(300, seed=7).messages] + [proto(genai_trace(random.Random(1), 5))]
    for value in values:
        as_json = to_otlp_json(ExportTraceServiceRequest.FromString(value))
        rows = floor_rows(value, "t", 1, 2, 3)
        assert rows and floor_rows(as_json, "t", 1, 2, 3) == rows
        assert all(len(r) == len(FLOOR_COLUMNS) for r in rows)
