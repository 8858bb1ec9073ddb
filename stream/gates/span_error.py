"""``span_error``: spans whose OTel status is ERROR (optionally only spans of some kinds).

``ignore_recovered: true`` does not count an error span that a later span of the same name under
the same parent (by start time) completed without error: a retry that recovered. Off by default;
either way the reason counts the recovered spans. :mod:`stream.gates.tool_error` has the same
option for tool calls.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.model import Span, SpanKind, StatusCode, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.text import clip, plural, recovered_note


_RECOVERED = "recovered by a later successful span of the same name and parent"


class SpanErrorSpec(GateSpecBase):
    type: Literal["span_error"] = "span_error"
    kinds: list[SpanKind] | None = Field(default=None, description="only spans of these kinds; default all")
    ignore_recovered: bool = Field(
        default=False, description="do not count an error span followed by a successful sibling of the same name"
    )


class SpanErrorGate(BaseGate):
    type = "span_error"

    def __init__(self, spec: SpanErrorSpec) -> None:
        super().__init__(spec)
        self.kinds = frozenset(spec.kinds) if spec.kinds else None
        self.ignore_recovered = spec.ignore_recovered

    def evaluate(self, trace: Trace) -> GateResult:
        spans = trace.spans if self.kinds is None else [s for s in trace.spans if s.kind in self.kinds]
        if not spans:
            kinds = ", ".join(sorted(k.value for k in self.kinds or ()))
            return self.not_applicable(f"no spans of kind {kinds}")
        bad = sorted((s for s in spans if s.status_code == StatusCode.ERROR), key=lambda s: s.start_ns)
        if not bad:
            return self.passed(f"no error status on {plural(len(spans), 'span')}")
        kept = _unrecovered(spans, bad)
        recovered = len(bad) - len(kept)
        if self.ignore_recovered:
            if not kept:
                return self.passed(f"{plural(recovered, 'error span')} of {len(spans)} {_RECOVERED}")
            bad = kept
        evidence = [
            Evidence(s.span_id, clip(s.status_message) or None, f"{s.kind.value} span {s.name!r}"
                     + (f" error_type={s.error_type}" if s.error_type else ""))
            for s in bad
        ]  # fmt: skip
        names = ", ".join(dict.fromkeys(s.name for s in bad))
        reason = f"{plural(len(bad), 'span')} with error status: {clip(names, 200)}"
        return self.failed(reason + recovered_note(recovered, self.ignore_recovered, _RECOVERED), evidence)


def _unrecovered(spans: list[Span], bad: list[Span]) -> list[Span]:
    """The error spans (``bad``, by start time) that no later successful span of the same name
    under the same parent followed."""
    last_ok: dict[tuple[str | None, str], int] = {}
    for s in spans:
        if s.status_code != StatusCode.ERROR:
            key = (s.parent_span_id, s.name)
            last_ok[key] = max(last_ok.get(key, s.start_ns), s.start_ns)
    return [s for s in bad if last_ok.get((s.parent_span_id, s.name), s.start_ns) <= s.start_ns]
