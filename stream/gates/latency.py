"""``latency``: the trace took longer than ``max_ms`` — or, with ``span_kinds``, any span of those
kinds did (e.g. ``span_kinds: [llm]`` flags each slow model call)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.model import SpanKind, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Severity
from stream.gates.text import plural

NS_PER_MS = 1_000_000


class LatencySpec(GateSpecBase):
    type: Literal["latency"] = "latency"
    severity: Severity = "warning"
    max_ms: float = Field(default=60_000, gt=0, description="duration limit in milliseconds")
    span_kinds: list[SpanKind] | None = Field(default=None, description="check spans of these kinds, not the trace")


class LatencyGate(BaseGate):
    type = "latency"

    def __init__(self, spec: LatencySpec) -> None:
        super().__init__(spec)
        self.max_ms = spec.max_ms
        self.max_ns = spec.max_ms * NS_PER_MS
        self.kinds = frozenset(spec.span_kinds) if spec.span_kinds else None

    def evaluate(self, trace: Trace) -> GateResult:
        if self.kinds is None:
            ms = trace.duration_ns / NS_PER_MS
            if ms > self.max_ms:
                root = trace.root
                ev = Evidence(root.span_id if root else None, None, f"trace duration {ms:.0f} ms")
                return self.failed(f"trace took {ms:.0f} ms > {self.max_ms:g} ms", [ev])
            return self.passed(f"trace took {ms:.0f} ms <= {self.max_ms:g} ms")
        spans = [s for s in trace.spans if s.kind in self.kinds]
        if not spans:
            return self.not_applicable(f"no spans of kind {', '.join(sorted(k.value for k in self.kinds))}")
        slow = sorted((s for s in spans if s.duration_ns > self.max_ns), key=lambda s: -s.duration_ns)
        if not slow:
            worst = max(s.duration_ns for s in spans) / NS_PER_MS
            return self.passed(f"slowest of {plural(len(spans), 'span')} took {worst:.0f} ms <= {self.max_ms:g} ms")
        evidence = [
            Evidence(s.span_id, None, f"{s.kind.value} span {s.name!r} took {s.duration_ns / NS_PER_MS:.0f} ms")
            for s in slow
        ]
        worst_ms = slow[0].duration_ns / NS_PER_MS
        return self.failed(f"{plural(len(slow), 'span')} over {self.max_ms:g} ms (slowest {worst_ms:.0f} ms)", evidence)
