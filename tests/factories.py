"""Builders for OTLP requests in tests: GenAI-shaped traces with precise control over ids and timing."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from schemas.otlp_json import to_otlp_json
from schemas.otlp_values import any_value, key_values

kvs = key_values
__all__ = ["any_value", "kvs"]

T0 = 1_760_000_000_000_000_000  # a fixed epoch in ns


@dataclass
class SpanSpec:
    trace_id: bytes
    span_id: bytes
    parent: bytes = b""
    name: str = "span"
    start: int = T0
    end: int = T0 + 1_000_000
    attrs: dict[str, Any] = field(default_factory=dict)
    error: bool = False

    def to_pb(self) -> PbSpan:
        s = PbSpan(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent,
            name=self.name,
            kind=PbSpan.SPAN_KIND_INTERNAL,
            start_time_unix_nano=self.start,
            end_time_unix_nano=self.end,
        )
        s.attributes.extend(kvs(self.attrs))
        if self.error:
            s.status.code = Status.STATUS_CODE_ERROR
            s.status.message = "tool failed"
        return s


def genai_trace(rng: random.Random, n_spans: int = 5, service: str = "support-bot") -> list[SpanSpec]:
    """An agent trace: invoke_agent root, alternating chat / execute_tool children."""
    tid = rng.randbytes(16)
    root_id = rng.randbytes(8)
    start = T0 + rng.randrange(10**12)
    root = SpanSpec(
        tid, root_id, name="invoke_agent support", start=start, end=start + 5 * 10**9,
        attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
               "gen_ai.conversation.id": f"conv-{rng.randrange(1000)}", "service.name": service},
    )  # fmt: skip
    spans = [root]
    for i in range(n_spans - 1):
        s0 = start + (i + 1) * 10**8
        if i % 2 == 0:
            msgs = [{"role": "user", "parts": [{"type": "text", "content": f"question {i}"}]}]
            out = [{"role": "assistant", "parts": [{"type": "text", "content": f"answer {i}"}],
                    "finish_reason": "stop"}]  # fmt: skip
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 100 + i,
                     "gen_ai.usage.output_tokens": 20 + i, "gen_ai.input.messages": json.dumps(msgs),
                     "gen_ai.output.messages": json.dumps(out)}  # fmt: skip
            name = "chat gpt-4o-mini"
        else:
            attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                     "gen_ai.tool.call.arguments": json.dumps({"order": i})}  # fmt: skip
            name = "execute_tool lookup_order"
        spans.append(SpanSpec(tid, rng.randbytes(8), root_id, name, s0, s0 + 5 * 10**7, attrs))
    return spans


def request(spans: list[SpanSpec], service: str = "support-bot") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kvs({"service.name": service}))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests.factories"
    ss.spans.extend(s.to_pb() for s in spans)
    return req


def proto(spans: list[SpanSpec]) -> bytes:
    return request(spans).SerializeToString()


def otlp_json(spans: list[SpanSpec]) -> bytes:
    return to_otlp_json(request(spans))
