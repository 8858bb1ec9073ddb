"""Shared trace views: the raw ``gen_ai.output.messages`` fast path gives exactly the parsed
messages' texts; tool uses are computed once per trace; the combined-regex precheck."""

from __future__ import annotations

import json
import re

import pytest

from schemas.model import Span
from stream.gates.text import any_match_regex, required_chars
from stream.gates.trace_view import arguments_key, canonical_json, span_output_texts, tool_uses
from tests.stream.gates.conftest import FIXTURES, AgentTrace, fixture_trace

OUTPUTS = [
    [{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}],
    [{"role": "assistant", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"},
                                     {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"x": 1}}]}],
    [{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}]}],
    [{"role": "assistant", "parts": [{"type": "tool_call_response", "id": "c1", "response": {"r": 1}},
                                     {"type": "tool_call_response", "id": "c2", "response": ""}, "plain", 7,
                                     {"text": "untyped"}, {"type": "output_text", "text": "t"}]}],
    [{"role": "assistant", "content": "plain content"}],
    [{"role": "assistant", "content": '[{"type": "text", "text": "nested"}]'}],
    [{"role": "assistant", "parts": {"type": "text", "content": "one part"}}],
    [{"role": "assistant", "parts": [{"type": "text", "content": ""}]}],
    [{"message": {"role": "assistant", "content": "choice"}, "finish_reason": "stop"}],
    [{"role": "assistant", "content": "x"}, "a string item", 5],
    {"role": "assistant", "content": "a dict"},
    [],
    "just a string",
]


def _span(value: str) -> Span:
    t = AgentTrace()
    t.llm(user="hi", answer="replaced")
    span = t.build().llm_spans[0]
    span.attributes["gen_ai.output.messages"] = value
    span.__dict__.pop("_parsed_output", None)
    return span


@pytest.mark.parametrize("value", [json.dumps(o) for o in OUTPUTS] + ["not json", '{"broken": '])
def test_output_texts_fast_path_equals_parsed_messages(value: str) -> None:
    span = _span(value)
    fast = span_output_texts(span)
    assert fast == [m.content for m in span.output_messages if m.content]


def test_output_texts_fast_path_does_not_parse() -> None:
    span = _span(json.dumps(OUTPUTS[1]))
    assert span_output_texts(span) == ["a\nb"]
    assert "_parsed_output" not in span.__dict__


@pytest.mark.parametrize("stem", FIXTURES)
def test_output_texts_on_captured_instrumentations(stem: str) -> None:
    for span in fixture_trace(stem).spans:
        fast = span_output_texts(span)
        span.__dict__.pop("_parsed_output", None)
        assert fast == [m.content for m in span.output_messages if m.content]


def test_tool_uses_computed_once_per_trace() -> None:
    t = AgentTrace()
    t.tool("lookup", {"id": 1}, "ok")
    t.tool("lookup", {"id": 2}, "ok")
    trace = t.build()
    first = tool_uses(trace)
    assert [u.name for u in first] == ["lookup", "lookup"]
    first.clear()  # callers get a copy
    again = tool_uses(trace)
    assert len(again) == 2 and again[0] is tool_uses(trace)[0]


def test_canonical_json() -> None:
    assert canonical_json('{"b": 2, "a": "é"}') == '{"a":"é","b":2}'
    assert canonical_json(" not json ") == "not json"
    assert canonical_json(None) == ""


@pytest.mark.parametrize("texts", [["abc", "I am sorry", "xyz 123", "", "Error: x"]])
def test_any_match_regex_matches_iff_one_pattern_does(texts: list[str]) -> None:
    patterns = [re.compile(p, re.I) for p in (r"\bsorry\b", r"\d{3}", r"\AError\b")]
    union = any_match_regex(patterns)
    assert union is not None
    for text in texts:
        assert (union.search(text) is not None) == any(p.search(text) for p in patterns)


@pytest.mark.parametrize("sources,flags", [
    ([r"(a)\1", "b"], 0),  # a backreference would be renumbered
    (["(?i)a", "b"], 0),  # global flags must start the expression
    (["a # comment", "b"], re.VERBOSE),
    (["a"], 0),
])  # fmt: skip
def test_any_match_regex_refuses_what_it_cannot_combine(sources: list[str], flags: int) -> None:
    assert any_match_regex([re.compile(s, flags) for s in sources]) is None


ARGUMENTS = [
    '{"a": 1, "b": 2}', '{"b":2,"a":1}', '{"a": 1.0, "b": 2}', '{"a":"\\u0041"}', '{"a":"A"}', '{"a": 1}\n',
    "18446744073709551616", "18446744073709551617", "1.8446744073709552e19", "9223372036854775808", "1e400",
    "NaN", '{"a": NaN}', '{"a": Infinity}', "not json", " not json ", None, "", '["\\ud800"]', '["\\ud800", 1]',
    "[" * 300 + "]" * 300, "[" * 300 + " " + "]" * 300, "1E2", "100.0", "100", "-0", "0", "-0.0",
    '{"a":true,"a":false}', '{"a":false}', '"x"', ' "x" ', '{"é": "\\u00e9"}', '{"\\u00e9": "é"}',
]  # fmt: skip


def test_arguments_key_groups_exactly_like_canonical_json() -> None:
    for x in ARGUMENTS:
        for y in ARGUMENTS:
            assert (arguments_key(x) == arguments_key(y)) == (canonical_json(x) == canonical_json(y)), (x, y)


@pytest.mark.parametrize("source,expected", [
    (r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b", "@."),
    (r"\b(?:\d[ -]?){12,15}\d\b", ""),
    (r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b", "-"),
    (r"a|b", ""), (r"x(?=y)z", "xz"), (r"(?:ab)?c", "c"), (r"(?:ab){2}", "ab"), (r"(?i:a)b", "b"),
    (r"(?>ab)", "ab"), (r"[a]", "a"), (r"(?i)ab", ""),
])  # fmt: skip
def test_required_chars(source: str, expected: str) -> None:
    pattern = re.compile(source)
    assert required_chars(pattern) == frozenset(expected)
    assert required_chars(re.compile(source, re.IGNORECASE)) == frozenset()
