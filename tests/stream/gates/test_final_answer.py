from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.final_answer import FinalAnswerGate, FinalAnswerSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, fixture_trace, weather_trace


def last(**llm: Any) -> Callable[[], Trace]:
    def build() -> Trace:
        t = AgentTrace()
        t.llm(user="write a poem", answer="Let me think.")
        t.llm(**llm)
        return t.build()

    return build


def no_llm() -> Trace:
    t = AgentTrace()
    t.tool("lookup", {})
    return t.build()


@pytest.mark.parametrize(
    ("trace", "spec", "outcome", "reason", "evidence"),
    [
        (weather_trace, {}, GateOutcome.PASS, "final answer present and not truncated", []),
        (last(answer="Roses are", finish="length"), {}, GateOutcome.FAIL,
         "final answer truncated (finish reason 'length')", [(None, "finish_reasons=['length']")]),
        (last(answer="Roses are", finish="MAX_TOKENS"), {}, GateOutcome.FAIL,
         "final answer truncated (finish reason 'MAX_TOKENS')", [(None, "finish_reasons=['MAX_TOKENS']")]),
        (last(answer="Roses are", finish="cut"), {"truncation_reasons": ["cut"]}, GateOutcome.FAIL,
         "final answer truncated (finish reason 'cut')", [(None, "finish_reasons=['cut']")]),
        (last(answer="", finish="stop"), {}, GateOutcome.FAIL, "final answer is empty", [(None, "no text")]),
        (last(answer="", tool_calls=[("search", {"q": "poem"})], finish="tool_calls"), {}, GateOutcome.FAIL,
         "final answer is empty", [(None, "ended on tool call request search")]),
        (last(answer="", finish="stop"), {"check_empty": False}, GateOutcome.PASS, "final answer not truncated", []),
        (last(answer="Roses", capture=False), {}, GateOutcome.NOT_APPLICABLE,
         "the last LLM span recorded no output messages", []),
        (no_llm, {}, GateOutcome.NOT_APPLICABLE, "no LLM span", []),
    ],
    ids=["answered", "length", "max-tokens-case", "custom-reason", "empty", "ended-on-tool-call", "empty-not-checked",
         "content-not-captured", "no-llm"],
)
def test_final_answer(trace: Callable[[], Trace], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                      evidence: list[tuple[str | None, str]]) -> None:  # fmt: skip
    t = trace()
    r = FinalAnswerGate(FinalAnswerSpec(**spec)).evaluate(t)
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [(e.text, e.detail) for e in r.evidence] == evidence
    last_llm = max(t.llm_spans, key=lambda s: s.end_ns) if t.llm_spans else None
    assert all(last_llm is not None and e.span_id == last_llm.span_id for e in r.evidence)


@pytest.mark.parametrize(
    ("stem", "outcome"),
    [(f, GateOutcome.PASS) for f in AGENT_FIXTURES if "no_optin" not in f]
    + [("openai_v2_no_optin_agent", GateOutcome.NOT_APPLICABLE)]
    + [(f, GateOutcome.NOT_APPLICABLE) for f in ERROR_FIXTURES],
)
def test_fixtures(stem: str, outcome: GateOutcome) -> None:
    assert FinalAnswerGate(FinalAnswerSpec()).evaluate(fixture_trace(stem)).outcome == outcome
