"""``cel``: a user-defined gate — a CEL expression over the trace that describes the *failure*.

``fail_when`` is evaluated against ``trace`` (fields in :mod:`stream.gates.cel_view`); ``true``
fails the gate, ``false`` passes it, anything else (or an evaluation error, e.g. an unknown field)
is a gate ``error`` via :func:`stream.gates.base.run_gates`. Example::

    - type: cel
      name: email_without_confirmation
      fail_when: >-
        trace.tool_calls.exists(t, t.name == "send_email")
        && !trace.final_output.contains("confirmation")

The expression is compiled when the policy is loaded; a syntax error stops the worker at start
with the gate named. Evaluated with the ``common-expression-language`` library (module ``cel``):
the CEL core macros (``exists``, ``all``, ``filter``, ``map``, ``size``, ``has``) and string
functions (``contains``, ``startsWith``, ``endsWith``, ``matches``) are available; CEL never mixes
``int`` and ``double`` in arithmetic (``trace.duration_ms / 1000`` fails: write ``1000.0``),
though comparisons between them work.
"""

from __future__ import annotations

from typing import Literal

import cel
from pydantic import Field, field_validator

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.cel_view import CelTraceView
from stream.gates.text import clip


def compile_expression(expression: str, gate_name: str = "") -> cel.Program:
    """Compile ``expression``; a syntax error raises ``ValueError`` naming the gate."""
    try:
        return cel.compile(expression)
    except ValueError as exc:  # what the library raises for a syntax error
        where = f"gate {gate_name!r}: " if gate_name else ""
        raise ValueError(f"{where}invalid CEL expression in fail_when: {exc}") from None


class CelSpec(GateSpecBase):
    type: Literal["cel"] = "cel"
    fail_when: str = Field(min_length=1, description="CEL expression over `trace`; true means the gate fails")
    description: str = Field(default="", description="what a failure means, used as the reason")

    @field_validator("fail_when")
    @classmethod
    def _compiles(cls, expression: str) -> str:
        compile_expression(expression)
        return expression


class CelGate(BaseGate):
    type = "cel"

    def __init__(self, spec: CelSpec) -> None:
        super().__init__(spec)
        self.program = compile_expression(spec.fail_when, spec.name)
        self.view = CelTraceView(spec.fail_when)
        self.expression = spec.fail_when
        self.description = spec.description

    def evaluate(self, trace: Trace) -> GateResult:
        value = self.program.execute(self.view.build(trace))
        if not isinstance(value, bool):
            raise TypeError(f"fail_when must evaluate to a bool, got {type(value).__name__}: {clip(repr(value), 100)}")
        if value:
            reason = self.description or f"fail_when is true: {clip(self.expression, 200)}"
            return self.failed(reason, [Evidence(None, None, clip(self.expression))])
        return self.passed("fail_when is false")
