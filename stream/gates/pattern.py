"""``pattern``: regex / keyword rules over inputs, outputs, tool arguments or tool results.

``target`` picks the text: ``input`` (the user's messages), ``output`` (assistant output of every
LLM span), ``both``, ``tool_args`` or ``tool_results``. Each entry of ``patterns`` (name → Python
regex) is a rule; ``keywords`` together form one more rule named ``keywords`` (whole words,
case-insensitive).

* ``mode: match_fails`` (default) — any rule matching anywhere fails (e.g. PII in outputs; the
  defaults find e-mail addresses, credit-card-like digit runs and US SSNs).
* ``mode: missing_fails`` — every rule must match somewhere; a rule that never does fails
  (e.g. a required disclaimer).

Matched text is masked in the evidence (``redact_evidence``, on by default): the gate results
table must not become a second copy of the leak. ``not_applicable`` when the target has no text.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.model import Trace
from stream.gates.base import MAX_EVIDENCE, BaseGate, Evidence, GateResult, GateSpecBase, Regex
from stream.gates.text import clip_around, keyword_regex, plural, redact, required_chars
from stream.gates.trace_view import output_texts, tool_uses, user_messages

Target = Literal["input", "output", "both", "tool_args", "tool_results"]
DEFAULT_PII_PATTERNS = {
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
    "credit_card": r"\b(?:\d[ -]?){12,15}\d\b",  # 13-16 digits, optionally grouped
    "us_ssn": r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b",
}


class PatternSpec(GateSpecBase):
    type: Literal["pattern"] = "pattern"
    target: Target = "output"
    patterns: dict[str, Regex] = Field(default_factory=lambda: dict(DEFAULT_PII_PATTERNS))
    keywords: list[str] = Field(default_factory=list, description="whole words, case-insensitive")
    ignore_case: bool = Field(default=False, description="match patterns case-insensitively")
    mode: Literal["match_fails", "missing_fails"] = "match_fails"
    redact_evidence: bool = True

    @model_validator(mode="after")
    def _some_rule(self) -> Self:
        if not self.patterns and not self.keywords:
            raise ValueError("set patterns and/or keywords")
        return self


class PatternGate(BaseGate):
    type = "pattern"

    def __init__(self, spec: PatternSpec) -> None:
        super().__init__(spec)
        flags = re.IGNORECASE if spec.ignore_case else 0
        self.rules = [(name, re.compile(p, flags)) for name, p in spec.patterns.items()]
        if spec.keywords:
            self.rules.append(("keywords", keyword_regex(spec.keywords)))
        self.target = spec.target
        self.mode = spec.mode
        self.redact = spec.redact_evidence
        # characters each rule cannot match without (``@`` for e-mail addresses): most texts hold
        # no PII, and a missing character skips that rule's search of the text
        self.checked = [(name, rx, required_chars(rx)) for name, rx in self.rules]

    def texts(self, trace: Trace) -> list[tuple[str, str, str]]:
        """``(span_id, where, text)`` for the target."""
        t = self.target
        out: list[tuple[str, str, str]] = []
        if t in ("input", "both"):
            out += [(sid, "input", text) for sid, text in user_messages(trace)]
        if t in ("output", "both"):
            out += [(sid, "output", text) for sid, text in output_texts(trace)]
        if t == "tool_args":
            out += [(u.span_id, f"{u.name} arguments", u.arguments) for u in tool_uses(trace) if u.arguments]
        if t == "tool_results":
            out += [(u.span_id, f"{u.name} result", u.result) for u in tool_uses(trace) if u.result]
        return out

    def evaluate(self, trace: Trace) -> GateResult:
        texts = self.texts(trace)
        if not texts:
            return self.not_applicable(f"no {self.target} text in the trace")
        if self.mode == "missing_fails":
            return self._missing(texts)
        evidence: list[Evidence] = []
        counts: Counter[str] = Counter()
        for span_id, where, text in texts:
            for name, rx, required in self.checked:
                if required and not all(c in text for c in required):
                    continue
                for m in rx.finditer(text):
                    counts[name] += 1
                    if len(evidence) < MAX_EVIDENCE:
                        shown = redact(m.group(0)) if self.redact else clip_around(text, m.start(), m.end())
                        evidence.append(Evidence(span_id, shown, f"{name} in {where}"))
        if not counts:
            return self.passed(f"no rule matched in {plural(len(texts), self.target + ' text')}")
        summary = ", ".join(f"{name} ×{n}" for name, n in counts.most_common())
        return self.failed(f"{plural(sum(counts.values()), 'match')} in {self.target}: {summary}", evidence)

    def _missing(self, texts: list[tuple[str, str, str]]) -> GateResult:
        missing = [
            name
            for name, rx, required in self.checked
            if not any(all(c in text for c in required) and rx.search(text) for _, _, text in texts)
        ]
        if not missing:
            return self.passed(f"every rule matched in {self.target}")
        evidence = [Evidence(None, None, f"{name} not found") for name in missing]
        return self.failed(f"required in {self.target} but missing: {', '.join(missing)}", evidence)
