"""What a gate produces, the interface every gate implements, and the loop that runs them.

A gate is a cheap, deterministic check run on *every* completed trace: a
:class:`~schemas.model.Trace` in, one :class:`GateResult` out, no I/O. Each gate is configured by
a pydantic spec (``type``, ``name``, ``severity`` and its options, see :mod:`stream.gates.registry`)
and built once at start; ``evaluate`` must stay cheap and read message content only when the check
needs it (``Span.input_messages`` / ``output_messages`` are parsed on first use).

:func:`run_gates` never raises: a gate that raises on an odd trace gives an ``error`` result with
the exception as its reason, so it is recorded — never a crashed worker, never a silent pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.model import Trace
from stream.gates.text import clip

log = logging.getLogger(__name__)

MAX_EVIDENCE = 20  # evidence items kept per result; the reason says how many there were
Severity = Literal["error", "warning", "info"]


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_check_regex)]  # a Python regex, checked at policy load


class GateOutcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"  # nothing in the trace for this gate to judge
    ERROR = "error"  # the gate itself failed on this trace


@dataclass(frozen=True, slots=True)
class Evidence:
    span_id: str | None = None
    text: str | None = None  # the matched / offending text, at most text.EVIDENCE_MAX_CHARS
    detail: str | None = None  # short machine-ish detail: which pattern, which tool, a count


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str  # the configured name
    type: str  # the gate type (span_error, loop, cel, ...)
    outcome: GateOutcome
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    severity: str = "error"


@runtime_checkable
class Gate(Protocol):
    name: str
    type: str

    def evaluate(self, trace: Trace) -> GateResult: ...


class GateSpecBase(BaseModel):
    """Fields every gate spec has. ``name`` defaults to the type, so ``- type: loop`` is enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=200, description="unique gate name; defaults to the type")
    severity: Severity = "error"

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("name"):
            type_field = cls.model_fields.get("type")
            gate_type = data.get("type") or (type_field.default if type_field else None)
            if isinstance(gate_type, str):
                return {**data, "name": gate_type}
        return data


class BaseGate:
    """Convenience base for gate implementations: holds the identity and builds results."""

    type: str = ""

    def __init__(self, spec: GateSpecBase) -> None:
        self.name = spec.name or self.type
        self.severity: str = spec.severity

    def evaluate(self, trace: Trace) -> GateResult:  # pragma: no cover - overridden
        raise NotImplementedError

    def result(self, outcome: GateOutcome, reason: str, evidence: Sequence[Evidence] = ()) -> GateResult:
        return GateResult(self.name, self.type, outcome, reason, list(evidence[:MAX_EVIDENCE]), self.severity)

    def passed(self, reason: str) -> GateResult:
        return self.result(GateOutcome.PASS, reason)

    def failed(self, reason: str, evidence: Sequence[Evidence] = ()) -> GateResult:
        return self.result(GateOutcome.FAIL, reason, evidence)

    def not_applicable(self, reason: str) -> GateResult:
        return self.result(GateOutcome.NOT_APPLICABLE, reason)


def run_gates(gates: Iterable[Gate], trace: Trace) -> list[GateResult]:
    """Evaluate every gate on ``trace``; never raises (a raising gate is an ``error`` result)."""
    results: list[GateResult] = []
    for gate in gates:
        try:
            results.append(gate.evaluate(trace))
        except Exception as exc:  # an odd trace must not stop the stream, nor pass silently
            log.debug("gate %s raised on trace %s", gate.name, trace.trace_id, exc_info=True)
            reason = clip(f"gate raised {type(exc).__name__}: {exc}", 1000) or ""
            severity = str(getattr(gate, "severity", "error"))
            results.append(GateResult(gate.name, gate.type, GateOutcome.ERROR, reason, [], severity))
    return results
