"""``tool_error``: tool calls that failed.

A call fails when its tool span has error status, an ``error.type`` or an exception event, or
when its result text looks like an error (``result_patterns``, Python regexes searched in the
result; the defaults catch a JSON ``"error": <something>`` member, a Python traceback and text
starting with ``Error``/``Exception``). Results are read from tool spans, or from ``role=tool``
messages when the trace has no tool spans (see :func:`stream.gates.trace_view.tool_uses`).

``ignore_recovered`` (:mod:`stream.gates.retries`): ``identical_retry`` skips a failed call that a
later call of the same tool with the same arguments (compared as JSON) completed without error,
``true`` one that any later call of the same tool did; the gate still fails on a tool whose last
call failed. The reason counts the recovered calls either way.
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Literal

from pydantic import Field

from schemas.model import StatusCode, Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase, Regex
from stream.gates.retries import IgnoreRecovered, Wording, all_skipped, note, recovered, skipped
from stream.gates.text import clip, clip_around, plural
from stream.gates.trace_view import ToolUse, arguments_key, tool_uses

DEFAULT_RESULT_PATTERNS = [
    r'"error"\s*:\s*+(?!null\b|false\b|""|\{\s*\}|\[\s*\])',  # {"error": ...} unless empty/null/false
    r"Traceback \(most recent call last\)",
    r"\A\s*(?:Error|ERROR|Exception)\b",
]


_HOW = "recovered by a later successful call of the same tool"
WORDING = Wording(_HOW, f"{_HOW} with the same arguments", f"{_HOW} with other arguments")


class ToolErrorSpec(GateSpecBase):
    type: Literal["tool_error"] = "tool_error"
    result_patterns: list[Regex] = Field(default_factory=lambda: list(DEFAULT_RESULT_PATTERNS))
    ignore_tools: list[str] = Field(default_factory=list, description="tool names never checked")
    ignore_recovered: IgnoreRecovered = Field(
        default=False,
        description="identical_retry: do not count a failed call followed by a successful call of the same tool "
        "with the same arguments; true: by any successful call of the same tool",
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
        mode = self.ignore_recovered
        retried, other = _recovered(uses, failed_at, mode == "identical_retry")
        if mode:
            dropped = skipped(mode, retried, other)
            kept = [e for i, e in zip(failed_at, evidence, strict=True) if id(uses[i]) not in dropped]
            if not kept:
                return self.passed(f"{plural(len(uses), 'tool call')}: {plural(len(dropped), 'failed call')} "
                                   f"{all_skipped(mode, WORDING)}")  # fmt: skip
            evidence = kept
        tools = ", ".join(dict.fromkeys((e.detail or "").split(":")[0].removeprefix("tool ") for e in evidence))
        reason = f"{plural(len(evidence), 'failed tool call')} of {len(uses)}: {clip(tools, 200)}"
        return self.failed(reason + note(mode, retried, other, WORDING), evidence)


def _recovered(uses: list[ToolUse], failed_at: list[int], compare: bool) -> tuple[set[int], set[int]]:
    """The failed calls (``id``s; ``failed_at``: their indices in ``uses``) that a later successful
    call of the same tool made good: with the same arguments, and otherwise."""
    pos = {id(u): i for i, u in enumerate(uses)}
    bad = [uses[i] for i in failed_at]
    failed = {id(u) for u in bad}
    return recovered(uses, lambda u: id(u) in failed, attrgetter("name"), lambda u: pos[id(u)],
                     _arguments if compare else None, bad)


def _arguments(use: ToolUse) -> bytes | str | None:
    return None if use.arguments is None else arguments_key(use.arguments)
