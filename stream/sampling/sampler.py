"""The sampling decision of a completed trace: class, deciding rule, inclusion probability.

Classes, in fixed precedence (the first that applies decides):

1. ``drop`` — the first :class:`DropRule` whose match holds (health checks, synthetic probes).
   Never judged; ``p = 0``, so dropped traffic is outside what the pass-rate estimate covers.
2. ``suspected_failure`` — a failing gate or a negative signal counted by
   :class:`SuspectedFailureClass` (by default any); sampled at its rate (default 1.0). The rule
   names the first counted gate (``gate:<name>``), else the first counted signal
   (``signal:<type>``), in the order the caller reported them.
3. ``success`` — everything else: the first :class:`Stratum` whose match holds
   (``success:stratum:<name>``) at its rate, else the base rate (``success:base``).

Sampling itself is :func:`stream.sampling.hashing.keep` — a salted hash of the trace id against
the rate — so a decision is the same on every replay and every worker. Every decision records
``p`` and the estimation ``stratum`` key (``drop``, ``suspected_failure``, ``success:base``,
``success:stratum:<name>``): within a stratum all traces have the same ``p``, which is what
:mod:`stream.estimate` needs to weight judged traces back to all traffic.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from stream.sampling.hashing import keep
from stream.sampling.rules import Match, TraceFacts

SampleClass = Literal["drop", "suspected_failure", "success"]
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"  # a name is part of the stratum key "success:stratum:<name>"


def _rate(default: float) -> Any:
    return Field(default, ge=0.0, le=1.0, allow_inf_nan=False, description="inclusion probability")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _NamedEntry(_Spec):
    """An entry of a list; any validation error is re-raised naming the entry, not its index."""

    kind: ClassVar[str] = "entry"
    name: str = Field(min_length=1, pattern=NAME_PATTERN)

    @model_validator(mode="wrap")
    @classmethod
    def _name_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"{cls.kind} {name!r}: {details}") from None


class DropRule(_NamedEntry):
    kind: ClassVar[str] = "drop rule"
    match: Match

    @model_validator(mode="after")
    def _not_everything(self) -> DropRule:
        if self.match.is_empty:
            # an "after" check runs outside _name_errors, so it names the entry itself
            raise ValueError(f"drop rule {self.name!r}: empty match: it would drop every trace")
        return self


class Stratum(_NamedEntry):
    kind: ClassVar[str] = "stratum"
    match: Match
    rate: float = _rate(0.02)


class SuspectedFailureClass(_Spec):
    rate: float = _rate(1.0)
    gates: list[str] | None = Field(None, description="gate names (globs) that count; None = any failing gate")
    signals: list[str] | None = Field(None, description="negative signal types (globs) that count; None = any")


class SuccessClass(_Spec):
    rate: float = _rate(0.02)
    strata: list[Stratum] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SuccessClass:
        _check_unique("stratum", [s.name for s in self.strata])
        return self


class SamplingSpec(_Spec):
    salt: str = Field("tracejudge", min_length=1)
    drop: list[DropRule] = Field(default_factory=list)
    suspected_failure: SuspectedFailureClass = Field(default_factory=SuspectedFailureClass)
    success: SuccessClass = Field(default_factory=SuccessClass)

    @model_validator(mode="after")
    def _unique(self) -> SamplingSpec:
        _check_unique("drop rule", [r.name for r in self.drop])
        return self


def _check_unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {kind} name {name!r}")
        seen.add(name)


@dataclass(frozen=True, slots=True)
class Decision:
    sample_class: SampleClass
    rule: str  # drop:<name> | gate:<name> | signal:<type> | success:stratum:<name> | success:base
    p: float  # inclusion probability: 0 for drop, the class / stratum rate otherwise
    sampled: bool
    stratum: str  # estimation key: drop | suspected_failure | success:base | success:stratum:<name>
    policy_version: str


def _selector(patterns: list[str] | None) -> Callable[[Sequence[str]], str | None]:
    """First reported name counted by ``patterns`` (globs; None = every name counts)."""
    if patterns is None:
        return lambda names: names[0] if names else None
    exact = {p for p in patterns if not any(c in p for c in "*?[")}
    globs = [p for p in patterns if p not in exact]

    def first(names: Sequence[str]) -> str | None:
        for n in names:
            if n in exact or any(fnmatch.fnmatchcase(n, g) for g in globs):
                return n
        return None

    return first


class Sampler:
    """Decides one trace at a time; pure and deterministic (facts + spec + salt -> decision)."""

    def __init__(self, spec: SamplingSpec, policy_version: str) -> None:
        self.spec = spec
        self.policy_version = policy_version
        self._salt = spec.salt
        self._drop = [(f"drop:{r.name}", r.match) for r in spec.drop]
        self._gate = _selector(spec.suspected_failure.gates)
        self._signal = _selector(spec.suspected_failure.signals)
        self._failure_rate = spec.suspected_failure.rate
        self._strata = [(f"success:stratum:{s.name}", s.match, s.rate) for s in spec.success.strata]
        self._base_rate = spec.success.rate

    def decide(self, facts: TraceFacts) -> Decision:
        for rule, match in self._drop:
            if match.matches(facts):
                return Decision("drop", rule, 0.0, False, "drop", self.policy_version)
        failure_rule = None
        if (gate := self._gate(facts.failed_gates)) is not None:
            failure_rule = f"gate:{gate}"
        elif (signal := self._signal(facts.negative_signals)) is not None:
            failure_rule = f"signal:{signal}"
        if failure_rule is not None:
            rate = self._failure_rate
            return Decision("suspected_failure", failure_rule, rate, keep(self._salt, facts.trace_id, rate),
                            "suspected_failure", self.policy_version)  # fmt: skip
        for key, match, rate in self._strata:
            if match.matches(facts):
                return Decision("success", key, rate, keep(self._salt, facts.trace_id, rate), key,
                                self.policy_version)  # fmt: skip
        rate = self._base_rate
        return Decision("success", "success:base", rate, keep(self._salt, facts.trace_id, rate), "success:base",
                        self.policy_version)  # fmt: skip
