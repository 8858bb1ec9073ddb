"""``tool_args_schema``: tool-call arguments validated against a JSON Schema per tool name.

Validators are built once, when the gate is built (schemas are checked against their metaschema
at policy load). Arguments that are not valid JSON fail; empty arguments count as ``{}``; calls
whose arguments were not recorded are skipped. ``unknown_tools: fail`` also fails calls to tools
without a schema. ``not_applicable`` when no call to a tool with a schema was made.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from jsonschema.protocols import Validator
from pydantic import Field, field_validator

from schemas.model import Trace
from stream.gates.base import BaseGate, Evidence, GateResult, GateSpecBase
from stream.gates.text import clip, plural
from stream.gates.trace_view import ToolUse, tool_uses


class ToolArgsSchemaSpec(GateSpecBase):
    type: Literal["tool_args_schema"] = "tool_args_schema"
    schemas: dict[str, dict[str, Any]] = Field(min_length=1, description="tool name → JSON Schema")
    unknown_tools: Literal["ignore", "fail"] = "ignore"

    @field_validator("schemas")
    @classmethod
    def _valid_schemas(cls, schemas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for tool, schema in schemas.items():
            try:
                validators.validator_for(schema).check_schema(schema)
            except jsonschema_exceptions.SchemaError as exc:
                raise ValueError(f"schema for tool {tool!r} is invalid: {exc.message}") from None
        return schemas


def build_validator(schema: dict[str, Any]) -> Validator:
    cls = validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _error_text(err: jsonschema_exceptions.ValidationError) -> str:
    where = "/".join(str(p) for p in err.absolute_path)
    return f"{where or '(root)'}: {err.message}"


class ToolArgsSchemaGate(BaseGate):
    type = "tool_args_schema"

    def __init__(self, spec: ToolArgsSchemaSpec) -> None:
        super().__init__(spec)
        self.validators = {tool: build_validator(schema) for tool, schema in spec.schemas.items()}
        self.fail_unknown = spec.unknown_tools == "fail"

    def evaluate(self, trace: Trace) -> GateResult:
        checked = 0
        evidence: list[Evidence] = []
        for use in tool_uses(trace):
            validator = self.validators.get(use.name)
            if validator is None:
                if self.fail_unknown:
                    evidence.append(Evidence(use.span_id, clip(use.arguments), f"{use.name}: no schema for this tool"))
                continue
            if use.arguments is None:
                continue
            checked += 1
            problem = self._check(validator, use)
            if problem:
                evidence.append(Evidence(use.span_id, clip(use.arguments), f"{use.name}: {problem}"))
        if evidence:
            first = evidence[0].detail or ""
            return self.failed(f"{plural(len(evidence), 'invalid tool call')}; first: {clip(first, 200)}", evidence)
        if not checked:
            return self.not_applicable("no call to a tool with a schema")
        return self.passed(f"{plural(checked, 'tool call')} match their schemas")

    @staticmethod
    def _check(validator: Validator, use: ToolUse) -> str | None:
        text = (use.arguments or "").strip() or "{}"
        try:
            args = json.loads(text)
        except ValueError as exc:
            return f"arguments are not valid JSON ({exc})"
        errors = list(validator.iter_errors(args))
        if not errors:
            return None
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error_text(jsonschema_exceptions.best_match(errors)) + more
