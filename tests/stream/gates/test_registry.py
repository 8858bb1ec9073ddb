"""Specs as a discriminated union, one builder mapping, start-up errors that name the gate."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from stream.gates.base import Gate
from stream.gates.registry import BUILDERS, GateSpec, build_gate, build_gates
from stream.policy import PolicyError, parse_policy

SPECS = TypeAdapter(list[GateSpec])
ALL_TYPES: list[dict[str, Any]] = [
    {"type": "span_error"}, {"type": "exception"}, {"type": "tool_error"}, {"type": "loop"},
    {"type": "latency"}, {"type": "cost"}, {"type": "final_answer"}, {"type": "refusal"}, {"type": "pattern"},
    {"type": "required_action", "trigger_keywords": ["refund"], "required_tools": ["issue_refund"]},
    {"type": "tool_args_schema", "schemas": {"t": {"type": "object"}}},
    {"type": "cel", "fail_when": "trace.error_count > 0"},
]  # fmt: skip


def test_every_type_builds_with_its_name_defaulting_to_the_type() -> None:
    specs = SPECS.validate_python(ALL_TYPES)
    gates = build_gates(specs)
    assert len(BUILDERS) == len(ALL_TYPES)
    assert [(g.name, g.type) for g in gates] == [(d["type"], d["type"]) for d in ALL_TYPES]
    assert all(isinstance(g, Gate) for g in gates)
    assert build_gate(specs[0]).name == "span_error"


def test_duplicate_names_are_rejected() -> None:
    specs = SPECS.validate_python([{"type": "loop"}, {"type": "loop", "min_repeats": 5}, {"type": "latency", "name": "x"},
                                   {"type": "cost", "name": "x"}])  # fmt: skip
    with pytest.raises(ValueError, match="duplicate gate names: loop, x"):
        build_gates(specs)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "nope"}, "does not match any of the expected tags"),
        ({"type": "cel", "name": "broken", "fail_when": "trace."}, "invalid CEL expression"),
        ({"type": "pattern", "patterns": {"bad": "("}}, "invalid regex '\\('"),
        ({"type": "tool_args_schema", "schemas": {"t": {"type": "nope"}}}, "schema for tool 't' is invalid"),
        ({"type": "cost", "max_total_tokens": None}, "set max_total_tokens and/or max_cost_usd"),
        ({"type": "cost", "max_cost_usd": 1.0}, "max_cost_usd needs a prices table"),
        ({"type": "required_action", "required_tools": ["x"]}, "set trigger_patterns and/or trigger_keywords"),
        ({"type": "loop", "min_repeats": 1}, "greater than or equal to 2"),
        ({"type": "loop", "typo": 1}, "Extra inputs are not permitted"),
    ],
    ids=["unknown-type", "cel-syntax", "bad-regex", "bad-schema", "cost-no-limit", "cost-no-prices",
         "no-trigger", "loop-min", "extra-field"],
)
def test_invalid_specs_fail_validation(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS.validate_python([entry])


def test_policy_load_names_the_broken_cel_gate() -> None:
    with pytest.raises(PolicyError, match=r"gates\.0\.cel\.fail_when \(name: broken\).*invalid CEL expression"):
        parse_policy("gates:\n  - type: cel\n    name: broken\n    fail_when: 'trace.spans.exists(s,'\n")
