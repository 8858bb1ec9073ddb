"""The policy file (YAML): gates, signal rules, sampling classes and drop rules.

Its version is a hash of its validated content (canonical JSON), recorded on every decision, so a
decision can always be traced back to the exact rules that made it. An invalid policy stops the
worker at start with an error naming the offending entry (:class:`PolicyError`).

Without a policy file the built-in default (``stream/default_policy.yaml``) applies.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream.gates.registry import GateSpec
from stream.sampling.sampler import SamplingSpec
from stream.signals.actions import KNOWN_TYPES
from stream.signals.semantic import SemanticSignalSpec


class PolicyError(Exception):
    """The policy is invalid; the message names the entry."""


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gates: list[GateSpec] = Field(default_factory=list)
    signals: list[SemanticSignalSpec] = Field(default_factory=list)
    action_signals: list[str] = Field(
        default_factory=lambda: ["regenerate", "thumbs_down", "abandon", "edit", "escalate"],
        description="product event types that count as negative signals",
    )
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)

    @model_validator(mode="after")
    def _known_action_types(self) -> Policy:
        unknown = sorted(set(self.action_signals) - KNOWN_TYPES)
        if unknown:  # a typo would silently never count
            raise ValueError(f"action_signals: unknown event types {unknown}; known: {sorted(KNOWN_TYPES)}")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        seen: set[str] = set()
        for entry in [*self.gates, *self.signals]:
            if entry.name in seen:
                raise ValueError(f"duplicate gate/signal name {entry.name!r}")
            seen.add(entry.name)
        return self

    @property
    def version(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(exc: ValidationError, doc: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        # name the entry, not just its index: gates[3] -> gates[3] (name: tool_errors)
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(doc, dict):
            try:
                entry = doc[loc[0]][loc[1]]
                if isinstance(entry, dict) and "name" in entry:
                    where += f" (name: {entry['name']})"
            except (KeyError, IndexError, TypeError):
                pass
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_policy(text: str, source: str = "policy") -> Policy:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: the policy must be a mapping with gates / signals / sampling")
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(f"{source}: invalid policy:\n{_describe(exc, doc)}") from None
    except ValueError as exc:  # builders raise ValueError naming the entry (e.g. a CEL compile error)
        raise PolicyError(f"{source}: invalid policy: {exc}") from None


def load_policy(path: Path | None) -> Policy:
    if path is None:
        text = resources.files("stream").joinpath("default_policy.yaml").read_text(encoding="utf-8")
        return parse_policy(text, "default policy")
    if not path.is_file():
        raise PolicyError(f"policy file not found: {path}")
    return parse_policy(path.read_text(encoding="utf-8"), str(path))
