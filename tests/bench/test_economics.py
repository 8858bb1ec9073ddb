"""Invariants of the judge-economics benchmark (bench/economics.py, bench/population.py) on a small population.

The benchmark asserts nothing about its targets; these tests check that its bookkeeping is right:
calls and spend add up, the real sampler gave every flagged trace p = 1, the real estimator's
interval covers what it estimates, and the real budget ladder keeps spend within the budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import population as eco
from judges.config import CascadeSpec
from stream.policy import load_policy
from stream.sampling.hashing import unit_hash

N = 20_000
SEED = 5


@pytest.fixture(scope="module")
def setup() -> tuple[eco.Corpus, eco.Run]:
    policy = load_policy(None)
    eco.check_detectors(policy)
    corpus = eco.build_corpus(n_traces=20)
    return corpus, eco.run(N, 0.03, SEED, corpus, policy, CascadeSpec(**eco.DEMO_CASCADE))


def test_calls_are_bounded_by_traces(setup: tuple[eco.Corpus, eco.Run]) -> None:
    _, r = setup
    sm = r.summary
    ours, every = sm["judged"], sm["judge_everything"]
    assert every["cheap_calls"] == N
    assert ours["cheap_calls"] == sm["sampled"] <= N
    assert ours["escalated_calls"] <= ours["cheap_calls"]
    assert ours["calls"] == ours["cheap_calls"] + ours["escalated_calls"] < every["calls"]
    assert 0 < sm["spend_ratio"] < 1


def test_spend_is_the_sum_of_per_call_costs(setup: tuple[eco.Corpus, eco.Run]) -> None:
    _, r = setup
    cheap, strong = eco.prices()
    total = 0.0
    for i in np.flatnonzero(r.sampling.sampled).tolist():
        total += cheap.cost(int(r.tokens[i]), eco.OUTPUT_TOKENS)
        if r.judging.escalate[i]:
            total += strong.cost(int(r.tokens[i]), eco.OUTPUT_TOKENS)
    sm = r.summary
    assert total == pytest.approx(sm["judged"]["usd"], rel=1e-9)
    assert sm["spend_ratio"] == pytest.approx(sm["judged"]["usd"] / sm["judge_everything"]["usd"])


def test_flagged_traces_are_all_judged_and_the_rest_by_hash(setup: tuple[eco.Corpus, eco.Run]) -> None:
    _, r = setup
    s, salt = r.sampling, load_policy(None).sampling.salt
    assert s.flagged.sum() > 0 and r.summary["every_flagged_p_is_1"]
    assert (s.p[s.flagged] == 1.0).all() and s.sampled[s.flagged].all()
    assert (s.flagged == (r.pop.code != 0)).all()  # any fired gate or negative signal counts
    rest = np.flatnonzero(~s.flagged)
    assert (s.p[rest] == 0.02).all()
    expected = np.array([unit_hash(salt, r.pop.ids[i]) < 0.02 for i in rest.tolist()])
    assert (s.sampled[rest] == expected).all()
    assert set(s.strata) == {"suspected_failure", "success:base"}


def test_recall_and_estimate(setup: tuple[eco.Corpus, eco.Run]) -> None:
    _, r = setup
    sm, e = r.summary, r.summary["estimate"]
    detectable = r.pop.failed & r.sampling.flagged
    assert sm["gate_detectable_failures"] == int(detectable.sum()) > 0
    assert sm["recall_all_failures"] < sm["recall_gate_detectable"] <= 1.0
    # the real estimator's interval covers what it estimates: the judge's pass rate over all traffic
    assert e["ci_low"] <= sm["judge_everything_pass_rate"] <= e["ci_high"]
    assert e["ci_width"] < 0.05
    assert sm["naive_judged_pass_rate"] < e["ci_low"] - 0.1  # oversampled failures bias the naive rate


def test_escalation_table_is_the_cascade_threshold() -> None:
    table = eco.escalation_table(CascadeSpec(escalate_below=0.75))
    assert table[1, 0, 74, 0] and not table[1, 0, 75, 0]  # pass label, confidence 0.74 / 0.75
    assert table[1, 1, 74, 0] and not table[1, 1, 75, 0]  # fail label, same confidences
    assert table[0].all()  # unscored cheap verdicts escalate
    assert table[:, :, :, 1].all()  # always_strong_for


def test_budget_ladder_keeps_spend_within_the_budget(setup: tuple[eco.Corpus, eco.Run]) -> None:
    corpus, r = setup
    needed = r.summary["judged"]["usd"]
    tight = eco.run_budget(r, corpus, 0.2 * needed)
    assert tight["spent_usd"] <= tight["budget_usd"]
    assert tight["recall_gate_detectable"] < r.summary["recall_gate_detectable"]
    assert tight.get("failures_deferred", 0) > 0 and tight.get("success_skipped", 0) > 0
    ample = eco.run_budget(r, corpus, 10 * needed)  # the ladder stays at NORMAL: same calls, same spend
    assert ample["calls"] == r.summary["judged"]["calls"]
    assert ample["spent_usd"] == pytest.approx(needed, rel=1e-9)
    assert not math.isnan(ample["estimate"]["rate"])
