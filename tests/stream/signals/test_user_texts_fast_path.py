"""The fast user-text extraction agrees with the full message parser."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from schemas.decode import decode_message
from schemas.genai import messages_from_json, user_texts_from_json
from tests.factories import genai_trace, proto

FIXTURES = sorted((Path(__file__).parents[2] / "fixtures" / "otlp").glob("*.pb"))

CASES = {
    "parts": [{"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]}],
    "openai-style": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
    "tool-calls-skipped": [
        {"role": "user", "parts": [{"type": "text", "content": "book it"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "1", "name": "book", "arguments": {"x": 1}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "1", "response": "ok"}]},
        {"role": "user", "parts": [{"type": "text", "content": "thanks"}]},
    ],
    "no-role-is-user": [{"content": "implicit"}],
    "anthropic-tool-result-in-user": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
}


@pytest.mark.parametrize("messages", list(CASES.values()), ids=list(CASES))
def test_fast_equals_full_parser(messages: list[dict[str, object]]) -> None:
    raw = json.dumps(messages)
    full = [m.content for m in messages_from_json(raw, "user") if m.role == "user" and m.content]
    assert user_texts_from_json(raw) == full


def test_unusual_shapes_fall_back() -> None:
    assert user_texts_from_json('{"role": "user", "content": "x"}') is None  # not a list
    assert user_texts_from_json('[{"message": {"role": "user"}}]') is None  # choice body
    assert user_texts_from_json("plain text") is None


def test_fixtures_and_factories_agree() -> None:
    spans = [s for f in FIXTURES for s in decode_message(f.read_bytes())]
    spans += decode_message(proto(genai_trace(random.Random(1), 9)))
    checked = 0
    for s in spans:
        raw = s.attributes.get("gen_ai.input.messages")
        if raw is None:
            continue
        full = [m.content for m in s.input_messages if m.role == "user" and m.content]
        assert user_texts_from_json(raw) == full, s.name
        checked += 1
    assert checked >= 4
