"""When the cascade escalates: required traces, tier disagreement, failed cheap verdicts, low confidence."""

from __future__ import annotations

import pytest

from judges.cascade import confidence, escalation_reason, required
from judges.config import CascadeSpec
from judges.rubric import AppliesTo, builtin_rubrics
from judges.verdict import Verdict

RUBRIC = builtin_rubrics()["task_completion"]
BASE = {"trace_id": "t", "judge": "task_completion", "judge_version": "1", "rubric_hash": "h"}


def ok(label: str, score: float) -> Verdict:
    return Verdict(label=label, score=score, explanation="x", **BASE)


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [(ok("pass", 0.9), 0.9), (ok("fail", 0.1), 0.9), (ok("fail", 0.7), 0.3), (ok("pass", 0.2), 0.2),
     (Verdict.unscored(reason="invalid_output", **BASE), 0.0)],  # fmt: skip
)
def test_confidence_is_relative_to_the_label(verdict: Verdict, expected: float) -> None:
    assert confidence(verdict, RUBRIC) == pytest.approx(expected)


def test_escalation_reasons_in_order_of_precedence() -> None:
    spec = CascadeSpec(escalate_below=0.75)
    sure, unsure = ok("pass", 0.95), ok("pass", 0.6)
    assert escalation_reason(spec, RUBRIC, sure) is None
    assert escalation_reason(spec, RUBRIC, unsure) == "low_confidence"
    assert escalation_reason(spec, RUBRIC, ok("fail", 0.3)) == "low_confidence"  # contradicts itself
    assert escalation_reason(spec, RUBRIC, Verdict.error(reason="provider_server", **BASE)) == "cheap_failed"
    assert escalation_reason(CascadeSpec(escalate_on_failure=False), RUBRIC,
                             Verdict.error(reason="provider_server", **BASE)) is None  # fmt: skip
    assert escalation_reason(spec, RUBRIC, Verdict.budget_skipped(**BASE)) is None
    assert escalation_reason(spec, RUBRIC, sure, tiers_disagree=True) == "tier_disagreement"
    assert escalation_reason(spec, RUBRIC, sure, is_required=True, tiers_disagree=True) == "required"


def test_required_matches_classes_and_gates() -> None:
    spec = CascadeSpec(always_strong_for=AppliesTo(failed_gates=["tool_*"]))
    meta = {"decision": {"class": "suspected_failure"}, "failed_gates": [{"gate": "tool_errors"}]}
    assert required(spec, RUBRIC, meta, service="s", agent=None)
    assert not required(spec, RUBRIC, {**meta, "failed_gates": [{"gate": "latency"}]}, service="s", agent=None)
    assert not required(CascadeSpec(), RUBRIC, meta, service="s", agent=None)
