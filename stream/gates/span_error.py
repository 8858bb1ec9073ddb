"""``span_error``: spans whose OTel status is ERROR (optionally only spans of some kinds)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.model import SpanKind, StatusCode, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.text import clip, plural


class SpanErrorSpec(GateSpecBase):
    type: Literal["span_error"] = "span_error"
    kinds: list[SpanKind] | None = Field(default=None, description="only spans of these kinds; default all")


class SpanErrorGate(BaseGate):
    type = "span_error"

    def __init__(self, spec: SpanErrorSpec) -> None:
        super().__init__(spec)
        self.kinds = frozenset(spec.kinds) if spec.kinds else None

    def evaluate(self, trace: Trace) -> GateResult:
        spans = trace.spans if self.kinds is None else [s for s in trace.spans if s.kind in self.kinds]
        if not spans:
            kinds = ", ".join(sorted(k.value for k in self.kinds or ()))
            return self.not_applicable(f"no spans of kind {kinds}")
        bad = sorted((s for s in spans if s.status_code == StatusCode.ERROR), key=lambda s: s.start_ns)
        if not bad:
            return self.passed(f"no error status on {plural(len(spans), 'span')}")
        evidence = [
            Evidence(s.span_id, clip(s.status_message) or None, f"{s.kind.value} span {s.name!r}"
                     + (f" error_type={s.error_type}" if s.error_type else ""))
            for s in bad
        ]  # fmt: skip
        names = ", ".join(dict.fromkeys(s.name for s in bad))
        return self.failed(f"{plural(len(bad), 'span')} with error status: {clip(names, 200)}", evidence)
