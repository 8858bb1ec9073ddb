"""``exception``: exception events recorded on spans.

``ignore_types`` drops exceptions of those types; ``only_types`` (when set) keeps only those.
A type matches a pattern exactly, by its last dotted part (``InternalServerError`` matches
``openai.InternalServerError``) or as a glob (``openai.*``).

``ignore_recovered`` (:mod:`stream.gates.retries`): ``identical_retry`` skips the exceptions of a span
that a later span of the same name under the same parent, with the same input, completed without
error (no error status, error type or exception); ``true`` those of a span that any later span of
the same name and parent did. The reason counts the recovered exceptions either way.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field

from schemas.model import Span, SpanKind, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.retries import IgnoreRecovered, Wording, all_skipped, note, recovered_spans, skipped
from stream.gates.text import clip, plural


class ExceptionSpec(GateSpecBase):
    type: Literal["exception"] = "exception"
    kinds: list[SpanKind] | None = Field(default=None, description="only spans of these kinds; default all")
    ignore_types: list[str] = Field(default_factory=list, description="exception types that never fail")
    only_types: list[str] | None = Field(default=None, description="when set, only these exception types fail")
    ignore_recovered: IgnoreRecovered = Field(
        default=False,
        description="identical_retry: do not count the exceptions of a span followed by a sibling of the same name "
        "with the same input that completed without error; true: by any such sibling of the same name",
    )


_HOW = "recovered by a later span of the same name and parent without error"
WORDING = Wording(_HOW, f"{_HOW} and with the same input", f"{_HOW} but with other input")


def type_matches(exc_type: str, pattern: str) -> bool:
    return exc_type == pattern or exc_type.rsplit(".", 1)[-1] == pattern or fnmatchcase(exc_type, pattern)


class ExceptionGate(BaseGate):
    type = "exception"

    def __init__(self, spec: ExceptionSpec) -> None:
        super().__init__(spec)
        self.kinds = frozenset(spec.kinds) if spec.kinds else None
        self.ignore = tuple(spec.ignore_types)
        self.only = tuple(spec.only_types) if spec.only_types is not None else None
        self.ignore_recovered = spec.ignore_recovered

    def _counts(self, exc_type: str) -> bool:
        if any(type_matches(exc_type, p) for p in self.ignore):
            return False
        return self.only is None or any(type_matches(exc_type, p) for p in self.only)

    def evaluate(self, trace: Trace) -> GateResult:
        spans = trace.spans if self.kinds is None else [s for s in trace.spans if s.kind in self.kinds]
        if not spans:
            kinds = ", ".join(sorted(k.value for k in self.kinds or ()))
            return self.not_applicable(f"no spans of kind {kinds}")
        evidence: list[tuple[Span, Evidence]] = []
        with_exceptions = [s for s in spans if s.exceptions]  # usually none: no sort then
        for s in sorted(with_exceptions, key=lambda s: s.start_ns):
            for e in s.exceptions:
                exc_type = e.type or ""
                if self._counts(exc_type):
                    evidence.append((s, Evidence(s.span_id, clip(e.message), exc_type or None)))
        if not evidence:
            return self.passed(f"no counted exception on {plural(len(spans), 'span')}")
        mode = self.ignore_recovered
        bad = list({id(s): s for s, _ in evidence}.values())
        retried_spans, other_spans = recovered_spans(spans, bad, _failed, mode)
        retried = {id(e) for s, e in evidence if id(s) in retried_spans}  # counted by exception, as the reason is
        other = {id(e) for s, e in evidence if id(s) in other_spans}
        if mode:
            dropped = skipped(mode, retried, other)
            kept = [(s, e) for s, e in evidence if id(e) not in dropped]
            if not kept:
                return self.passed(f"{plural(len(dropped), 'exception')} on {plural(len(spans), 'span')} "
                                   f"{all_skipped(mode, WORDING)}")  # fmt: skip
            evidence = kept
        types = ", ".join(dict.fromkeys(e.detail or "(no type)" for _, e in evidence))
        reason = f"{plural(len(evidence), 'exception')}: {clip(types, 200)}"
        return self.failed(reason + note(mode, retried, other, WORDING), [e for _, e in evidence])


def _failed(span: Span) -> bool:
    return span.is_error
