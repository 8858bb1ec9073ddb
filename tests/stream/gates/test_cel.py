from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome, run_gates
from stream.gates.cel import CelGate, CelSpec
from stream.gates.cel_view import CelTraceView, full_view
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, fixture_trace, weather_trace

EMAIL_NO_CONFIRMATION = 'trace.tool_calls.exists(t, t.name == "send_email") && !trace.final_output.contains("confirmation")'


def emailed(answer: str) -> Callable[[], Trace]:
    def build() -> Trace:
        t = AgentTrace()
        t.llm(user="Email Bob the report", tool_calls=[("send_email", {"to": "bob"})], finish="tool_calls")
        t.tool("send_email", {"to": "bob"}, result="sent")
        t.llm(answer=answer)
        return t.build()

    return build


@pytest.mark.parametrize(
    ("trace", "expression", "outcome", "reason"),
    [
        (emailed("Done, no confirmation id yet."), EMAIL_NO_CONFIRMATION, GateOutcome.PASS, "fail_when is false"),
        (emailed("Done."), EMAIL_NO_CONFIRMATION, GateOutcome.FAIL, f"fail_when is true: {EMAIL_NO_CONFIRMATION}"),
        (weather_trace, EMAIL_NO_CONFIRMATION, GateOutcome.PASS, "fail_when is false"),
        (weather_trace, 'trace.spans.exists(s, s.kind == "tool" && s.tool_name == "get_weather" && s.duration_ms > 10)',
         GateOutcome.FAIL, "fail_when is true: trace.spans.exists(s, s.kind == \"tool\" && s.tool_name == \"get_weather\" && s.duration_ms > 10)"),
        (weather_trace, 'trace.duration_ms > 1000.0 || trace.error_count > 0 || size(trace.models) != 1',
         GateOutcome.PASS, "fail_when is false"),
        (weather_trace, 'trace.usage.total > 200 && trace.service == "support-bot" && trace.agent == "support"',
         GateOutcome.FAIL, 'fail_when is true: trace.usage.total > 200 && trace.service == "support-bot" && trace.agent == "support"'),
        (weather_trace, 'trace.user_messages.exists(m, m.matches("(?i)weather")) && trace.span_count == 4',
         GateOutcome.FAIL, 'fail_when is true: trace.user_messages.exists(m, m.matches("(?i)weather")) && trace.span_count == 4'),
        (weather_trace, 'trace.tool_calls.exists(t, t.result.contains("temperature") && !t.is_error)',
         GateOutcome.FAIL, 'fail_when is true: trace.tool_calls.exists(t, t.result.contains("temperature") && !t.is_error)'),
    ],
    ids=["email-confirmed", "email-unconfirmed", "no-email", "spans", "scalars", "usage-and-identity", "user-messages",
         "tool-results"],
)
def test_cel(trace: Callable[[], Trace], expression: str, outcome: GateOutcome, reason: str) -> None:
    r = CelGate(CelSpec(name="custom", fail_when=expression)).evaluate(trace())
    assert (r.outcome, r.reason, r.gate, r.type) == (outcome, reason, "custom", "cel")
    assert [e.detail for e in r.evidence] == ([expression] if outcome == GateOutcome.FAIL else [])


def test_description_is_the_reason() -> None:
    spec = CelSpec(name="c", fail_when="true", description="always wrong")
    assert CelGate(spec).evaluate(weather_trace()).reason == "always wrong"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("trace.span_count", "gate raised TypeError: fail_when must evaluate to a bool, got int: 4"),
        ("trace.nope == 1", "gate raised KeyError: 'nope'"),
        ("trace.duration_ms / 1000 > 1", "gate raised TypeError: Unsupported operation: float / int"),
        ('trace.spans.exists(s, s["sta" + "tus"] == "error")', "gate raised KeyError: 'status'"),
    ],
    ids=["not-bool", "unknown-field", "int-double-arithmetic", "dynamic-key-not-exposed"],
)
def test_evaluation_errors_are_gate_errors(expression: str, reason: str) -> None:
    (r,) = run_gates([CelGate(CelSpec(name="c", fail_when=expression))], weather_trace())
    assert r.outcome == GateOutcome.ERROR
    assert r.reason.startswith(reason)


def test_compile_error_names_the_gate() -> None:
    spec = CelSpec.model_construct(name="broken", fail_when="trace.spans.exists(", severity="error", type="cel")
    with pytest.raises(ValueError, match="gate 'broken': invalid CEL expression in fail_when"):
        CelGate(spec)


def test_view_includes_only_named_fields() -> None:
    t = weather_trace()
    view = CelTraceView('trace.spans.exists(s, s.status == "error") && trace.span_count > 1').build(t)
    assert set(view["trace"]) == {"spans", "span_count"}
    assert view["trace"]["spans"] == [{"status": "unset"}] * 4
    full = full_view(t)["trace"]
    assert full["tool_calls"] == [{"name": "get_weather", "arguments": '{"city": "Paris"}',
                                   "result": '{"temperature_c": 18}', "is_error": False}]  # fmt: skip
    assert full["user_messages"] == ["What's the weather in Paris?"]
    assert full["final_output"] == "It is 18°C in Paris."
    assert (full["span_count"], full["error_count"], full["models"]) == (4, 0, ["gpt-4o-mini"])


@pytest.mark.parametrize(("stem", "fails"), [(f, False) for f in AGENT_FIXTURES] + [(f, True) for f in ERROR_FIXTURES])
def test_fixtures(stem: str, fails: bool) -> None:
    spec = CelSpec(name="c", fail_when='trace.error_count > 0 || !trace.tool_calls.exists(t, t.name == "get_weather")')
    r = CelGate(spec).evaluate(fixture_trace(stem))
    assert r.outcome == (GateOutcome.FAIL if fails else GateOutcome.PASS)
