"""Rubric loading, hashing, applies_to filtering, and built-ins rendered on factory traces."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from judges.prompt import build_request, extract, truncate
from judges.rubric import (
    Rubric,
    RubricError,
    builtin_rubrics,
    load_rubrics,
    parse_rubric,
)
from tests.factories import genai_trace
from tests.judges.fake_llm import build_trace, trace_from

BASE: dict[str, Any] = {
    "name": "demo",
    "version": "1",
    "template": "Is {answer} right given {results}?",
    "variables": {"answer": "final_answer", "results": "tool_results"},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "same_hash"),
    [
        ("version", "2", True),  # human version only
        ("description", "now documented", True),
        ("tiers", ["strong"], True),
        ("applies_to.services", ["support-*"], True),
        ("template", "Is {answer} correct given {results}?", False),
        ("variables.results", "tool_calls", False),
        ("labels", ["pass", "fail", "partial"], False),
        ("params.temperature", 0.3, False),
        ("params.seed", 8, False),
        ("params.max_tokens", 300, False),
        ("output_schema", {"type": "object", "properties": {"label": {}, "score": {}, "explanation": {}}}, False),
    ],
)
def test_hash_changes_exactly_with_what_the_judge_sees(path: str, value: Any, same_hash: bool) -> None:
    base = parse_rubric(BASE).rubric_hash
    assert (parse_rubric(_with(path, value)).rubric_hash == base) is same_hash


def test_hash_is_stable_across_loads_and_key_order(tmp_path: Path) -> None:
    reordered = dict(reversed(list(BASE.items())))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    h = load_rubrics(tmp_path)["demo"].rubric_hash
    assert h == parse_rubric(reordered).rubric_hash == parse_rubric(copy.deepcopy(BASE)).rubric_hash
    assert len(h) == 64


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (_with("name", "Bad Name"), "name:"),
        (_with("variables.results", "tool_secrets"), "variables.results:"),
        (_with("labels", []), "labels:"),
        (_with("labels", ["pass", "pass"]), "labels:"),
        (_with("template", "uses {missing} and {answer} {results}"), "not declared in variables"),
        (_with("template", "only {answer}"), "declared but not used"),
        (_with("template", "json {answer} {results} {\"a\": 1}"), "template"),
        (_with("params.temperature", 5), "params.temperature:"),
        (_with("surprise", 1), "surprise:"),
        (_with("tiers", []), "tiers:"),
        ({k: v for k, v in BASE.items() if k != "template"}, "template:"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, doc: dict[str, Any], fragment: str) -> None:
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RubricError) as err:
        load_rubrics(tmp_path)
    assert "broken.yaml" in str(err.value) and fragment in str(err.value)


def test_yaml_syntax_and_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: [unclosed")
    with pytest.raises(RubricError, match=r"x\.yaml"):
        load_rubrics(tmp_path)
    (tmp_path / "x.yaml").unlink()
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "b.yml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(RubricError, match=r"b\.yml: name: 'demo' already defined in a\.yaml"):
        load_rubrics(tmp_path)


def test_builtins_load() -> None:
    rubrics = builtin_rubrics()
    assert set(rubrics) == {
        "task_completion", "tool_use_correctness", "groundedness", "frustration_resolution", "refusal_correctness",
    }  # fmt: skip
    assert len({r.rubric_hash for r in rubrics.values()}) == 5
    for r in rubrics.values():
        assert r.labels == ["pass", "fail"] and r.description


META = {
    "decision": {"class": "suspected_failure", "rule": "gate:tool_error", "p": 1.0},
    "failed_gates": [{"gate": "tool_error", "type": "tool_error", "reason": "tool failed",
                      "evidence": [{"span_id": "ab", "text": "order service down"}]}],
    "signals": [{"type": "frustration", "polarity": "negative", "source": "lexicon", "evidence": "this is useless"}],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(builtin_rubrics()))
@pytest.mark.parametrize("defended", [True, False])
def test_builtins_render_on_factory_traces(name: str, defended: bool) -> None:
    rubric = builtin_rubrics()[name]
    trace = trace_from(genai_trace(random.Random(3), n_spans=6))
    req = build_request(rubric, trace, META, model="judge-m", defended=defended)
    user = req.messages[0][1]
    assert req.model == "judge-m" and req.seed == rubric.params.seed and req.json_schema
    assert "{" + next(iter(rubric.variables)) + "}" not in req.system + user  # placeholders filled
    if "final_answer" in rubric.variables.values():
        assert "answer 4" in user
    if "failed_gates" in rubric.variables.values():
        assert "order service down" in user
    if "signals" in rubric.variables.values():
        assert "this is useless" in user
    if defended:
        nonce = req.system.split("<untrusted-")[1][:16]
        assert user.count(f"<untrusted-{nonce}>") == len(rubric.variables)
        assert "answer 4" not in req.system  # trace data never in the trusted part


def test_extract_sources() -> None:
    trace = trace_from(genai_trace(random.Random(5), n_spans=5))
    assert extract("user_messages", trace, {}) == "question 0\nquestion 2"
    assert extract("final_answer", trace, {}) == "answer 2"
    assert "lookup_order" in extract("tool_calls", trace, {})
    assert extract("failed_gates", trace, {}) == "(none)"
    assert extract("signals", trace, META).startswith("- frustration (negative")
    assert "[assistant] answer 0" in extract("conversation", trace, {})
    assert extract("system_instructions", build_trace("hi", "yo", system="Be terse"), {}) == "Be terse"


def test_truncation_is_marked_and_bounded() -> None:
    long = "a" * 5000 + "TAIL"
    out = truncate(long, 300)
    assert "[... truncated" in out and out.endswith("TAIL") and len(out) < 400
    assert truncate("short", 300) == "short"
    rubric = parse_rubric(BASE)
    trace = build_trace("q", "x" * 10_000)
    req = build_request(rubric, trace, {}, model="m", max_value_chars=500)
    assert len(req.messages[0][1]) < 1500 and "truncated" in req.messages[0][1]


@pytest.mark.parametrize(
    ("applies_to", "meta", "expected"),
    [
        ({}, {}, True),
        ({"sample_classes": ["suspected_failure"]}, META, True),
        ({"sample_classes": ["success"]}, META, False),
        ({"services": ["support-*"]}, {}, True),
        ({"services": ["billing-*"]}, {}, False),
        ({"agents": ["supp*"]}, {}, True),
        ({"failed_gates": ["tool_*"]}, META, True),
        ({"failed_gates": ["tool_*"]}, {}, False),
    ],
)
def test_applies_to(applies_to: dict[str, Any], meta: dict[str, Any], expected: bool) -> None:
    rubric: Rubric = parse_rubric({**BASE, "applies_to": applies_to})
    trace = build_trace("q", "a")
    assert rubric.applies(meta, service=trace.service_name, agent=trace.agent_name) is expected
