"""``tool_error``: tool calls that failed.

A call fails when its tool span has error status, an ``error.type`` or an exception event, or
when its result text looks like an error (``result_patterns``, Python regexes searched in the
result; the defaults catch a JSON ``"error": <something>`` member, a Python traceback and text
starting with ``Error``/``Exception``). Results are read from tool spans, or from ``role=tool``
messages when the trace has no tool spans (see :func:`stream.gates.trace_view.tool_uses`).

``ignore_recovered: true`` does not count a failed call that a later call of the same tool (by
start time) completed without error: the agent retried and recovered (a transient 503, a
timeout). Such retries are a common false positive of this gate, and every false positive is a
judge call (see README, judge economics). The gate still fails on a tool whose last call failed.
Off by default (a retry with other arguments can hide a wrong call); either way the reason counts
the recovered calls, so the stored gate results show what the option would drop.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from schemas.model import StatusCode, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Regex
from stream.gates.text import clip, clip_around, plural, recovered_note
from stream.gates.trace_view import ToolUse, tool_uses

DEFAULT_RESULT_PATTERNS = [
    r'"error"\s*:\s*+(?!null\b|false\b|""|\{\s*\}|\[\s*\])',  # {"error": ...} unless empty/null/false
    r"Traceback \(most recent call last\)",
    r"\A\s*(?:Error|ERROR|Exception)\b",
]


_RECOVERED = "recovered by a later successful call of the same tool"


class ToolErrorSpec(GateSpecBase):
    type: Literal["tool_error"] = "tool_error"
    result_patterns: list[Regex] = Field(default_factory=lambda: list(DEFAULT_RESULT_PATTERNS))
    ignore_tools: list[str] = Field(default_factory=list, description="tool names never checked")
    ignore_recovered: bool = Field(
        default=False, description="do not count a failed call followed by a successful call of the same tool"
    )


def _span_error(use: ToolUse) -> str | None:
    s = use.span
    if s is None:
        return None
    if s.status_code == StatusCode.ERROR:
        return s.status_message or s.error_type or "error status"
    if s.error_type:
        return s.error_type
    if s.exceptions:
        e = s.exceptions[0]
        return f"{e.type or 'exception'}: {e.message or ''}".strip()
    return None


class ToolErrorGate(BaseGate):
    type = "tool_error"

    def __init__(self, spec: ToolErrorSpec) -> None:
        super().__init__(spec)
        self.patterns = [re.compile(p) for p in spec.result_patterns]
        self.ignore = frozenset(spec.ignore_tools)
        self.ignore_recovered = spec.ignore_recovered

    def evaluate(self, trace: Trace) -> GateResult:
        uses = [u for u in tool_uses(trace) if u.name not in self.ignore]
        if not uses:
            return self.not_applicable("no tool calls")
        evidence: list[Evidence] = []
        failed_at: list[int] = []
        for i, u in enumerate(uses):
            if (err := _span_error(u)) is not None:
                evidence.append(Evidence(u.span_id, clip(err), f"tool {u.name}: span error"))
                failed_at.append(i)
            elif u.result:
                for p in self.patterns:
                    if m := p.search(u.result):
                        text = clip_around(u.result, m.start(), m.end())
                        evidence.append(Evidence(u.span_id, text, f"tool {u.name}: result matches {p.pattern!r}"))
                        failed_at.append(i)
                        break
        if not evidence:
            return self.passed(f"{plural(len(uses), 'tool call')} without error")
        kept, recovered = _drop_recovered(uses, failed_at, evidence)
        if self.ignore_recovered:
            if not kept:
                return self.passed(f"{plural(len(uses), 'tool call')}: {plural(recovered, 'failed call')}"
                                   f" {_RECOVERED}")  # fmt: skip
            evidence = kept
        tools = ", ".join(dict.fromkeys((e.detail or "").split(":")[0].removeprefix("tool ") for e in evidence))
        reason = f"{plural(len(evidence), 'failed tool call')} of {len(uses)}: {clip(tools, 200)}"
        return self.failed(reason + recovered_note(recovered, self.ignore_recovered, _RECOVERED), evidence)


def _drop_recovered(uses: list[ToolUse], failed_at: list[int], evidence: list[Evidence]) -> tuple[list[Evidence], int]:
    """The evidence of failed calls that no later call of the same tool made good, and how many
    failed calls were made good. ``failed_at``: index in ``uses`` of each evidence item's call."""
    failed = set(failed_at)
    last_ok: dict[str, int] = {}
    for i, u in enumerate(uses):
        if i not in failed:
            last_ok[u.name] = i
    kept = [e for i, e in zip(failed_at, evidence, strict=True) if last_ok.get(uses[i].name, -1) < i]
    return kept, len(evidence) - len(kept)
