from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.tool_args_schema import ToolArgsSchemaGate, ToolArgsSchemaSpec
from tests.stream.gates.conftest import AGENT_FIXTURES, AgentTrace, fixture_trace

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1}, "days": {"type": "integer", "maximum": 7}},
    "required": ["city"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER}


def calls(*args: tuple[str, Any]) -> Callable[[], Trace]:
    def build() -> Trace:
        t = AgentTrace()
        t.llm(user="weather?")
        for name, arguments in args:
            t.tool(name, arguments, result="{}")
        return t.build()

    return build


@pytest.mark.parametrize(
    ("trace", "spec", "outcome", "reason", "details"),
    [
        (calls(("get_weather", {"city": "Paris", "days": 3})), {}, GateOutcome.PASS, "1 tool call match their schemas", []),
        (calls(("get_weather", {"days": 3})), {}, GateOutcome.FAIL,
         "1 invalid tool call; first: get_weather: (root): 'city' is a required property",
         ["get_weather: (root): 'city' is a required property"]),
        (calls(("get_weather", {"city": "Paris", "days": 30})), {}, GateOutcome.FAIL,
         "1 invalid tool call; first: get_weather: days: 30 is greater than the maximum of 7",
         ["get_weather: days: 30 is greater than the maximum of 7"]),
        (calls(("get_weather", {"city": "", "days": "x"})), {}, GateOutcome.FAIL,
         "1 invalid tool call; first: get_weather: days: 'x' is not of type 'integer' (+1 more)",
         ["get_weather: days: 'x' is not of type 'integer' (+1 more)"]),
        (calls(("get_weather", '{"city": "Paris"')), {}, GateOutcome.FAIL,
         ("1 invalid tool call; first: get_weather: arguments are not valid JSON "
         "(Expecting ',' delimiter: line 1 column 17 (char 16))"),
         ["get_weather: arguments are not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16))"]),
        (calls(("get_weather", {"city": "Paris"}), ("get_weather", {"town": "Lyon"})), {}, GateOutcome.FAIL,
         "1 invalid tool call; first: get_weather: (root): 'city' is a required property (+1 more)",
         ["get_weather: (root): 'city' is a required property (+1 more)"]),
        (calls(("search", {"q": 1})), {}, GateOutcome.NOT_APPLICABLE, "no call to a tool with a schema", []),
        (calls(("search", {"q": 1})), {"unknown_tools": "fail"}, GateOutcome.FAIL,
         "1 invalid tool call; first: search: no schema for this tool", ["search: no schema for this tool"]),
        (calls(("get_weather", None)), {}, GateOutcome.NOT_APPLICABLE, "no call to a tool with a schema", []),
    ],
    ids=["valid", "missing-required", "maximum", "two-errors", "invalid-json", "second-call-invalid", "no-schema-tool",
         "unknown-tool-fails", "arguments-not-recorded"],
)
def test_tool_args_schema(trace: Callable[[], Trace], spec: dict[str, Any], outcome: GateOutcome, reason: str,
                          details: list[str]) -> None:  # fmt: skip
    r = ToolArgsSchemaGate(ToolArgsSchemaSpec(schemas=SCHEMAS, **spec)).evaluate(trace())
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [e.detail for e in r.evidence] == details


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures(stem: str) -> None:
    assert ToolArgsSchemaGate(ToolArgsSchemaSpec(schemas=SCHEMAS)).evaluate(fixture_trace(stem)).outcome == GateOutcome.PASS
    strict = {"get_weather": {**WEATHER, "required": ["city", "units"]}}
    r = ToolArgsSchemaGate(ToolArgsSchemaSpec(schemas=strict)).evaluate(fixture_trace(stem))
    assert (r.outcome, r.evidence[0].text) == (GateOutcome.FAIL, '{"city": "Paris"}')
