"""The semantic miner on whole traces: multi-turn history, real instrumentation payloads, and the
demo fleet's own frustrated users (emitted with the real OpenTelemetry SDK)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.decode import decode_message
from schemas.model import CompletionReason, Span, Trace
from stream.demo.kafka_exporter import encode_messages
from stream.demo.scenarios import APPS, Conversation, plan_turn
from stream.demo.spans import emit_turn
from stream.signals.semantic import SemanticSignalSpec, build_miner
from schemas.user_messages import UserMessage
from tests.factories import SpanSpec, proto
from tests.stream.signals.traces import MS, chat, conversation, text

OTLP = Path(__file__).resolve().parents[2] / "fixtures" / "otlp"
MINER = build_miner(SemanticSignalSpec(type="semantic", name="user-text", languages=["en", "de"]))


def as_trace(spans: list[Span]) -> Trace:
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)


def test_multi_turn_trace_signals_point_at_the_turn_not_the_repeats() -> None:
    turns = ["Where is my order?", "Thanks!", "No, I meant my other order.", "This is useless.", "OK, thank you"]
    conv = conversation(turns, [3, 2, 3, 2, 2])
    assert len(conv.specs) == 30
    got = [(s.message_index, s.type, s.span_id) for s in MINER.mine(conv.trace())]
    f = conv.first_chat
    assert got == [(1, "gratitude", f[1]), (2, "correction", f[2]), (3, "frustration", f[3]), (4, "gratitude", f[4])]


FIXTURES = sorted(p.stem for p in OTLP.glob("*.pb"))


@pytest.mark.parametrize("stem", FIXTURES)
def test_weather_question_fixtures_have_no_signals(stem: str) -> None:
    trace = as_trace(decode_message((OTLP / f"{stem}.pb").read_bytes()))
    assert MINER.mine(trace) == []


@pytest.mark.parametrize("stem", ["openai_v2_agent", "traceloop_agent"])
def test_frustrated_follow_up_injected_into_a_real_trace(stem: str) -> None:
    spans = decode_message((OTLP / f"{stem}.pb").read_bytes())
    last = max((s for s in spans if s.kind.value == "llm"), key=lambda s: s.start_ns)
    history = [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in last.input_messages if m.content]
    follow_up = chat(
        bytes.fromhex("00000000000000ff"), last.end_ns + 1000 * MS,
        [*history, text("assistant", "It is 18°C."), text("user", "That's not what I asked, this is useless!")],
        trace_id=bytes.fromhex(last.trace_id), parent=bytes.fromhex(last.parent_span_id or ""),
    )  # fmt: skip
    trace = as_trace(spans + decode_message(proto([follow_up])))
    got = {(s.message_index, s.type, s.span_id, s.polarity) for s in MINER.mine(trace)}
    assert got == {(1, "correction", "00000000000000ff", "negative"), (1, "frustration", "00000000000000ff", "negative")}


# ---- the demo fleet ---------------------------------------------------------------------------------

FLEET_PHRASES = [(app.service, p) for app in APPS for p in app.frustration]


@pytest.mark.parametrize("service,phrase", FLEET_PHRASES, ids=[p for _, p in FLEET_PHRASES])
def test_every_fleet_frustration_phrase_gives_a_negative_signal(service: str, phrase: str) -> None:
    sigs = MINER.mine_messages([UserMessage(0, phrase, "s", 0)])
    assert sigs and all(s.polarity == "negative" for s in sigs), service


def emitted_trace(scenario: str, seed: int) -> tuple[Trace, str]:
    """One demo turn of ``scenario``, emitted by the fleet's own span code; (trace, user text)."""
    rng = random.Random(seed)
    app = APPS[seed % len(APPS)]
    plan = plan_turn(rng, app, scenario, Conversation(id="conv-1", user_id="user-1"))
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": app.service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    emit_turn(provider.get_tracer("demo"), plan, rng, 1_760_000_000_000_000_000)
    ((_, value),) = encode_messages(memory.get_finished_spans(), "otlp_proto", False)
    provider.shutdown()
    return as_trace(decode_message(value)), plan.user_text


@pytest.mark.parametrize("seed", range(12))
def test_demo_frustrated_user_turns_are_caught_on_the_last_message(seed: int) -> None:
    trace, user_text = emitted_trace("frustrated_user", seed)
    sigs = MINER.mine(trace)
    assert sigs, user_text
    assert {(s.message_index, s.polarity) for s in sigs} == {(1, "negative")}, user_text


@pytest.mark.parametrize("scenario", ["healthy", "tool_error", "tool_loop", "truncated", "agent_exception"])
def test_demo_turns_without_a_frustrated_user_have_no_negative_signal(scenario: str) -> None:
    for seed in range(15):
        trace, user_text = emitted_trace(scenario, seed)
        assert [s for s in MINER.mine(trace) if s.polarity == "negative"] == [], user_text


def test_root_span_input_is_used_when_llm_content_is_not_captured() -> None:
    root = SpanSpec(bytes(15) + b"\x01", bytes(7) + b"\x01", name="agent", attrs={
        "openinference.span.kind": "AGENT", "input.value": json.dumps({"input": "Forget it, I'll do it myself."}),
        "input.mime_type": "application/json"})  # fmt: skip
    (sig,) = MINER.mine(as_trace(decode_message(proto([root]))))
    assert (sig.type, sig.message_index, sig.span_id) == ("abandonment", 0, "0000000000000001")
