"""run_gates: results in order, and a raising gate is an ``error`` result, never an exception."""

from __future__ import annotations

import random

import pytest

from schemas.model import Trace
from stream.gates.base import Evidence, GateOutcome, GateResult, run_gates
from stream.gates.registry import build_gates, default_gate_specs
from stream.gates.text import clip, clip_around, redact
from tests.factories import genai_trace
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, FIXTURES, assemble, fixture_trace


class Raising:
    name = "boom"
    type = "custom"
    severity = "warning"

    def evaluate(self, trace: Trace) -> GateResult:
        raise KeyError("missing_field")


class Passing:
    name = "ok"
    type = "custom"

    def evaluate(self, trace: Trace) -> GateResult:
        return GateResult(self.name, self.type, GateOutcome.PASS, "fine", [Evidence("s", "t", "d")])


def test_raising_gate_becomes_error_and_others_still_run() -> None:
    trace = assemble(genai_trace(random.Random(1), 5))
    results = run_gates([Raising(), Passing()], trace)
    assert [r.gate for r in results] == ["boom", "ok"]
    err, ok = results
    assert err.outcome == GateOutcome.ERROR
    assert err.type == "custom"
    assert err.severity == "warning"
    assert err.reason == "gate raised KeyError: 'missing_field'"
    assert err.evidence == []
    assert ok.outcome == GateOutcome.PASS and ok.evidence == [Evidence("s", "t", "d")]


def test_default_gates_all_pass_on_a_plain_agent_trace() -> None:
    trace = assemble(genai_trace(random.Random(2), 9))
    results = run_gates(build_gates(default_gate_specs()), trace)
    assert {r.gate: r.outcome for r in results} == {r.gate: GateOutcome.PASS for r in results}
    assert len(results) == 9


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short", 300, "short"), ("x" * 400, 10, "x" * 9 + "…"), (None, 10, None)],
    ids=["fits", "cut", "none"],
)
def test_clip(text: str | None, limit: int, expected: str | None) -> None:
    assert clip(text, limit) == expected


def test_clip_around_keeps_the_match() -> None:
    text = "a" * 500 + "NEEDLE" + "b" * 500
    out = clip_around(text, 500, 506, limit=50)
    assert "NEEDLE" in out and len(out) <= 52 and out.startswith("…") and out.endswith("…")


@pytest.mark.parametrize(("text", "expected"), [("jane@example.com", "ja************om"), ("123", "***")],
                         ids=["long", "short"])  # fmt: skip
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("stem", FIXTURES)
def test_default_gates_on_captured_payloads(stem: str) -> None:
    """Payloads from real instrumentation libraries: no gate errors; errors fail exactly the error gates."""
    results = {r.gate: r.outcome for r in run_gates(build_gates(default_gate_specs()), fixture_trace(stem))}
    assert GateOutcome.ERROR not in results.values()
    failed = sorted(g for g, o in results.items() if o == GateOutcome.FAIL)
    assert failed == (["exception", "span_error"] if stem in ERROR_FIXTURES else [])
    if stem in AGENT_FIXTURES:
        assert results["tool_error"] == results["loop"] == GateOutcome.PASS  # the get_weather call was seen
