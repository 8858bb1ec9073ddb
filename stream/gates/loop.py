"""``loop``: the agent calls the same tool with the same arguments ``min_repeats`` times or more.

Arguments are compared after JSON canonicalization (sorted keys, no whitespace) when they parse,
as stripped text otherwise, so ``{"a": 1, "b": 2}`` and ``{"b":2,"a":1}`` are the same call.

``ignore_errors: true`` does not count calls whose tool span recorded an error (error status,
``error.type`` or an exception): calling a failing tool again with the same arguments is a retry,
not a loop. A retry that never got past the error still fails ``tool_error`` (its last call
failed); one that did is what ``ignore_recovered: identical_retry`` skips there, so the two agree
(the default policy sets both). Calls that answered, even with an error-looking result, still count:
an agent asking the same thing again and again and getting the same answer is stuck.

Calls whose arguments were not recorded (tool-call arguments are opt-in content in the GenAI
conventions) are not compared: unknown arguments are not the same arguments.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Severity
from stream.gates.text import clip, plural
from stream.gates.trace_view import ToolUse, arguments_key, canonical_json, tool_uses


class LoopSpec(GateSpecBase):
    type: Literal["loop"] = "loop"
    severity: Severity = "warning"
    min_repeats: int = Field(default=3, ge=2, description="identical calls that make a loop")
    ignore_tools: list[str] = Field(default_factory=list, description="tools expected to repeat (polling)")
    ignore_errors: bool = Field(default=False, description="do not count calls whose tool span recorded an error "
                                "(retries of a failing call)")  # fmt: skip


def _ids(uses: list[ToolUse], limit: int = 5) -> str:
    ids = ", ".join(u.span_id for u in uses[:limit])
    return ids + (", …" if len(uses) > limit else "")


class LoopGate(BaseGate):
    type = "loop"

    def __init__(self, spec: LoopSpec) -> None:
        super().__init__(spec)
        self.min_repeats = spec.min_repeats
        self.ignore = frozenset(spec.ignore_tools)
        self.ignore_errors = spec.ignore_errors

    def evaluate(self, trace: Trace) -> GateResult:
        uses = [u for u in tool_uses(trace) if u.name not in self.ignore]
        if not uses:
            return self.not_applicable("no tool calls")
        notes = ""
        if self.ignore_errors and (n := sum(1 for u in uses if u.span is not None and u.span.is_error)):
            uses = [u for u in uses if u.span is None or not u.span.is_error]
            notes = f" ({plural(n, 'call')} with an error not counted)"
        if n := sum(1 for u in uses if u.arguments is None):  # not recorded (content capture off): unknown, not equal
            uses = [u for u in uses if u.arguments is not None]
            notes += f" ({plural(n, 'call')} without recorded arguments not compared)"
            if not uses:
                return self.not_applicable(f"no tool call with recorded arguments{notes}")
        per_name = Counter(u.name for u in uses)
        groups: dict[tuple[str, bytes | str], list[ToolUse]] = {}
        for u in uses:  # only tools called often enough can loop: parse only their arguments
            if per_name[u.name] >= self.min_repeats:
                # grouped by a cheaper key equivalent to canonical_json; the canonical text is only
                # needed for the evidence of a loop
                groups.setdefault((u.name, arguments_key(u.arguments)), []).append(u)
        loops = [((name, canonical_json(g[0].arguments)), g) for (name, _), g in groups.items()
                 if len(g) >= self.min_repeats]  # fmt: skip
        if not loops:
            return self.passed(f"no tool call repeated {self.min_repeats} times with the same arguments{notes}")
        evidence = [
            Evidence(g[0].span_id, clip(args), f"{name} called {len(g)} times, spans {_ids(g)}")
            for (name, args), g in loops
        ]
        worst = max(loops, key=lambda kg: len(kg[1]))
        reason = (f"{plural(len(loops), 'repeated call')}: {worst[0][0]} called {len(worst[1])} times "
                  f"with the same arguments (limit {self.min_repeats}){notes}")  # fmt: skip
        return self.failed(reason, evidence)
