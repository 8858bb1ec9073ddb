from __future__ import annotations

from typing import Any

import pytest

from stream.gates.base import GateOutcome
from stream.gates.refusal import RefusalGate, RefusalSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, fixture_trace, weather_trace


@pytest.mark.parametrize(
    ("answer", "spec", "outcome", "reason", "text"),
    [
        ("It is 18°C in Paris.", {}, GateOutcome.PASS, "no refusal pattern in the final answer", None),
        ("I'm sorry, but I can't help with that request.", {}, GateOutcome.FAIL,
         "final answer is a refusal: \"I'm sorry, but I can't\"", "I'm sorry, but I can't help with that request."),
        ("I’m sorry, but I cannot share that.", {}, GateOutcome.FAIL,
         "final answer is a refusal: 'I’m sorry, but I cannot'", "I’m sorry, but I cannot share that."),
        ("Unfortunately I can't help with weather questions.", {}, GateOutcome.FAIL,
         "final answer is a refusal: \"I can't help with\"", "Unfortunately I can't help with weather questions."),
        ("As an AI language model, I do not have real-time data.", {}, GateOutcome.FAIL,
         "final answer is a refusal: 'As an AI language model'", "As an AI language model, I do not have real-time data."),
        ("i am unable to access that.", {}, GateOutcome.FAIL, "final answer is a refusal: 'i am unable to'",
         "i am unable to access that."),
        ("Sure! " + "x" * 3000 + " I am unable to", {}, GateOutcome.PASS, "no refusal pattern in the final answer", None),
        ("Computer says no.", {"patterns": [r"says no\b"]}, GateOutcome.FAIL, "final answer is a refusal: 'says no'",
         "Computer says no."),
        ("", {}, GateOutcome.NOT_APPLICABLE, "no final answer text", None),
    ],
    ids=["answer", "sorry-but-cant", "curly-apostrophe", "cant-help-with", "as-an-ai", "unable-lowercase",
         "beyond-scan-window", "custom-pattern", "no-answer"],
)
def test_refusal(answer: str, spec: dict[str, Any], outcome: GateOutcome, reason: str, text: str | None) -> None:
    t = weather_trace(answer=answer)
    r = RefusalGate(RefusalSpec(**spec)).evaluate(t)
    assert (r.outcome, r.reason, r.severity) == (outcome, reason, "warning")
    if text is None:
        assert r.evidence == []
    else:
        (e,) = r.evidence
        assert e.text == text
        assert e.span_id == max(t.llm_spans, key=lambda s: s.end_ns).span_id


@pytest.mark.parametrize(
    ("stem", "outcome"),
    [(f, GateOutcome.PASS) for f in AGENT_FIXTURES if "no_optin" not in f]
    + [("openai_v2_no_optin_agent", GateOutcome.NOT_APPLICABLE)]
    + [(f, GateOutcome.NOT_APPLICABLE) for f in ERROR_FIXTURES],
)
def test_fixtures(stem: str, outcome: GateOutcome) -> None:
    assert RefusalGate(RefusalSpec()).evaluate(fixture_trace(stem)).outcome == outcome
