"""Match conditions over the facts of a completed trace, for drop rules and sampling strata.

:class:`TraceFacts` is what sampling looks at — a flat, cheap view of the trace plus the outcome
of the gates and signal miners. :class:`Match` is a conjunction of optional conditions; globs and
regexes are compiled once, when the policy is validated, so matching a trace is a few calls.

Condition semantics (all given conditions must hold; an empty match matches every trace):

* ``service``, ``agent``, ``route``: glob (``fnmatch``, case-sensitive; a plain string is an exact
  match) against the trace's service name, agent name and root span name;
* ``model``: glob; holds if *any* model the trace used matches;
* ``root_name``: regular expression, ``re.search`` against the root span name;
* ``attribute``: ``{key: value}`` against the root span's attributes (over its resource
  attributes, so ``deployment.environment`` works too). A string value is a glob on the attribute
  rendered as text (booleans as ``true``/``false``); a number or boolean must be equal, type
  included. A missing attribute never matches.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator

from schemas.model import Trace

Scalar = str | bool | int | float


@dataclass(slots=True)
class TraceFacts:
    trace_id: str
    service: str = ""
    agent: str = ""
    route: str = ""  # root span name
    models: list[str] = field(default_factory=list)
    span_count: int = 0
    duration_ms: float = 0.0
    failed_gates: list[str] = field(default_factory=list)  # names of gates whose outcome is fail
    negative_signals: list[str] = field(default_factory=list)  # signal types
    positive_signals: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)  # root span over resource attributes


def facts_from(
    trace: Trace,
    failed_gates: Iterable[str] = (),
    negative_signals: Iterable[str] = (),
    positive_signals: Iterable[str] = (),
) -> TraceFacts:
    root = trace.root
    attributes: dict[str, Any] = {}
    if root is not None:
        attributes = {**root.resource_attributes, **root.attributes}
    return TraceFacts(
        trace_id=trace.trace_id,
        service=trace.service_name,
        agent=trace.agent_name or "",
        route=root.name if root is not None else "",
        models=trace.models,
        span_count=len(trace.spans),
        duration_ms=trace.duration_ns / 1e6,
        failed_gates=list(failed_gates),
        negative_signals=list(negative_signals),
        positive_signals=list(positive_signals),
        attributes=attributes,
    )


def _glob(pattern: str) -> Callable[[str], bool]:
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _attribute_test(key: str, expected: Scalar) -> Callable[[TraceFacts], bool]:
    if isinstance(expected, str):
        text_matches = _glob(expected)
        return lambda f: key in f.attributes and bool(text_matches(_as_text(f.attributes[key])))
    # 1 == True in Python; a policy saying `true` must not match the integer 1
    return lambda f: (
        key in f.attributes
        and type(f.attributes[key]) is type(expected)
        and f.attributes[key] == expected
    )


class Match(BaseModel):
    """A conjunction of optional conditions over :class:`TraceFacts` (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    service: str | None = None
    agent: str | None = None
    route: str | None = None
    model: str | None = None
    root_name: str | None = None
    attribute: dict[str, Scalar] | None = None

    _tests: list[Callable[[TraceFacts], bool]] = PrivateAttr(default_factory=list)

    @field_validator("root_name")
    @classmethod
    def _valid_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        return v

    def model_post_init(self, context: Any, /) -> None:
        tests: list[Callable[[TraceFacts], bool]] = []
        if self.service is not None:
            service = _glob(self.service)
            tests.append(lambda f: bool(service(f.service)))
        if self.agent is not None:
            agent = _glob(self.agent)
            tests.append(lambda f: bool(agent(f.agent)))
        if self.route is not None:
            route = _glob(self.route)
            tests.append(lambda f: bool(route(f.route)))
        if self.model is not None:
            model = _glob(self.model)
            tests.append(lambda f: any(model(m) for m in f.models))
        if self.root_name is not None:
            root_name = re.compile(self.root_name).search
            tests.append(lambda f: root_name(f.route) is not None)
        for key, expected in (self.attribute or {}).items():
            tests.append(_attribute_test(key, expected))
        self._tests = tests

    @property
    def is_empty(self) -> bool:
        return not self._tests

    def matches(self, facts: TraceFacts) -> bool:
        return all(test(facts) for test in self._tests)
