"""``span_error``: spans whose OTel status is ERROR (optionally only spans of some kinds).

``ignore_recovered`` (:mod:`stream.gates.retries`): ``identical_retry`` skips an error span that a
later span of the same name under the same parent, with the same input, completed without error
status; ``true`` one that any later span of the same name and parent did. The reason counts the
recovered spans either way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.model import Span, SpanKind, StatusCode, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.retries import IgnoreRecovered, Wording, all_skipped, note, recovered_spans, skipped
from stream.gates.text import clip, plural


_HOW = "recovered by a later successful span of the same name and parent"
WORDING = Wording(_HOW, f"{_HOW} with the same input", f"{_HOW} with other input")


class SpanErrorSpec(GateSpecBase):
    type: Literal["span_error"] = "span_error"
    kinds: list[SpanKind] | None = Field(default=None, description="only spans of these kinds; default all")
    ignore_recovered: IgnoreRecovered = Field(
        default=False,
        description="identical_retry: do not count an error span followed by a successful sibling of the same name "
        "with the same input; true: by any successful sibling of the same name",
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
        mode = self.ignore_recovered
        retried, other = recovered_spans(spans, bad, _has_error_status, mode)
        if mode:
            dropped = skipped(mode, retried, other)
            kept = [s for s in bad if id(s) not in dropped]
            if not kept:
                return self.passed(f"{plural(len(dropped), 'error span')} of {len(spans)} {all_skipped(mode, WORDING)}")
            bad = kept
        evidence = [
            Evidence(s.span_id, clip(s.status_message) or None, f"{s.kind.value} span {s.name!r}"
                     + (f" error_type={s.error_type}" if s.error_type else ""))
            for s in bad
        ]  # fmt: skip
        names = ", ".join(dict.fromkeys(s.name for s in bad))
        reason = f"{plural(len(bad), 'span')} with error status: {clip(names, 200)}"
        return self.failed(reason + note(mode, retried, other, WORDING), evidence)


def _has_error_status(span: Span) -> bool:
    return span.status_code == StatusCode.ERROR
