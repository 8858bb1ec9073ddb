"""Synthetic but realistic GenAI agent traces as OTLP protobuf, one Kafka message per trace.

Each trace is what an instrumented agent exports for one user turn, following the GenAI semantic
conventions: an ``invoke_agent`` root, then ``chat`` calls (CLIENT spans with ``gen_ai.*`` request /
response / usage attributes and the conversation so far in ``gen_ai.input.messages``) alternating
with ``execute_tool`` spans (arguments and results as JSON), 20-50 spans per trace. A few traces
fail: a tool raises (status ERROR, ``error.type`` and an ``exception`` event with a stack trace) or
the agent itself does.

The message layout is the OpenTelemetry Collector's kafka exporter with
``partition_traces_by_id: true``: one ``ExportTraceServiceRequest`` per trace, keyed by the 32-hex
trace id. Generation is deterministic for a given seed. What the agents say (apps, prompts,
tools, words, failures) is in :mod:`bench.content`; this module encodes it as OTLP.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from bench.content import APPS, ERRORS, STACK, as_json, history_tail, text
from schemas.otlp_values import key_values as _kvs

NS = 1_000_000_000


class _Clock:
    def __init__(self, start: int, rng: random.Random) -> None:
        self.now = start
        self.rng = rng

    def span(self, seconds: float) -> tuple[int, int]:
        self.now += int(self.rng.uniform(0.001, 0.02) * NS)
        s = self.now
        self.now += int(seconds * NS)
        return s, self.now


def _span(tid: bytes, sid: bytes, parent: bytes, name: str, kind: int, times: tuple[int, int],
          attrs: dict[str, Any]) -> PbSpan:  # fmt: skip
    s = PbSpan(trace_id=tid, span_id=sid, parent_span_id=parent, name=name, kind=kind,
               start_time_unix_nano=times[0], end_time_unix_nano=times[1])  # fmt: skip
    s.attributes.extend(_kvs(attrs))
    return s


def _fail(span: PbSpan, rng: random.Random, at: int) -> None:
    etype, emsg = rng.choice(ERRORS)
    span.status.code = Status.STATUS_CODE_ERROR
    span.status.message = emsg
    span.attributes.extend(_kvs({"error.type": etype}))
    ev = span.events.add()
    ev.name = "exception"
    ev.time_unix_nano = at
    ev.attributes.extend(_kvs({
        "exception.type": etype, "exception.message": emsg, "exception.escaped": "True",
        "exception.stacktrace": STACK.format(line=rng.randint(20, 400), etype=etype, emsg=emsg),
    }))  # fmt: skip


def build_trace(
    rng: random.Random, start_ns: int, min_spans: int = 5, max_spans: int = 50
) -> tuple[str, bytes, int]:
    """One agent turn; returns (trace id hex, serialized ExportTraceServiceRequest, span count)."""
    app = rng.choice(APPS)
    tid = rng.randbytes(16)
    root_id = rng.randbytes(8)
    target = rng.randint(min_spans, max_spans)
    conv = f"conv_{rng.getrandbits(48):012x}"
    user = f"user_{rng.randrange(5000):05d}"
    tool_error = rng.random() < 0.08
    agent_error = rng.random() < 0.03
    clock = _Clock(start_ns, rng)
    user_msg = {
        "role": "user",
        "parts": [{"type": "text", "content": text(rng, 15, 60)}],
    }
    messages: list[str] = []  # the conversation so far, each message as JSON
    for _ in range(rng.randint(0, 4)):  # earlier turns of the conversation
        messages.append(
            as_json(
                {
                    "role": "user",
                    "parts": [{"type": "text", "content": text(rng, 8, 40)}],
                }
            )
        )
        messages.append(
            as_json(
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": text(rng, 20, 90)}],
                }
            )
        )
    messages.append(as_json(user_msg))
    system = as_json([{"type": "text", "content": app.system_prompt}])
    children: list[PbSpan] = []
    remaining = target - 1
    error_tool = (
        rng.randrange(8) if tool_error else -1
    )  # index of the tool call that fails
    tool_index = 0

    def chat(output: dict[str, Any]) -> None:
        times = clock.span(rng.uniform(0.4, 4.0))
        inp = history_tail(messages)
        out = as_json([output])
        in_tok = max(1, len(inp) // 4) + len(app.system_prompt) // 4
        out_tok = max(1, len(out) // 4)
        cache = rng.choice((0, 0, in_tok // 2))
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": app.provider,
            "gen_ai.request.model": app.model, "gen_ai.request.max_tokens": 1024,
            "gen_ai.request.temperature": 0.2, "gen_ai.system_instructions": system,
            "gen_ai.input.messages": inp, "gen_ai.conversation.id": conv,
            "server.address": "api.openai.com" if app.provider == "openai" else "api.anthropic.com",
            "server.port": 443,
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}",
            "gen_ai.response.model": app.response_model,
            "gen_ai.response.finish_reasons": [app.finish[output["finish_reason"]]],
            "gen_ai.usage.input_tokens": in_tok, "gen_ai.usage.output_tokens": out_tok,
            "gen_ai.usage.cache_read.input_tokens": cache,
            "gen_ai.output.messages": out,
        }  # fmt: skip
        children.append(
            _span(
                tid,
                rng.randbytes(8),
                root_id,
                f"chat {app.model}",
                PbSpan.SPAN_KIND_CLIENT,
                times,
                attrs,
            )
        )

    while remaining > 2:
        # one model call asking for 1-2 tools, then the tool spans
        n_tools = min(rng.choice((1, 1, 1, 2)), remaining - 2)
        calls = []
        for _ in range(n_tools):
            name = rng.choice(app.tools)
            args = {
                "query": text(rng, 3, 12),
                "id": str(rng.randrange(10**7)),
                "limit": rng.randint(1, 20),
            }
            calls.append(
                {
                    "type": "tool_call",
                    "id": f"call_{rng.getrandbits(64):016x}",
                    "name": name,
                    "arguments": args,
                }
            )
        chat({"role": "assistant", "parts": calls, "finish_reason": "tool_call"})
        messages.append(as_json({"role": "assistant", "parts": calls}))
        remaining -= 1
        for call in calls:
            times = clock.span(rng.uniform(0.02, 1.5))
            attrs = {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call["name"],
                "gen_ai.tool.type": "function", "gen_ai.tool.call.id": call["id"],
                "gen_ai.tool.call.arguments": as_json(call["arguments"]),
            }  # fmt: skip
            span = _span(
                tid,
                rng.randbytes(8),
                root_id,
                f"execute_tool {call['name']}",
                PbSpan.SPAN_KIND_INTERNAL,
                times,
                attrs,
            )
            if tool_index == error_tool:
                _fail(span, rng, times[1])
                result = f"Error: {span.status.message}"
            else:
                items = [{"id": rng.randrange(10**6), "title": text(rng, 3, 10), "score": round(rng.random(), 3)}
                         for _ in range(rng.randint(1, 6))]  # fmt: skip
                result = as_json({"ok": True, "items": items, "note": text(rng, 5, 30)})
                span.attributes.extend(_kvs({"gen_ai.tool.call.result": result}))
            children.append(span)
            tool_index += 1
            messages.append(
                as_json(
                    {
                        "role": "tool",
                        "parts": [
                            {
                                "type": "tool_call_response",
                                "id": call["id"],
                                "response": result,
                            }
                        ],
                    }
                )
            )
            remaining -= 1
    last: dict[str, Any] = {}
    while remaining > 0:
        final = {
            "role": "assistant",
            "parts": [{"type": "text", "content": text(rng, 20, 120)}],
            "finish_reason": "stop",
        }
        chat(final)
        messages.append(as_json({"role": "assistant", "parts": final["parts"]}))
        last = final
        remaining -= 1
    end = clock.span(0.005)[1]
    root = _span(tid, root_id, b"", f"invoke_agent {app.agent}", PbSpan.SPAN_KIND_INTERNAL, (start_ns, end), {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": app.provider,
        "gen_ai.agent.name": app.agent, "gen_ai.agent.id": f"agent_{app.service}",
        "gen_ai.agent.version": app.version, "gen_ai.request.model": app.model,
        "gen_ai.conversation.id": conv, "user.id": user, "gen_ai.input.messages": as_json([user_msg]),
        "gen_ai.output.messages": as_json([{"role": "assistant", "parts": last["parts"]}]),
    })  # fmt: skip
    if agent_error:
        _fail(root, rng, end)

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(_kvs({
        "service.name": app.service, "service.version": app.version,
        "deployment.environment.name": "production", "host.name": f"{app.service}-{rng.randrange(8)}",
        "process.pid": rng.randint(1000, 60000), "process.runtime.name": "cpython",
        "process.runtime.version": "3.11.9", "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.38.0",
    }))  # fmt: skip
    agent_scope = rs.scope_spans.add()
    agent_scope.scope.name = "agent.framework"
    agent_scope.scope.version = "0.4.2"
    agent_scope.spans.append(root)
    llm_scope = rs.scope_spans.add()
    llm_scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    llm_scope.scope.version = "2.4b0"
    llm_scope.spans.extend(children)
    return tid.hex(), req.SerializeToString(), target


@dataclass
class Corpus:
    messages: list[tuple[bytes, bytes]]  # (key = trace id hex, value = OTLP protobuf)
    spans: int
    traces: int

    @property
    def bytes(self) -> int:
        return sum(len(v) for _, v in self.messages)


def generate(total_spans: int, seed: int = 1, start_ns: int | None = None) -> Corpus:
    """Traces until at least ``total_spans`` spans; span times spread over the 10 minutes before start."""
    rng = random.Random(seed)
    base = (start_ns or time.time_ns()) - 600 * NS
    msgs: list[tuple[bytes, bytes]] = []
    spans = 0
    while spans < total_spans:
        tid, value, n = build_trace(rng, base + rng.randrange(540 * NS))
        msgs.append((tid.encode(), value))
        spans += n
    return Corpus(msgs, spans, len(msgs))


def iter_spans(corpus: Corpus) -> Iterator[PbSpan]:  # pragma: no cover - debugging aid
    for _, v in corpus.messages:
        req = ExportTraceServiceRequest.FromString(v)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                yield from ss.spans
