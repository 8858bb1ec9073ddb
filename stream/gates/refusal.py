"""``refusal``: the final answer is a refusal ("I'm sorry, but I can't help with that").

``patterns`` are Python regexes searched case-insensitively in the final answer
(the text of :attr:`schemas.model.Trace.final_output`); by default only its first ``scan_chars`` characters
are searched, where refusals are phrased. ``not_applicable`` when there is no final answer text.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Regex, Severity
from stream.gates.text import any_match_regex, clip_around
from stream.gates.trace_view import final_output

_APOS = r"[’']"  # models write both apostrophes
DEFAULT_REFUSAL_PATTERNS = [
    rf"\bI(?: am|{_APOS}m) (?:sorry|afraid),? but I (?:can(?:not|{_APOS}t)|won{_APOS}t|am unable to)\b",
    rf"\bI (?:can(?:not|{_APOS}t)|won{_APOS}t|am not able to) (?:help|assist) with\b",
    rf"\bI(?: am|{_APOS}m) (?:unable|not able) to\b",
    r"\bAs an AI(?: language model| assistant)?\b",
    rf"\bI can{_APOS}t (?:provide|do|comply|fulfil+)\b",
]


class RefusalSpec(GateSpecBase):
    type: Literal["refusal"] = "refusal"
    severity: Severity = "warning"
    patterns: list[Regex] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS))
    scan_chars: int | None = Field(default=2000, gt=0, description="search only the answer's first N characters")


class RefusalGate(BaseGate):
    type = "refusal"

    def __init__(self, spec: RefusalSpec) -> None:
        super().__init__(spec)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in spec.patterns]
        self.scan_chars = spec.scan_chars
        self.any_pattern = any_match_regex(self.patterns)  # most answers are no refusal: one scan

    def evaluate(self, trace: Trace) -> GateResult:
        span_id, answer = final_output(trace)
        if not answer.strip():
            return self.not_applicable("no final answer text")
        scanned = answer[: self.scan_chars] if self.scan_chars else answer
        if self.any_pattern is not None and self.any_pattern.search(scanned) is None:
            return self.passed("no refusal pattern in the final answer")
        for p in self.patterns:
            if m := p.search(scanned):
                ev = Evidence(span_id, clip_around(answer, m.start(), m.end()), f"matches {p.pattern!r}")
                return self.failed(f"final answer is a refusal: {m.group(0)!r}", [ev])
        return self.passed("no refusal pattern in the final answer")
