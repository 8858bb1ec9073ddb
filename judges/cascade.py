"""Right-sizing: when a cheap tier's verdict is good enough, and when to escalate.

Tiers run cheapest first (the order of ``tiers`` in the judging config). After each tier the
cascade asks :func:`escalation_reason`; ``None`` means this verdict is final. Every call made is
recorded (ledger rows), and the final verdict records which tiers were called and why it escalated.

Reasons, in order of precedence:

* ``required``: the trace matches ``cascade.always_strong_for`` (e.g. a class or gate that always
  deserves the strongest model);
* ``tier_disagreement``: calibration found the tiers disagree on more than
  ``calibration.max_tier_disagreement`` of the golden set, so the cheap tier is not trusted alone;
* ``cheap_failed``: the cheap tier produced no usable verdict (unscored or error; not budget);
* ``low_confidence``: confidence below ``cascade.escalate_below``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from judges.config import CascadeSpec
from judges.rubric import Rubric
from judges.verdict import Verdict


def confidence(verdict: Verdict, rubric: Rubric) -> float:
    """How sure the judge is of its label: ``score`` for the rubric's first label (the one that
    fully meets the criteria), ``1 - score`` for any other; 0 for a verdict without a score."""
    if verdict.status != "ok" or verdict.score is None:
        return 0.0
    return verdict.score if verdict.label == rubric.labels[0] else 1.0 - verdict.score


def required(spec: CascadeSpec, rubric: Rubric, meta: Mapping[str, Any], *, service: str, agent: str | None) -> bool:
    if spec.always_strong_for is None:
        return False
    decision = meta.get("decision") or {}
    gates = [g.get("gate", "") for g in meta.get("failed_gates") or [] if isinstance(g, dict)]
    return spec.always_strong_for.matches(
        sample_class=decision.get("class"), service=service, agent=agent, failed_gates=gates
    )


def escalation_reason(
    spec: CascadeSpec,
    rubric: Rubric,
    verdict: Verdict,
    *,
    is_required: bool = False,
    tiers_disagree: bool = False,
) -> str | None:
    """Why the next tier must run after ``verdict`` (``None``: ``verdict`` is final)."""
    if is_required:
        return "required"
    if tiers_disagree:
        return "tier_disagreement"
    if verdict.status in ("unscored", "error"):
        return "cheap_failed" if spec.escalate_on_failure else None
    if verdict.status != "ok":
        return None
    if confidence(verdict, rubric) < spec.escalate_below:
        return "low_confidence"
    return None
