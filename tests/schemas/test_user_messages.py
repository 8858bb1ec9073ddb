"""A trace's user messages: once each, in order, with the span where each first appeared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from schemas.user_messages import _collect, _message_texts, extract_user_messages, user_messages
from tests.factories import T0, SpanSpec
from tests.stream.signals.traces import MS, ROOT, TID, chat, conversation, root, sid, text, to_trace

OTLP = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
QUESTION = "What's the weather in Paris right now?"


def texts(trace: Trace) -> list[str]:
    return [m.text for m in user_messages(trace)]


@pytest.mark.parametrize(
    "turns,tools",
    [
        (["one"], [0]),
        (["one", "two", "three"], [1, 0, 2]),
        (["a", "b", "c", "d", "e"], [3, 2, 3, 2, 2]),
        (["help", "help", "help"], [1, 1, 1]),  # a user repeating themselves is kept each time
    ],
    ids=["single", "three-turns", "five-turns-30-spans", "repeated-text"],
)
def test_history_repeated_across_llm_spans_is_kept_once(turns: list[str], tools: list[int]) -> None:
    conv = conversation(turns, tools)
    msgs = user_messages(conv.trace())
    assert [m.text for m in msgs] == turns
    assert [m.index for m in msgs] == list(range(len(turns)))
    assert [m.span_id for m in msgs] == conv.first_chat
    starts = {s.span_id.hex(): s.start for s in conv.specs}
    assert [m.ts_ns for m in msgs] == [starts[s] for s in conv.first_chat]


def test_span_order_is_by_start_time_not_arrival() -> None:
    conv = conversation(["first", "second"], [1, 1])
    shuffled = [conv.specs[0], *reversed(conv.specs[1:])]
    assert texts(to_trace(shuffled)) == ["first", "second"]
    assert [m.span_id for m in user_messages(to_trace(shuffled))] == conv.first_chat


def test_history_from_before_the_trace_counts_as_messages_of_the_first_span() -> None:
    earlier = [text("user", "where is my order?"), text("assistant", "In transit.")]
    conv = conversation(["That's wrong."], [1], history=earlier)
    msgs = user_messages(conv.trace())
    assert [(m.index, m.text, m.span_id) for m in msgs] == [
        (0, "where is my order?", conv.first_chat[0]), (1, "That's wrong.", conv.first_chat[0])]
    # the earlier turn came before the first call's last assistant message: this trace's context,
    # not its turn (gates and semantic signals leave it out; the judge's prompt keeps it)
    assert [m.prior_turn for m in msgs] == [True, False]


def test_earlier_turns_carried_as_history_do_not_fire_gates_or_signals_again() -> None:
    """Each turn a trace of its own, its first call carrying the conversation so far: an old
    'refund' request and an old 'No, I said order 43' fired required_action and a correction
    signal again in every later trace of the conversation (found by a review of the signals)."""
    from stream.decide import TraceDecider
    from stream.gates.required_action import RequiredActionGate, RequiredActionSpec
    from stream.policy import load_policy
    from tests.stream.gates.conftest import AgentTrace

    t = AgentTrace()
    t.history = [
        {"role": "user", "parts": [{"type": "text", "content": "I want a refund for order 42"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Refund issued."}]},
        {"role": "user", "parts": [{"type": "text", "content": "No, I said order 43"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Sorry, refund for 43 issued."}]},
    ]
    t.llm(user="Great, what are your opening hours?", answer="9 to 5.")
    trace = t.build()
    assert [(m.text, m.prior_turn) for m in user_messages(trace)] == [
        ("I want a refund for order 42", True), ("No, I said order 43", True),
        ("Great, what are your opening hours?", False)]  # fmt: skip
    gate = RequiredActionGate(RequiredActionSpec(name="refund_needs_tool", trigger_keywords=["refund"],
                                                 required_tools=["issue_refund"]))  # fmt: skip
    assert gate.evaluate(trace).reason == "no user message matches the trigger"
    decided = TraceDecider(load_policy(None)).decide(trace)
    assert decided.signals == [] and decided.decision.sample_class == "success"
    t.llm(user="No, that's wrong: I asked about Sunday.", answer="Closed on Sundays.")  # this turn's own
    fired = TraceDecider(load_policy(None)).decide(t.build()).signals
    assert fired and all("Sunday" in s.evidence for s in fired)


def test_context_window_that_drops_old_turns_does_not_duplicate() -> None:
    u = [text("user", t) for t in ("a", "b", "c")]
    specs = [root(), chat(sid(2), T0 + MS, u[:2]), chat(sid(3), T0 + 2 * MS, u[1:])]  # "a" fell out
    assert [(m.text, m.span_id) for m in user_messages(to_trace(specs))] == [
        ("a", sid(2).hex()), ("b", sid(2).hex()), ("c", sid(3).hex())]


def test_sub_agent_llm_span_between_orchestrator_calls() -> None:
    human = [text("user", "plan my trip")]
    specs = [root(), chat(sid(2), T0 + MS, human), chat(sid(3), T0 + 2 * MS, [text("user", "find flights to Rome")]),
             chat(sid(4), T0 + 3 * MS, [*human, text("assistant", "done"), text("user", "thanks")])]  # fmt: skip
    assert texts(to_trace(specs)) == ["plan my trip", "find flights to Rome", "thanks"]


def test_empty_and_non_user_messages_are_ignored() -> None:
    inputs = [{"role": "system", "parts": [{"type": "text", "content": "be nice"}]}, text("user", "  "),
              text("assistant", "hi"), text("user", "real question")]  # fmt: skip
    assert texts(to_trace([root(), chat(sid(2), T0 + MS, inputs)])) == ["real question"]


# ---- the root / agent span when no LLM span carries user text ------------------------------------


def oi_agent(value: str, mime: str = "text/plain") -> SpanSpec:
    return root({"openinference.span.kind": "AGENT", "input.value": value, "input.mime_type": mime}, name="agent")


@pytest.mark.parametrize(
    "root_span",
    [
        root({"gen_ai.operation.name": "invoke_agent", "gen_ai.input.messages": json.dumps([text("user", "Q?")])}),
        oi_agent("Q?"),
        oi_agent(json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]}),
                 "application/json"),
        oi_agent(json.dumps({"input": "Q?", "chat_history": []}), "application/json"),
        oi_agent(json.dumps([{"role": "user", "content": "Q?"}]), "application/json"),
        root({"traceloop.span.kind": "agent", "traceloop.entity.input": json.dumps({"args": [], "kwargs": {"question": "Q?"}})},
             name="support.agent"),
    ],
    ids=["genai-invoke-agent", "oi-text", "oi-messages", "oi-input-key", "oi-list", "traceloop-kwargs"],
)
def test_user_input_held_only_by_the_agent_span(root_span: SpanSpec) -> None:
    no_content = SpanSpec(TID, sid(2), ROOT, "chat gpt-4o-mini", T0 + MS, T0 + 2 * MS, {"gen_ai.operation.name": "chat"})
    msgs = user_messages(to_trace([root_span, no_content]))
    assert [(m.index, m.text, m.span_id) for m in msgs] == [(0, "Q?", ROOT.hex())]


def test_agent_span_is_only_a_fallback_when_llm_spans_have_the_messages() -> None:
    """The demo fleet puts the current user message on the root span too: not counted twice."""
    conv = conversation(["again please"], [1], history=[text("user", "first"), text("assistant", "ok")])
    conv.specs[0] = root({"gen_ai.operation.name": "invoke_agent", "gen_ai.input.messages": json.dumps([text("user", "again please")])})
    assert texts(conv.trace()) == ["first", "again please"]


def test_traceloop_positional_args_are_not_user_text() -> None:
    spans = decode_message((OTLP / "traceloop_agent.pb").read_bytes())
    spans = [s for s in spans if s.kind.value != "llm"]
    trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
    assert user_messages(trace) == ()


# ---- real instrumentation payloads --------------------------------------------------------------


@pytest.mark.parametrize("stem", sorted(p.stem for p in OTLP.glob("*.pb")))
def test_fixtures_have_the_question_once(stem: str) -> None:
    spans = decode_message((OTLP / f"{stem}.pb").read_bytes())
    trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
    first_llm = min((s for s in spans if s.kind.value == "llm"), key=lambda s: s.start_ns)
    expected = [] if stem == "openai_v2_no_optin_agent" else [(0, QUESTION, first_llm.span_id)]
    assert [(m.index, m.text, m.span_id) for m in user_messages(trace)] == expected


# ---- sharing --------------------------------------------------------------------------------------


def test_result_is_computed_once_per_trace_object() -> None:
    trace = conversation(["a", "b"]).trace()
    first = user_messages(trace)
    assert user_messages(trace) is first
    other = conversation(["a", "b"]).trace()  # equal content, another object: its own entry
    assert user_messages(other) == first and user_messages(other) is not first


def test_cache_notices_spans_added_to_the_same_trace() -> None:
    conv = conversation(["a"], [0])
    trace = conv.trace()
    assert texts(trace) == ["a"]
    extra = to_trace([chat(sid(99), T0 + 10**9, [text("user", "a"), text("assistant", "x"), text("user", "b")])])
    trace.spans.append(extra.spans[0])
    assert texts(trace) == ["a", "b"] == [m.text for m in extract_user_messages(trace)]


def _raw_chat(span_id: bytes, start: int, raw: str) -> SpanSpec:
    spec = chat(span_id, start, [])
    spec.attrs["gen_ai.input.messages"] = raw
    return spec


U1, A1, U2 = json.dumps(text("user", "one")), json.dumps(text("assistant", "ok")), json.dumps(text("user", "two"))
CHOICE = json.dumps({"message": {"role": "user", "content": "as a choice"}})  # a shape only the full parser reads


@pytest.mark.parametrize(
    "raws",
    [
        [f"[{U1}]", f"[{U1}, {A1}, {U2}]"],  # the usual extension
        [f"[{U1}, {U2}]", f"[{U1}, {U2}] ", f"[{U1}, {U2}, {U1}]"],  # the same history again, then more
        [f"[{U1} ] ", f"[{U1} ,{U2}]"],  # spacing around the shared part
        [f"[{U1}]", f"[{U1},]"],  # a trailing comma is not JSON: the span reads as no messages
        [f"[{U1}]", f"[{U1}, {CHOICE}]"],  # new items of a shape the fast reader refuses
        [f"[{CHOICE}]", f"[{CHOICE}, {U2}]"],
        ["[]", f"[{U2}]", f"[{U2}, {U1}]"],
        [f"[{U1}]", f"[{U1}1]", f"[{U1}, {U2}]"],  # the same text followed by other than a comma
        [f"[{U1}]", '{"role": "user", "content": "a dict"}', f"[{U1}, {U2}]"],
        [f"[{U1}, {U2}]", f"[{U1}, {U2}, {U1}, {U2}]"],  # the user repeats both in a new turn
    ],
    ids=["extend", "same", "spacing", "trailing-comma", "choice-added", "choice-first", "empty-first", "no-comma",
         "not-a-list", "repeat"],  # fmt: skip
)
def test_reading_only_the_new_part_of_a_history_reads_what_the_whole_history_holds(raws: list[str]) -> None:
    specs = [root(), *(_raw_chat(sid(2 + i), T0 + (i + 1) * MS, raw) for i, raw in enumerate(raws))]
    incremental = extract_user_messages(to_trace(specs))
    trace = to_trace(specs)  # fresh spans: _message_texts reads a history whole, and memoizes parses
    whole = _collect((s, _message_texts(s)) for s in sorted(trace.llm_spans, key=lambda s: (s.start_ns, s.end_ns)))
    assert incremental == whole
    assert whole  # some user text in every case
