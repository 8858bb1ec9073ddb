"""``final_answer``: the agent's final answer is missing or was cut off.

The final answer is the output of the LLM span that ended last. It fails when that span's finish
reason says it was truncated (``truncation_reasons``, compared case-insensitively) or when its
assistant output has no text (e.g. the run ended on a tool-call request). ``not_applicable`` when
the trace has no LLM span or the last one recorded no output messages (content capture off, or
the call failed — which the ``span_error`` gate reports).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.text import clip
from stream.gates.trace_view import last_llm_span


class FinalAnswerSpec(GateSpecBase):
    type: Literal["final_answer"] = "final_answer"
    truncation_reasons: list[str] = Field(
        default_factory=lambda: ["length", "max_tokens", "max_output_tokens", "model_length"],
        description="finish reasons meaning the answer was cut off",
    )
    check_empty: bool = Field(default=True, description="fail when the final answer has no text")


class FinalAnswerGate(BaseGate):
    type = "final_answer"

    def __init__(self, spec: FinalAnswerSpec) -> None:
        super().__init__(spec)
        self.truncation = frozenset(r.lower() for r in spec.truncation_reasons)
        self.check_empty = spec.check_empty

    def evaluate(self, trace: Trace) -> GateResult:
        last = last_llm_span(trace)
        if last is None:
            return self.not_applicable("no LLM span")
        cut = [r for r in last.finish_reasons if r.lower() in self.truncation]
        if cut:  # normalized at ingest: no message content needed
            return self.failed(f"final answer truncated (finish reason {cut[0]!r})",
                               [Evidence(last.span_id, None, f"finish_reasons={list(last.finish_reasons)}")])  # fmt: skip
        if not self.check_empty:
            return self.passed("final answer not truncated")
        outputs = last.output_messages
        if not outputs:
            return self.not_applicable("the last LLM span recorded no output messages")
        text = next((m.content for m in reversed(outputs) if m.content.strip()), "")
        for m in outputs:
            if m.finish_reason and m.finish_reason.lower() in self.truncation:
                return self.failed(f"final answer truncated (finish reason {m.finish_reason!r})",
                                   [Evidence(last.span_id, clip(text) or None, f"finish_reason={m.finish_reason}")])  # fmt: skip
        if not text:
            calls = [c.name for m in outputs for c in m.tool_calls]
            detail = f"ended on tool call request {', '.join(calls)}" if calls else "no text"
            return self.failed("final answer is empty", [Evidence(last.span_id, None, detail)])
        return self.passed("final answer present and not truncated")
