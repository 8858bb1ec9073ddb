"""Message parsing reuses the messages built from a message dict it saw before: same answers as a fresh parse."""

from __future__ import annotations

import json

from schemas import genai
from schemas.genai import messages_from_json


def _dump(msgs: list) -> list[dict]:
    return [m.model_dump() for m in msgs]


def _fresh(value: str, role: str = "user") -> list[dict]:
    genai._BUILT.clear()
    return _dump(messages_from_json(value, role))


def test_repeated_history_parses_like_a_fresh_parse() -> None:
    turn1 = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": None,
                      "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "42"}, {"role": "user", "content": "hi"}]  # fmt: skip
    expected = _fresh(json.dumps(turn2))
    genai._BUILT.clear()
    messages_from_json(json.dumps(turn1))
    assert _dump(messages_from_json(json.dumps(turn2))) == expected
    assert _dump(messages_from_json(json.dumps(turn2))) == expected  # every item from the cache now
    assert [m["role"] for m in expected] == ["system", "user", "assistant", "tool", "user"]


def test_items_that_differ_only_in_finish_reason_or_default_role_are_not_confused() -> None:
    stop = '[{"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]'
    length = stop.replace("stop", "length")
    messages_from_json(stop, "assistant")
    assert messages_from_json(length, "assistant")[0].finish_reason == "length"
    no_role = '[{"content": "plain"}]'
    assert messages_from_json(no_role, "user")[0].role == "user"
    assert messages_from_json(no_role, "assistant")[0].role == "assistant"


def test_values_only_json_spells_are_parsed_uncached_and_alike() -> None:
    nan = '[{"role": "user", "content": NaN}]'  # json's rules, not orjson's: never keyed by its re-encoding
    null = '[{"role": "user", "content": null}]'
    surrogate = '[{"role": "user", "content": "\\ud800"}]'
    for value in (nan, surrogate):
        expected = _fresh(value)
        assert _dump(messages_from_json(value)) == expected
        assert not genai._BUILT  # json's spellings are never keyed by orjson's re-encoding
    assert _fresh(null) == _dump(messages_from_json(null)) and len(genai._BUILT) == 1


def test_the_cache_is_bounded() -> None:
    genai._BUILT.clear()
    for i in range(genai._BUILT_MAX + 10):
        messages_from_json(json.dumps([{"role": "user", "content": f"m{i}"}]))
    assert 0 < len(genai._BUILT) <= genai._BUILT_MAX
