"""The outcome of one judge on one trace.

A verdict carries what was decided (label, score, explanation, evidence) and everything needed to
reproduce or audit it: judge name and version, rubric hash, provider, pinned and reported model,
sampling parameters, tokens, cost, latency and attempts.

``status`` separates a judgement from a failure to judge: only ``ok`` verdicts carry a label or a
score. A judge that failed (invalid output, provider error, budget exhausted) is never a "fail".
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["ok", "unscored", "budget_skipped", "error"]


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trace_id: str
    judge: str
    judge_version: str
    rubric_hash: str
    label: str | None = None
    score: float | None = None
    explanation: str = ""
    evidence: list[str] = Field(default_factory=list)
    provider: str = ""
    model: str = ""  # pinned, as configured
    model_reported: str | None = None  # as the provider answered
    temperature: float = 0.0
    seed: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    status: Status = "ok"
    status_reason: str = ""

    @model_validator(mode="after")
    def _label_only_when_ok(self) -> Self:
        if self.status == "ok":
            if self.label is None:
                raise ValueError("an ok verdict needs a label")
            if self.score is not None and not 0.0 <= self.score <= 1.0:
                raise ValueError("score must be within [0, 1]")
        elif self.label is not None or self.score is not None:
            raise ValueError(f"a {self.status} verdict carries no label or score")
        return self

    @property
    def is_judged(self) -> bool:
        return self.status == "ok"

    @classmethod
    def unscored(cls, *, reason: str, **fields: Any) -> Verdict:
        """The judge answered but its output was unusable (``invalid_output: …``)."""
        return cls._failed("unscored", reason, fields)

    @classmethod
    def error(cls, *, reason: str, **fields: Any) -> Verdict:
        """The judge could not run: provider error, bad configuration, internal failure."""
        return cls._failed("error", reason, fields)

    @classmethod
    def budget_skipped(cls, *, reason: str = "budget_exhausted", **fields: Any) -> Verdict:
        """The judge was not called because the budget did not allow it."""
        return cls._failed("budget_skipped", reason, fields)

    @classmethod
    def _failed(cls, status: Status, reason: str, fields: dict[str, Any]) -> Verdict:
        fields = {k: v for k, v in fields.items() if k not in ("label", "score", "status", "status_reason")}
        return cls(status=status, status_reason=reason, label=None, score=None, **fields)
