"""``required_action``: when the user asks for something, a specific tool must have been called.

If any user message matches the trigger (``trigger_patterns`` regexes or ``trigger_keywords``
whole words, case-insensitive), the trace must contain a call to one of ``required_tools``
(e.g. a refund request must reach ``issue_refund`` or ``escalate_to_human``), else it fails.
``not_applicable`` when no user message triggers the rule (or none was captured).
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Regex
from stream.gates.text import clip_around, keyword_regex
from stream.gates.trace_view import tool_uses, user_messages


class RequiredActionSpec(GateSpecBase):
    type: Literal["required_action"] = "required_action"
    trigger_patterns: list[Regex] = Field(default_factory=list, description="regexes, case-insensitive")
    trigger_keywords: list[str] = Field(default_factory=list, description="whole words, case-insensitive")
    required_tools: list[str] = Field(min_length=1, description="one of these tools must be called")

    @model_validator(mode="after")
    def _some_trigger(self) -> Self:
        if not self.trigger_patterns and not self.trigger_keywords:
            raise ValueError("set trigger_patterns and/or trigger_keywords")
        return self


class RequiredActionGate(BaseGate):
    type = "required_action"

    def __init__(self, spec: RequiredActionSpec) -> None:
        super().__init__(spec)
        self.triggers = [re.compile(p, re.IGNORECASE) for p in spec.trigger_patterns]
        if spec.trigger_keywords:
            self.triggers.append(keyword_regex(spec.trigger_keywords))
        self.required = frozenset(spec.required_tools)
        self.required_text = ", ".join(spec.required_tools)

    def evaluate(self, trace: Trace) -> GateResult:
        trigger = self._trigger(trace)
        if trigger is None:
            return self.not_applicable("no user message matches the trigger")
        called = [u for u in tool_uses(trace) if u.name in self.required]
        if called:
            return self.passed(f"triggered and {called[0].name} was called")
        span_id, text, m = trigger
        ev = Evidence(span_id, clip_around(text, m.start(), m.end()), f"trigger {m.group(0)!r}")
        return self.failed(f"user asked ({m.group(0)!r}) but none of {self.required_text} was called", [ev])

    def _trigger(self, trace: Trace) -> tuple[str, str, re.Match[str]] | None:
        for span_id, text in user_messages(trace):
            for rx in self.triggers:
                if m := rx.search(text):
                    return span_id, text, m
        return None
