"""What a judge reads of the user: the same user messages the semantic miner reads (schemas.user_messages)."""

from __future__ import annotations

import json

from judges.prompt import extract
from schemas.user_messages import user_messages
from tests.factories import T0, SpanSpec
from tests.judges.fake_llm import trace_from

TID, ROOT = b"\x01" * 16, b"\x02" * 8
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}


def _msg(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def _chat(i: int, history: list[dict], answer: str) -> SpanSpec:
    return SpanSpec(TID, bytes([16 + i]) * 8, ROOT, "chat gpt-4o-mini", T0 + (i + 1) * 10**8, T0 + (i + 2) * 10**8,
                    {**CHAT, "gen_ai.input.messages": json.dumps(history),
                     "gen_ai.output.messages": json.dumps([_msg("assistant", answer)])})  # fmt: skip


def _agent(attrs: dict) -> SpanSpec:
    return SpanSpec(TID, ROOT, name="invoke_agent support", end=T0 + 10**10,
                    attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support", **attrs})  # fmt: skip


def test_history_once_and_a_repeat_in_a_new_turn_kept() -> None:
    turn1 = [_msg("system", "Be brief"), _msg("user", "refund order 7")]
    turn2 = [*turn1, _msg("assistant", "Which reason?"), _msg("user", "yes")]
    turn3 = [*turn2, _msg("assistant", "Sure?"), _msg("user", "yes")]  # the user said "yes" twice
    trace = trace_from([_agent({}), _chat(0, turn1, "Which reason?"), _chat(1, turn2, "Sure?"), _chat(2, turn3, "Done")])
    assert extract("user_messages", trace, {}) == "refund order 7\nyes\nyes"
    assert extract("user_messages", trace, {}) == "\n".join(m.text for m in user_messages(trace))


def test_agent_span_input_when_llm_spans_record_no_user_text() -> None:
    # content capture off on the LLM client: the chat span has no messages, the agent span has the request
    agent = _agent({"gen_ai.input.messages": json.dumps([_msg("user", "where is my parcel?")])})
    chat = SpanSpec(TID, b"\x10" * 8, ROOT, "chat gpt-4o-mini", T0 + 10**8, T0 + 2 * 10**8, dict(CHAT))
    assert extract("user_messages", trace_from([agent, chat]), {}) == "where is my parcel?"


def test_no_user_text_is_marked_none() -> None:
    chat = SpanSpec(TID, b"\x10" * 8, ROOT, "chat gpt-4o-mini", T0 + 10**8, T0 + 2 * 10**8, dict(CHAT))
    assert extract("user_messages", trace_from([_agent({}), chat]), {}) == "(none)"
