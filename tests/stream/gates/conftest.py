"""Traces for gate tests: OTLP built with ``tests.factories``, decoded like production input.

``AgentTrace`` adds GenAI-shaped children (chat / execute_tool) under an ``invoke_agent`` root, one
after the other; ``assemble`` turns any ``SpanSpec`` list into a completed :class:`Trace`;
``fixture_trace`` loads a payload captured from a real instrumentation library.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from tests.factories import T0, SpanSpec, kvs, proto

OTLP = Path(__file__).resolve().parents[2] / "fixtures" / "otlp"
FIXTURES = sorted(p.stem for p in OTLP.glob("*.pb"))
AGENT_FIXTURES = [f for f in FIXTURES if f.endswith("_agent")]
ERROR_FIXTURES = [f for f in FIXTURES if f.endswith("_error")]
MS = 1_000_000


def assemble(specs: list[SpanSpec]) -> Trace:
    spans = decode_message(proto(specs))
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)


def fixture_trace(stem: str) -> Trace:
    spans = decode_message((OTLP / f"{stem}.pb").read_bytes())
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)


@dataclass
class EventSpanSpec(SpanSpec):
    """A ``SpanSpec`` that can also carry span events and a chosen status message."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status_message: str | None = None

    def to_pb(self) -> PbSpan:
        s = super().to_pb()
        for name, attrs in self.events:
            e = s.events.add()
            e.name = name
            e.time_unix_nano = self.end
            e.attributes.extend(kvs(attrs))
        if self.error and self.status_message is not None:
            s.status.message = self.status_message
        return s


def _parts(text: str, tool_calls: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts += [{"type": "tool_call", "id": f"call_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(tool_calls)]
    return parts


class AgentTrace:
    """An agent trace built child by child; ``build()`` decodes it into a :class:`Trace`."""

    def __init__(self, seed: int = 1, service: str = "support-bot", agent: str = "support") -> None:
        self.rng = random.Random(seed)
        self.tid = self.rng.randbytes(16)
        self.root_id = self.rng.randbytes(8)
        self.service = service
        self.agent = agent
        self.clock = T0
        self.children: list[SpanSpec] = []
        self.history: list[dict[str, Any]] = []  # the conversation, repeated as every chat's input

    def _add(self, name: str, attrs: dict[str, Any], duration_ms: float, error: bool = False,
             status_message: str | None = None, events: list[tuple[str, dict[str, Any]]] | None = None) -> str:
        span_id = self.rng.randbytes(8)
        start = self.clock + MS
        end = start + int(duration_ms * MS)
        self.clock = end
        self.children.append(EventSpanSpec(self.tid, span_id, self.root_id, name, start, end, attrs, error,
                                           events or [], status_message))  # fmt: skip
        return span_id.hex()

    def llm(self, user: str | None = None, answer: str = "", tool_calls: list[tuple[str, Any]] | None = None,
            finish: str | None = "stop", model: str = "gpt-4o-mini", tokens: tuple[int, int] = (100, 20),
            duration_ms: float = 50, error: bool = False, capture: bool = True) -> str:  # fmt: skip
        if user is not None:
            self.history.append({"role": "user", "parts": [{"type": "text", "content": user}]})
        out: dict[str, Any] = {"role": "assistant", "parts": _parts(answer, tool_calls or [])}
        if finish:
            out["finish_reason"] = finish
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1],
        }  # fmt: skip
        if finish:
            attrs["gen_ai.response.finish_reasons"] = [finish]
        if capture:
            attrs["gen_ai.input.messages"] = json.dumps(self.history)
            attrs["gen_ai.output.messages"] = json.dumps([out])
        self.history.append(out)
        return self._add(f"chat {model}", attrs, duration_ms, error)

    def tool(self, name: str, arguments: Any = None, result: str | None = None, duration_ms: float = 20,
             error: bool = False, status_message: str | None = None, error_type: str | None = None,
             exception: tuple[str, str] | None = None) -> str:  # fmt: skip
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        if arguments is not None:
            attrs["gen_ai.tool.call.arguments"] = arguments if isinstance(arguments, str) else json.dumps(arguments)
        if result is not None:
            attrs["gen_ai.tool.call.result"] = result
        if error_type:
            attrs["error.type"] = error_type
        events = [("exception", {"exception.type": exception[0], "exception.message": exception[1]})] if exception else []
        return self._add(f"execute_tool {name}", attrs, duration_ms, error, status_message, events)

    def span(self, name: str, attrs: dict[str, Any] | None = None, duration_ms: float = 10, error: bool = False,
             status_message: str | None = None, events: list[tuple[str, dict[str, Any]]] | None = None) -> str:  # fmt: skip
        return self._add(name, attrs or {}, duration_ms, error, status_message, events)

    def build(self, root_error: bool = False, root_duration_ms: float | None = None) -> Trace:
        end = self.clock + MS if root_duration_ms is None else T0 + int(root_duration_ms * MS)
        root = EventSpanSpec(
            self.tid, self.root_id, name=f"invoke_agent {self.agent}", start=T0, end=end, error=root_error,
            attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.agent,
                   "service.name": self.service},
        )  # fmt: skip
        return assemble([root, *self.children])


def weather_trace(answer: str = "It is 18°C in Paris.", **tool: Any) -> Trace:
    """User asks, the model calls get_weather, the tool answers, the model answers."""
    t = AgentTrace()
    t.llm(user="What's the weather in Paris?", tool_calls=[("get_weather", {"city": "Paris"})], finish="tool_calls")
    tool_args: dict[str, Any] = {"arguments": {"city": "Paris"}, "result": '{"temperature_c": 18}', **tool}
    t.tool("get_weather", **tool_args)
    t.llm(answer=answer)
    return t.build()
