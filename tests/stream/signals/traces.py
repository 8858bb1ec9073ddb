"""Builders of multi-turn agent traces for the signal tests (and a throughput check).

:func:`conversation` lays out an ``invoke_agent`` root and, per user turn, ``chat`` spans whose
``gen_ai.input.messages`` repeat the whole conversation so far (as real instrumentations do),
with ``execute_tool`` spans between them. Span ids are predictable: ``sid(n)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.decode import decode_message
from schemas.model import CompletionReason, Span, Trace
from tests.factories import T0, SpanSpec, proto

TID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
ROOT = b"\x00" * 7 + b"\x01"
MS = 1_000_000
SYSTEM = "You are a helpful support agent."


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def chat(span_id: bytes, start: int, inputs: list[dict[str, Any]], output: dict[str, Any] | None = None,
         trace_id: bytes = TID, parent: bytes = ROOT) -> SpanSpec:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                             "gen_ai.request.model": "gpt-4o-mini", "gen_ai.input.messages": json.dumps(inputs)}
    if output is not None:
        attrs["gen_ai.output.messages"] = json.dumps([output])
    return SpanSpec(trace_id, span_id, parent, "chat gpt-4o-mini", start, start + 50 * MS, attrs)


def root(attrs: dict[str, Any] | None = None, name: str = "invoke_agent support", end: int = T0 + 10**12) -> SpanSpec:
    base = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
    return SpanSpec(TID, ROOT, b"", name, T0, end, attrs if attrs is not None else base)


def to_trace(specs: Sequence[SpanSpec]) -> Trace:
    spans: list[Span] = decode_message(proto(list(specs)))
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)


@dataclass
class Conversation:
    specs: list[SpanSpec]
    first_chat: list[str]  # per turn: hex id of the chat span where the user message first appears

    def trace(self) -> Trace:
        return to_trace(self.specs)


def conversation(user_turns: Sequence[str], tools_per_turn: Sequence[int] | None = None,
                 history: Sequence[dict[str, Any]] = ()) -> Conversation:
    """One trace holding every turn of ``user_turns``: chat spans replay the conversation so far
    (``history`` first), tool spans in between. Spans are laid out in time, ids from 2 upwards."""
    tools = list(tools_per_turn) if tools_per_turn is not None else [1] * len(user_turns)
    specs = [root()]
    messages: list[dict[str, Any]] = [{"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
                                      *history]
    first_chat: list[str] = []
    n, t = 2, T0 + MS
    for turn, (user, n_tools) in enumerate(zip(user_turns, tools, strict=True)):
        messages.append(text("user", user))
        first_chat.append(sid(n).hex())
        for k in range(n_tools):
            call = {"type": "tool_call", "id": f"call_{turn}_{k}", "name": "lookup", "arguments": {"q": k}}
            out = {"role": "assistant", "parts": [call], "finish_reason": "tool_call"}
            specs.append(chat(sid(n), t, list(messages), out))
            messages.append({"role": "assistant", "parts": [call]})
            specs.append(SpanSpec(TID, sid(n + 1), ROOT, "execute_tool lookup", t + 60 * MS, t + 90 * MS,
                                  {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}))
            messages.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": call["id"],
                                                        "response": "ok"}]})
            n, t = n + 2, t + 100 * MS
        answer = text("assistant", f"Here is answer {turn}.")
        specs.append(chat(sid(n), t, list(messages), {**answer, "finish_reason": "stop"}))
        messages.append(answer)
        n, t = n + 1, t + 100 * MS
    return Conversation(specs, first_chat)
