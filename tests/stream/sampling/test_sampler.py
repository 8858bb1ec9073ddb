"""Sampler: precedence, rules, strata, rates, determinism; spec validation naming the entry."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from pydantic import ValidationError

from stream.sampling.hashing import keep
from stream.sampling.rules import TraceFacts
from stream.sampling.sampler import Decision, Sampler, SamplingSpec

IDS = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(2000)]
SPEC = SamplingSpec.model_validate({
    "salt": "test-salt",
    "drop": [{"name": "healthcheck", "match": {"route": "GET /health*"}},
             {"name": "synthetic", "match": {"attribute": {"synthetic": True}}}],
    "suspected_failure": {"rate": 1.0},
    "success": {"rate": 0.02, "strata": [
        {"name": "support-bot", "match": {"agent": "support"}, "rate": 0.1},
        {"name": "support-gpt", "match": {"agent": "support", "model": "gpt-*"}, "rate": 0.5},  # never: first wins
        {"name": "big-models", "match": {"model": "gpt-5*"}, "rate": 0.3},
    ]},
})  # fmt: skip
SAMPLER = Sampler(SPEC, "v1")


def _f(trace_id: str = IDS[0], **kw: object) -> TraceFacts:
    return TraceFacts(trace_id, **kw)  # type: ignore[arg-type]


def test_precedence_drop_then_suspected_failure_then_success() -> None:
    failing = {"failed_gates": ["tool_error"], "negative_signals": ["frustration"], "agent": "support"}
    d = SAMPLER.decide(_f(route="GET /healthz", **failing))
    assert d == Decision("drop", "drop:healthcheck", 0.0, False, "drop", "v1")
    d = SAMPLER.decide(_f(attributes={"synthetic": True}, **failing))
    assert d.rule == "drop:synthetic"
    d = SAMPLER.decide(_f(**failing))
    assert (d.sample_class, d.rule, d.p, d.sampled, d.stratum) == (
        "suspected_failure", "gate:tool_error", 1.0, True, "suspected_failure")
    d = SAMPLER.decide(_f(negative_signals=["frustration", "regenerate"], agent="support"))
    assert (d.sample_class, d.rule) == ("suspected_failure", "signal:frustration")
    d = SAMPLER.decide(_f(agent="support", positive_signals=["thanks"]))
    assert (d.sample_class, d.rule, d.p, d.stratum) == (
        "success", "success:stratum:support-bot", 0.1, "success:stratum:support-bot")


@pytest.mark.parametrize(
    ("facts", "rule", "p"),
    [
        ({"agent": "support", "models": ["gpt-5"]}, "success:stratum:support-bot", 0.1),  # first match wins
        ({"agent": "billing", "models": ["gpt-4o", "gpt-5-mini"]}, "success:stratum:big-models", 0.3),
        ({"agent": "billing", "models": ["gpt-4o"]}, "success:base", 0.02),
        ({}, "success:base", 0.02),
    ],
    ids=["first-stratum-wins", "model-stratum", "base", "no-facts"],
)
def test_stratum_selection(facts: dict[str, object], rule: str, p: float) -> None:
    for t in IDS[:200]:
        d = SAMPLER.decide(_f(t, **facts))
        assert (d.sample_class, d.rule, d.stratum, d.p) == ("success", rule, rule, p)
        assert d.sampled == keep("test-salt", t, p) and d.policy_version == "v1"


def test_gate_and_signal_filters() -> None:
    spec = SamplingSpec.model_validate({"suspected_failure": {"gates": ["tool_*", "loop"], "signals": []}})
    sampler = Sampler(spec, "v")
    assert sampler.decide(_f(failed_gates=["pii", "loop", "tool_error"])).rule == "gate:loop"  # reported order
    assert sampler.decide(_f(failed_gates=["pii"])).rule == "success:base"  # not a counted gate
    assert sampler.decide(_f(negative_signals=["frustration"])).rule == "success:base"  # signals: [] counts none
    default = Sampler(SamplingSpec(), "v")
    assert default.decide(_f(failed_gates=["pii"])).rule == "gate:pii"  # None: any gate counts


def test_class_rates_zero_and_one() -> None:
    spec = SamplingSpec.model_validate({"suspected_failure": {"rate": 0.0}, "success": {"rate": 1.0}})
    sampler = Sampler(spec, "v")
    for t in IDS[:300]:
        failing = sampler.decide(_f(t, failed_gates=["g"]))
        assert (failing.sampled, failing.p) == (False, 0.0)
        ok = sampler.decide(_f(t))
        assert (ok.sampled, ok.p) == (True, 1.0)


def test_empirical_class_rate_and_determinism() -> None:
    decisions = [SAMPLER.decide(_f(t, agent="support")) for t in IDS]
    assert decisions == [SAMPLER.decide(_f(t, agent="support")) for t in IDS]  # same on every call
    assert decisions == [Sampler(SPEC.model_copy(deep=True), "v1").decide(_f(t, agent="support")) for t in IDS]
    rate = sum(d.sampled for d in decisions) / len(IDS)
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / len(IDS)) ** 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        decisions[0].sampled = True  # type: ignore[misc]


def test_salt_changes_the_draw() -> None:
    other = Sampler(SPEC.model_copy(update={"salt": "another"}), "v1")
    a = [SAMPLER.decide(_f(t)).sampled for t in IDS]
    b = [other.decide(_f(t)).sampled for t in IDS]
    assert a != b


def test_defaults() -> None:
    spec = SamplingSpec()
    assert (spec.salt, spec.suspected_failure.rate, spec.success.rate, spec.drop) == ("tracejudge", 1.0, 0.02, [])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"drop": [{"name": "hc", "match": {}}]}, "drop rule 'hc': empty match"),
        ({"drop": [{"name": "hc", "match": {"root_name": "("}}]}, "drop rule 'hc': match.root_name"),
        ({"drop": [{"name": "hc", "match": {"route": "/h"}}, {"name": "hc", "match": {"route": "/x"}}]},
         "duplicate drop rule name 'hc'"),
        ({"drop": [{"name": "has space", "match": {"route": "x"}}]}, "drop rule 'has space': name"),
        ({"success": {"strata": [{"name": "vip", "match": {}, "rate": 1.5}]}}, "stratum 'vip': rate"),
        ({"success": {"strata": [{"name": "vip", "match": {}, "rate": -0.1}]}}, "stratum 'vip': rate"),
        ({"success": {"strata": [{"name": "vip", "match": {"agent": "a"}}, {"name": "vip", "match": {}}]}},
         "duplicate stratum name 'vip'"),
        ({"success": {"strata": [{"name": "vip", "match": {"agnt": "a"}}]}}, "stratum 'vip': match.agnt"),
        ({"success": {"rate": 2}}, "success.rate"),
        ({"success": {"rate": float("nan")}}, "success.rate"),
        ({"suspected_failure": {"rate": -1}}, "suspected_failure.rate"),
        ({"suspected_failure": {"gate": ["x"]}}, "suspected_failure.gate"),
        ({"salt": ""}, "salt"),
    ],
    ids=["drop-empty-match", "drop-bad-regex", "drop-duplicate", "drop-bad-name", "stratum-rate-high",
         "stratum-rate-negative", "stratum-duplicate", "stratum-unknown-condition", "success-rate",
         "success-rate-nan", "failure-rate", "failure-unknown-field", "empty-salt"],
)  # fmt: skip
def test_invalid_spec_names_the_entry(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SamplingSpec.model_validate(doc)
    assert message in str(exc.value), str(exc.value)
