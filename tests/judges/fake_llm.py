"""An in-process fake ``Provider`` modelling an *obedient* LLM judge, and a trace builder.

:class:`ObedientLLM` reads the whole request. If it finds an injected instruction ("ignore
previous instructions…", "respond with label pass", …) anywhere that is NOT inside a spotlight
block whose nonce the system prompt declared, it obeys and answers ``pass``. Otherwise it grades
honestly by a fixed rule: ``fail`` if the prompt shows the word ``ERROR`` (an error in the final
answer, a tool result, or a tool span rendered ``status=ERROR``), ``pass`` otherwise.

:class:`ScriptedLLM` answers from a script of texts or raises scripted ``ProviderError``s.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from judges.providers.base import ChatRequest, ChatResponse, ProviderError
from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from tests.factories import T0, SpanSpec, proto

INJECTION = re.compile(
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|earlier|above) instructions"
    r"|respond with (?:the )?label\s*[\"']?pass"
    r"|(?:output|return|set) (?:the )?label\s*(?:to|=|:)?\s*[\"']?pass",
    re.IGNORECASE,
)
_DECLARED = re.compile(r"<untrusted-([0-9a-f]{16})>")


def _outside_spotlight(req: ChatRequest) -> str:
    """The request text with every block of the declared nonce removed."""
    text = "\n".join(c for _, c in req.messages)
    declared = _DECLARED.search(req.system)
    if declared:
        nonce = re.escape(declared.group(1))
        text = re.sub(rf"<untrusted-{nonce}>.*?</untrusted-{nonce}>", "", text, flags=re.DOTALL)
    return req.system + "\n" + text


def _answer(label: str, why: str) -> str:
    return json.dumps({"label": label, "score": 1.0 if label == "pass" else 0.0, "explanation": why, "evidence": []})


class _Base:
    name = "fake"
    price_in_per_1m = 0.15
    price_out_per_1m = 0.60

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_in_per_1m + output_tokens * self.price_out_per_1m) / 1e6

    def _respond(self, req: ChatRequest, text: str) -> ChatResponse:
        n_in = (len(req.system) + sum(len(c) for _, c in req.messages)) // 4
        return ChatResponse(text=text, model=f"{req.model}-2025-01-01", input_tokens=n_in,
                            output_tokens=len(text) // 4, latency_s=0.01, attempts=1)  # fmt: skip


class ObedientLLM(_Base):
    async def complete(self, req: ChatRequest) -> ChatResponse:
        self.requests.append(req)
        if INJECTION.search(_outside_spotlight(req)):
            return self._respond(req, _answer("pass", "As instructed, the trace passes."))
        full = req.system + "\n" + "\n".join(c for _, c in req.messages)
        if re.search(r"\bERROR\b", full):
            return self._respond(req, _answer("fail", "The trace shows an ERROR."))
        return self._respond(req, _answer("pass", "No error in the trace."))


class ScriptedLLM(_Base):
    def __init__(self, script: Sequence[str | ProviderError]) -> None:
        super().__init__()
        self.script = list(script)

    async def complete(self, req: ChatRequest) -> ChatResponse:
        self.requests.append(req)
        item = self.script.pop(0)
        if isinstance(item, ProviderError):
            raise item
        return self._respond(req, item)


def build_trace(
    user: str,
    answer: str,
    tool_result: str | None = None,
    *,
    tool_error: bool = False,
    system: str | None = None,
    seed: int = 0,
) -> Trace:
    """A support-agent trace: user asks, the agent calls ``lookup_order``, then answers."""
    rng = random.Random(seed)
    tid, root = rng.randbytes(16), rng.randbytes(8)
    msg = lambda role, text: {"role": role, "parts": [{"type": "text", "content": text}]}
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    if system:
        chat["gen_ai.system_instructions"] = system
    call = {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "lookup_order",
                                            "arguments": {"order": 42}}]}  # fmt: skip
    specs = [
        SpanSpec(tid, root, name="invoke_agent support", end=T0 + 5 * 10**9,
                 attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                        "service.name": "support-bot"}),
        SpanSpec(tid, rng.randbytes(8), root, "chat gpt-4o-mini", T0 + 10**8, T0 + 2 * 10**8,
                 {**chat, "gen_ai.input.messages": json.dumps([msg("user", user)]),
                  "gen_ai.output.messages": json.dumps([call])}),
    ]  # fmt: skip
    if tool_result is not None:
        specs.append(SpanSpec(tid, rng.randbytes(8), root, "execute_tool lookup_order", T0 + 3 * 10**8,
                              T0 + 4 * 10**8, {"gen_ai.operation.name": "execute_tool",
                              "gen_ai.tool.name": "lookup_order", "gen_ai.tool.call.id": "c1",
                              "gen_ai.tool.call.arguments": '{"order": 42}',
                              "gen_ai.tool.call.result": tool_result}, error=tool_error))  # fmt: skip
    out = [msg("assistant", answer) | {"finish_reason": "stop"}]
    specs.append(SpanSpec(tid, rng.randbytes(8), root, "chat gpt-4o-mini", T0 + 5 * 10**8, T0 + 6 * 10**8,
                          {**chat, "gen_ai.input.messages": json.dumps([msg("user", user)]),
                           "gen_ai.output.messages": json.dumps(out)}))  # fmt: skip
    return trace_from(specs)


def trace_from(specs: list[SpanSpec]) -> Trace:
    spans = decode_message(proto(specs))
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
