"""Rubrics: a judge's instructions, inputs, labels and output contract, declared in YAML.

A rubric file holds one rubric::

    name: task_completion
    version: "1"
    description: Did the agent do what the user asked?
    applies_to: {sample_classes: [suspected_failure], services: ["support-*"]}
    template: |
      Decide whether the final answer completes the user's request: {user_messages} ... {final_answer}
    variables: {user_messages: user_messages, final_answer: final_answer}
    labels: [pass, fail]
    tiers: [cheap, strong]
    params: {temperature: 0.0, seed: 7, max_tokens: 512}

``rubric_hash`` covers everything that changes what the judge sees or may answer (template,
variables, labels, output schema, params): any change is a new version of the judge.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

VariableSource = Literal[
    "user_messages", "final_answer", "tool_calls", "tool_results", "failed_gates", "signals",
    "conversation", "system_instructions",
]  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RubricError(ValueError):
    """A rubric file that cannot be used; the message names the file and the field."""


class AppliesTo(BaseModel):
    """Which traces a rubric judges. Every list given must match (None = no filter); globs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_classes: list[str] | None = None  # drop | suspected_failure | success
    services: list[str] | None = None
    agents: list[str] | None = None
    failed_gates: list[str] | None = None  # at least one failed gate matches one glob

    def matches(self, *, sample_class: str | None, service: str, agent: str | None, failed_gates: Sequence[str]) -> bool:
        if self.sample_classes is not None and sample_class not in self.sample_classes:
            return False
        if self.services is not None and not _any_glob(service, self.services):
            return False
        if self.agents is not None and not _any_glob(agent or "", self.agents):
            return False
        return self.failed_gates is None or any(_any_glob(g, self.failed_gates) for g in failed_gates)


def _any_glob(value: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = 0
    max_tokens: int = Field(512, ge=16, le=8192)


def default_output_schema(labels: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": list(labels)},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "explanation": {"type": "string", "maxLength": 2000},
            "evidence": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
        },
        "required": ["label", "score", "explanation", "evidence"],
        "additionalProperties": False,
    }


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str  # human version; rubric_hash is the exact one
    description: str = ""
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    template: str
    variables: dict[str, VariableSource] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=lambda: ["pass", "fail"])
    output_schema: dict[str, Any] | None = None  # None = default_output_schema(labels)
    tiers: list[str] = Field(default_factory=lambda: ["cheap"])
    params: Params = Field(default_factory=Params)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lowercase letters, digits and underscores, starting with a letter")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v) or any(not x.strip() for x in v):
            raise ValueError("must be a non-empty list of distinct, non-blank labels")
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one model tier")
        return v

    @model_validator(mode="after")
    def _template_matches_variables(self) -> Self:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"template: {exc} (write literal braces as {{{{ and }}}})") from exc
        bad = sorted(f for f in used if not f.isidentifier())
        if bad:
            raise ValueError(f"template: placeholders must be plain names, got {bad}")
        missing = sorted(used - self.variables.keys())
        if missing:
            raise ValueError(f"template: placeholders {missing} are not declared in variables")
        unused = sorted(self.variables.keys() - used)
        if unused:
            raise ValueError(f"variables: {unused} are declared but not used in template")
        schema = self.effective_output_schema
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        if not {"label", "score", "explanation"} <= set(props):
            raise ValueError("output_schema: must define label, score and explanation properties")
        return self

    @property
    def effective_output_schema(self) -> dict[str, Any]:
        return self.output_schema if self.output_schema is not None else default_output_schema(self.labels)

    @cached_property
    def rubric_hash(self) -> str:
        doc = {
            "template": self.template,
            "variables": dict(sorted(self.variables.items())),
            "labels": self.labels,
            "output_schema": self.effective_output_schema,
            "params": self.params.model_dump(),
        }
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def applies(self, meta: Mapping[str, Any], *, service: str, agent: str | None) -> bool:
        decision = meta.get("decision") or {}
        gates = [g.get("gate", "") for g in meta.get("failed_gates") or [] if isinstance(g, dict)]
        return self.applies_to.matches(
            sample_class=decision.get("class"), service=service, agent=agent, failed_gates=gates
        )


def _format_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(rubric)"
        parts.append(f"{source}: {field}: {err['msg']}")
    return "; ".join(parts)


def parse_rubric(data: Any, source: str = "<rubric>") -> Rubric:
    if not isinstance(data, dict):
        raise RubricError(f"{source}: (rubric): expected a mapping, got {type(data).__name__}")
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        raise RubricError(_format_error(source, exc)) from None


def load_rubric(path: str | Path) -> Rubric:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RubricError(f"{path.name}: (yaml): {exc}") from None
    return parse_rubric(data, path.name)


def load_rubrics(directory: str | Path) -> dict[str, Rubric]:
    """Every ``*.yaml`` / ``*.yml`` rubric in ``directory``, by name; duplicate names are an error."""
    out: dict[str, Rubric] = {}
    seen: dict[str, str] = {}
    files = sorted(p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        rubric = load_rubric(path)
        if rubric.name in out:
            raise RubricError(f"{path.name}: name: {rubric.name!r} already defined in {seen[rubric.name]}")
        out[rubric.name] = rubric
        seen[rubric.name] = path.name
    return out


BUILTIN_DIR = Path(__file__).parent / "rubrics"


def builtin_rubrics() -> dict[str, Rubric]:
    return load_rubrics(BUILTIN_DIR)
