""":mod:`schemas.messages`: which parser reads a span's messages, and the lazy parsers never raise."""

from __future__ import annotations

import json
from typing import Any

from schemas.messages import parse_input_messages, parse_output_messages, parse_side
from schemas.model import Span
from schemas.normalize import normalize_span

GENAI = {"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "from genai"}]}])}
OI = {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "from oi"}


def contents(messages: list[Any]) -> list[str]:
    return [m.content for m in messages]


def test_the_spans_convention_picks_the_parser_and_the_other_is_the_fallback() -> None:
    both = GENAI | OI
    assert contents(parse_side("genai", both, [], "input")) == ["from genai"]
    assert contents(parse_side("openinference", both, [], "input")) == ["from oi"]
    assert contents(parse_side("openinference", GENAI, [], "input")) == ["from genai"]
    assert contents(parse_side("genai", OI, [], "input")) == ["from oi"]
    assert parse_side("genai", both, [], "output") == []  # neither parser has an output source here
    assert parse_side("none", {"gen_ai.tool.name": "lookup"}, [], "input") == []


def span(attrs: dict[str, Any]) -> Span:
    return normalize_span(Span(trace_id="ab" * 16, span_id="cd" * 8, name="chat", attributes=attrs))


def test_system_instructions_come_from_their_attribute_else_from_system_messages() -> None:
    msgs = [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]  # fmt: skip
    inputs, system = parse_input_messages(span({"gen_ai.input.messages": json.dumps(msgs)}))
    assert [m.role for m in inputs] == ["system", "user"] and system == "Be brief."
    instructions = json.dumps([{"type": "text", "content": "Be kind."}])
    _, system = parse_input_messages(span({"gen_ai.input.messages": json.dumps(msgs),
                                           "gen_ai.system_instructions": instructions}))  # fmt: skip
    assert system == "Be kind."


def test_odd_input_never_raises() -> None:
    odd = span({"gen_ai.input.messages": "[{not json", "gen_ai.output.messages": json.dumps({"role": 3}),
                "gen_ai.system_instructions": b"\xff"})  # fmt: skip
    inputs, system = parse_input_messages(odd)
    assert contents(inputs) == ["[{not json"]  # text that is not JSON is kept as the user's text
    assert system is None
    assert all(isinstance(m.content, str) for m in parse_output_messages(odd))
    broken = span(GENAI)
    broken.__dict__["attributes"] = None  # not a dict at all
    assert parse_input_messages(broken) == ([], None) and parse_output_messages(broken) == []
