"""``exception``: exception events recorded on spans.

``ignore_types`` drops exceptions of those types; ``only_types`` (when set) keeps only those.
A type matches a pattern exactly, by its last dotted part (``InternalServerError`` matches
``openai.InternalServerError``) or as a glob (``openai.*``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field

from schemas.model import SpanKind, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.text import clip, plural


class ExceptionSpec(GateSpecBase):
    type: Literal["exception"] = "exception"
    kinds: list[SpanKind] | None = Field(default=None, description="only spans of these kinds; default all")
    ignore_types: list[str] = Field(default_factory=list, description="exception types that never fail")
    only_types: list[str] | None = Field(default=None, description="when set, only these exception types fail")


def type_matches(exc_type: str, pattern: str) -> bool:
    return exc_type == pattern or exc_type.rsplit(".", 1)[-1] == pattern or fnmatchcase(exc_type, pattern)


class ExceptionGate(BaseGate):
    type = "exception"

    def __init__(self, spec: ExceptionSpec) -> None:
        super().__init__(spec)
        self.kinds = frozenset(spec.kinds) if spec.kinds else None
        self.ignore = tuple(spec.ignore_types)
        self.only = tuple(spec.only_types) if spec.only_types is not None else None

    def _counts(self, exc_type: str) -> bool:
        if any(type_matches(exc_type, p) for p in self.ignore):
            return False
        return self.only is None or any(type_matches(exc_type, p) for p in self.only)

    def evaluate(self, trace: Trace) -> GateResult:
        spans = trace.spans if self.kinds is None else [s for s in trace.spans if s.kind in self.kinds]
        if not spans:
            kinds = ", ".join(sorted(k.value for k in self.kinds or ()))
            return self.not_applicable(f"no spans of kind {kinds}")
        evidence: list[Evidence] = []
        types: dict[str, None] = {}
        with_exceptions = [s for s in spans if s.exceptions]  # usually none: no sort then
        for s in sorted(with_exceptions, key=lambda s: s.start_ns):
            for e in s.exceptions:
                exc_type = e.type or ""
                if self._counts(exc_type):
                    types[exc_type or "(no type)"] = None
                    evidence.append(Evidence(s.span_id, clip(e.message), exc_type or None))
        if not evidence:
            return self.passed(f"no counted exception on {plural(len(spans), 'span')}")
        return self.failed(f"{plural(len(evidence), 'exception')}: {clip(', '.join(types), 200)}", evidence)
