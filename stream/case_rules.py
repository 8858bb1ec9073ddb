"""Which set an exported case goes to (``blocking`` / ``monitoring`` / ``backlog``): ordered rules
from YAML, first match wins (see :func:`parse_rules`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.export_dataset import ExportError

CaseSet = Literal["blocking", "monitoring", "backlog"]
DEFAULT_SET = "backlog"
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


class When(BaseModel):
    """Conditions of a set rule; every condition given must hold (none given: always)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate_severity_at_least: Literal["info", "warning", "error"] | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    signals_any: list[str] | None = None  # signal types (globs), e.g. [frustration, thumbs_down]
    judges: list[str] | None = None  # judge names (globs); a gate-only case has no judge

    def matches(self, case: Mapping[str, Any]) -> bool:
        evidence = case.get("evidence") or {}
        if self.gate_severity_at_least is not None:
            need = SEVERITY_RANK[self.gate_severity_at_least]
            if not any(SEVERITY_RANK.get(g.get("severity"), -1) >= need for g in evidence.get("gates") or []):
                return False
        if self.min_confidence is not None:
            conf = (case.get("verdict") or {}).get("confidence")
            if conf is None or conf < self.min_confidence:
                return False
        if self.signals_any is not None:
            types = [s.get("type", "") for s in evidence.get("signals") or []]
            if not any(fnmatchcase(t, p) for t in types for p in self.signals_any):
                return False
        if self.judges is not None:
            judge = (case.get("grader") or {}).get("judge")
            if judge is None or not any(fnmatchcase(judge, p) for p in self.judges):
                return False
        return True


class SetRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    set: CaseSet
    when: When = Field(default_factory=When)


def parse_rules(data: Any, source: str = "<rules>") -> list[SetRule]:
    """Rules from YAML data: a list (or ``{rules: [...]}``) of ``{set, when: {...}}``, in order::

        - set: blocking
          when: {gate_severity_at_least: error, min_confidence: 0.8}
        - set: monitoring
          when: {signals_any: [frustration, thumbs_down], judges: [task_completion]}
    """
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise ExportError(f"{source}: expected a list of rules, got {type(data).__name__}")
    rules = []
    for i, item in enumerate(data):
        try:
            rules.append(SetRule.model_validate(item))
        except ValidationError as exc:
            msgs = [f"{source}: rules.{i}.{'.'.join(map(str, e['loc'])) or '(rule)'}: {e['msg']}" for e in exc.errors()]
            raise ExportError("; ".join(msgs)) from None
    return rules


def load_rules(path: Path) -> list[SetRule]:
    try:
        return parse_rules(yaml.safe_load(path.read_text(encoding="utf-8")), path.name)
    except yaml.YAMLError as exc:
        raise ExportError(f"{path.name}: (yaml): {exc}") from None


def assign_set(case: Mapping[str, Any], rules: Iterable[SetRule]) -> str:
    """The set of the first rule whose conditions the case meets; ``backlog`` when none does."""
    return next((r.set for r in rules if r.when.matches(case)), DEFAULT_SET)
