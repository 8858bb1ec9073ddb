"""Judge economics on a simulated population: spend and recall vs judging everything (issue 7, item 6).

    python bench/economics.py                                  # 1M traces, 3 % failures, seed 1
    python -m bench.economics --traces 200000 --seed 3 --json bench/results/economics.json
    python bench/economics.py --success-rate 0.01 --fp-scale 0.5   # move the knobs

One run prints: judge calls (cheap + escalated) and USD spend of the sampled design vs the same
cascade applied to every trace, the spend ratio (target <= 0.05), the recall of gate-detectable
failures (target >= 0.98), the recall of all failures, the pass rate over all traffic estimated
from the judged sample with its 95 % CI, the naive judged pass rate, a per-failure-kind table, a
sweep of the knobs that move the spend ratio, empirical CI coverage over repeat populations and
the degradation under a budget below the needed spend. It is a benchmark: it asserts nothing.

REAL project code (the parts that decide the economics):

* sampling: the default policy (``stream.policy.load_policy(None)`` = stream/default_policy.yaml:
  suspected failures at 1.0, successes at 0.02; the demo uses it too) and
  ``stream.sampling.Sampler.decide`` called on every simulated trace (salted blake2b of a random
  32-hex trace id), giving class, stratum and inclusion probability p. Failed gates / negative
  signals are passed as ``stream.decide`` passes them (gates in policy order, signals sorted).
* escalation: ``judges.cascade.escalation_reason`` (and ``required``) with the demo's cascade
  (``escalate_below: 0.75``, no ``always_strong_for`` unless ``--always-strong-for-gates``) on
  real ``judges.verdict.Verdict`` objects of the ``task_completion`` rubric. The rule only sees
  (status, label, score, required), so it is evaluated once per distinct value (scores on a
  0.01 grid) and looked up per trace.
* prices: ``stream.prices.load_prices()`` (stream/prices.yaml) for the demo's pinned tiers,
  gpt-4o-mini-2024-07-18 (cheap) and gpt-4o-2024-08-06 (strong); ``ModelPrice.cost`` on token sums.
* prompt size: ``judges.prompt.build_request`` (the defended prompt the judge sends) for the
  ``task_completion`` rubric on traces of the benchmark corpus (``bench.generate``); each
  simulated trace is assigned one of these corpus traces.
* budget: ``judges.budget.BudgetBook`` (ladder: stop success at 0.5, cheap only at 0.8, defer at
  1.0; one partition) with each call reserved at the real ``RubricJudge.estimate_usd`` upper estimate,
  applied in trace order as ``stream.judge_runner`` does (level read once per trace).
* estimation: ``stream.estimate.estimate_pass_rate`` (post-stratified with the known stratum
  counts, the default of ``tracejudge estimate`` and of the alerts; Hajek for contrast) and
  ``naive_rate``.

SIMULATED (a model, not measurements; every number below is a constant in this file):

* population: ``--traces`` traces, a fraction ``--failure-rate`` truly failed, split into the
  failure kinds of ``KINDS`` (shares sum to 1). All kinds but ``silent_wrong_answer`` (20 % of
  failures: fluent, plausible, wrong) are gate-visible: each has detectors (gate names of the
  default policy, plus the policy's commented ``required_action`` example ``refund_needs_tool``;
  negative signal types of the semantic miner and of ``action_signals``) that fire with the
  per-kind recall given there. On top, every detector fires on ANY trace with the base rate of
  ``NOISE`` (false positives on successes, e.g. a retried tool error that recovered, a user who
  regenerates for variety); about 5.5 % of successes get flagged, cf. the 5 % of the estimator's
  coverage experiment in tests/stream/test_estimate.py. ``--fp-scale`` multiplies ``NOISE``.
* gate-detectable failure: a true failure on which at least one counted gate or negative signal
  fired, i.e. one the sampler puts in ``suspected_failure``.
* judge: per tier an accuracy that depends on how evident the failure is (``JUDGE_ACCURACY``:
  cheap ~90 % on ordinary traces), a confidence drawn from Beta(10, 2) when right and Beta(4, 3)
  when wrong (so the real 0.75 escalation threshold sends ~20 % of right and ~80 % of wrong cheap
  verdicts to the strong tier), and a small rate of unusable (unscored) answers, which escalate.
  The strong tier's label is final when it answered. The verdict is compared with the truth.
  The recall figure leans on the ``evident`` accuracy (0.95 / 0.99: the judge reads the error
  span, exception or user correction that made the gate fire); ``--evident-accuracy 0.90 0.97``
  (no easier than an ordinary trace) shows the pessimistic case.
* tokens: prompt tokens = characters of the real request / 4 (English + JSON; the runtime's own
  upper estimate uses / 3), output tokens = ``OUTPUT_TOKENS`` per call. One judge (rubric) per
  trace; with k rubrics that apply to every trace both spends scale by k and the ratio is unchanged.
  No verdict-cache hits (every trace is distinct) and no flake re-judging (off in the demo).

The estimator estimates the pass rate the judge would report over ALL traffic (the
"judge-everything pass rate"); its interval is about that quantity. The gap between it and the
true pass rate is judge error, not sampling error, and is printed separately.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate  # noqa: E402
from judges.budget import BudgetBook, Level  # noqa: E402
from judges.cascade import escalation_reason, required  # noqa: E402
from judges.config import BudgetSpec, CascadeSpec  # noqa: E402
from judges.prompt import build_request, extract_values  # noqa: E402
from judges.rubric import AppliesTo, builtin_rubrics  # noqa: E402
from judges.rubric_judge import RubricJudge  # noqa: E402
from judges.verdict import Verdict  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from schemas.model import CompletionReason, Trace  # noqa: E402
from stream.estimate import estimate_pass_rate, naive_rate  # noqa: E402
from stream.policy import Policy, load_policy  # noqa: E402
from stream.prices import ModelPrice, load_prices  # noqa: E402
from stream.sampling.rules import TraceFacts  # noqa: E402
from stream.sampling.sampler import Sampler, SamplingSpec  # noqa: E402
from stream.signals.base import SEMANTIC_TYPES  # noqa: E402

TARGET_SPEND_RATIO = 0.05
TARGET_RECALL = 0.98
JUDGE = "task_completion"
CHEAP_MODEL, STRONG_MODEL = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"  # the demo's pinned tiers
DEMO_CASCADE = {"escalate_below": 0.75}
OUTPUT_TOKENS = 160  # a verdict: {"label", "score", "explanation" (2-3 sentences), "evidence"}
CHARS_PER_TOKEN = 4
CORPUS_TRACES = 150

# ---- the simulated population ------------------------------------------------------------------
GATES = ("span_errors", "exceptions", "tool_errors", "tool_loop", "slow_trace", "token_budget", "final_answer",
         "refusals", "pii_in_output", "refund_needs_tool")  # default policy order + its required_action example
SIGNALS = ("correction", "frustration", "escalation", "abandonment",  # semantic miner (en lexicon)
           "regenerate", "thumbs_down", "abandon", "edit", "escalate")  # action_signals of the default policy
DETECTORS = GATES + SIGNALS

#: base rate at which each detector fires on any trace (false positives on successes)
NOISE = {"span_errors": 0.004, "tool_errors": 0.012, "exceptions": 0.002, "tool_loop": 0.003, "slow_trace": 0.004,
         "token_budget": 0.002, "final_answer": 0.001, "refusals": 0.002, "pii_in_output": 0.001,
         "refund_needs_tool": 0.001, "correction": 0.003, "frustration": 0.003, "escalation": 0.002,
         "abandonment": 0.002, "regenerate": 0.005, "thumbs_down": 0.002, "abandon": 0.003, "edit": 0.003,
         "escalate": 0.001}  # fmt: skip


class Kind(NamedTuple):
    name: str
    share: float  # of all failures
    visible: bool  # some gate or signal is designed to see it
    recall: dict[str, float]  # detector -> probability it fires on this kind (on top of NOISE)


KINDS = (
    Kind("tool_failure", 0.22, True, {"tool_errors": 0.95, "span_errors": 0.90}),
    Kind("agent_exception", 0.08, True, {"exceptions": 0.97, "span_errors": 0.95}),
    Kind("tool_loop", 0.07, True, {"tool_loop": 0.90, "slow_trace": 0.25, "token_budget": 0.15}),
    Kind("timeout", 0.05, True, {"slow_trace": 0.95}),
    Kind("missing_required_action", 0.08, True, {"refund_needs_tool": 0.85, "correction": 0.10}),
    Kind("empty_or_truncated_answer", 0.04, True, {"final_answer": 0.95, "regenerate": 0.20}),
    Kind("wrong_refusal", 0.04, True, {"refusals": 0.90, "regenerate": 0.15}),
    Kind("pii_leak", 0.01, True, {"pii_in_output": 0.80}),
    Kind("wrong_answer_user_noticed", 0.15, True, {"correction": 0.60, "frustration": 0.25, "thumbs_down": 0.20,
                                                    "regenerate": 0.25, "edit": 0.10}),
    Kind("user_wants_human", 0.06, True, {"escalation": 0.75, "escalate": 0.50, "abandon": 0.20}),
    Kind("silent_wrong_answer", 0.20, False, {}),
)  # fmt: skip
SILENT = len(KINDS) - 1

#: (cheap, strong) accuracy. evident: a failure a detector flagged (its evidence — error span,
#: exception, repeated call, empty answer, user correction — is in what the judge reads); normal:
#: successes and unflagged failures of visible kinds; hard: silent wrong-but-fluent answers.
JUDGE_ACCURACY = {"evident": (0.95, 0.99), "normal": (0.90, 0.97), "hard": (0.70, 0.88)}
CONFIDENCE_RIGHT, CONFIDENCE_WRONG = (10.0, 2.0), (4.0, 3.0)  # Beta parameters
UNSCORED = (0.005, 0.002)  # (cheap, strong) rate of unusable answers (paid, no label)


@dataclass
class Population:
    ids: list[str]
    failed: np.ndarray  # bool
    kind: np.ndarray  # int8, -1 for successes
    code: np.ndarray  # int64 bitmask of fired detectors (bit j = DETECTORS[j])
    corpus_idx: np.ndarray  # which corpus trace stands for this trace's size


def simulate_population(n: int, failure_rate: float, seed: int, fp_scale: float = 1.0,
                        corpus_size: int = CORPUS_TRACES) -> Population:  # fmt: skip
    """Deterministic for (n, failure_rate, seed); ``fp_scale`` only moves the noise thresholds."""
    rng = np.random.default_rng([seed, 0])
    raw = rng.bytes(16 * n)
    ids = [raw[i : i + 16].hex() for i in range(0, 16 * n, 16)]
    failed = rng.random(n) < failure_rate
    kind = np.full(n, -1, dtype=np.int8)
    shares = np.array([k.share for k in KINDS])
    kind[failed] = rng.choice(len(KINDS), size=int(failed.sum()), p=shares / shares.sum())
    code = np.zeros(n, dtype=np.int64)
    for j, det in enumerate(DETECTORS):
        base = min(1.0, NOISE[det] * fp_scale)
        by_kind = np.array([base] + [1 - (1 - base) * (1 - k.recall.get(det, 0.0)) for k in KINDS], np.float32)
        fires = rng.random(n, dtype=np.float32) < by_kind[kind + 1]
        code |= fires.astype(np.int64) << j
    return Population(ids, failed, kind, code, rng.integers(corpus_size, size=n))


# ---- the real pieces -----------------------------------------------------------------------------
def check_detectors(policy: Policy) -> None:
    """The simulated detectors must be names the real policy reports (except the required_action
    example, which the default policy ships commented out)."""
    gates = [g.name for g in policy.gates] + ["refund_needs_tool"]
    negative = [t for t, polarity in SEMANTIC_TYPES.items() if polarity == "negative"] + policy.action_signals
    if list(GATES) != [g for g in gates if g in GATES] or set(GATES) - set(gates) or set(SIGNALS) - set(negative):
        raise SystemExit(f"simulated detectors {DETECTORS} do not match the policy ({gates}, {negative})")


@dataclass
class Corpus:
    """Per corpus trace: real prompt size and the runtime's real pre-call cost estimates."""

    prompt_tokens: np.ndarray
    estimate_cheap: np.ndarray
    estimate_strong: np.ndarray


class _PriceOnly:
    """The part of a ``judges.providers`` Provider that ``RubricJudge.estimate_usd`` uses."""

    def __init__(self, name: str, price: ModelPrice) -> None:
        self.name = name
        self.cost_usd = price.cost


def prices() -> tuple[ModelPrice, ModelPrice]:
    table = load_prices()
    found = [table.lookup(m) for m in (CHEAP_MODEL, STRONG_MODEL)]
    if any(f is None for f in found):
        raise SystemExit(f"stream/prices.yaml does not price {CHEAP_MODEL} / {STRONG_MODEL}")
    return found[0].price, found[1].price  # type: ignore[union-attr]


def build_corpus(n_traces: int = CORPUS_TRACES, seed: int = 7) -> Corpus:
    rubric = builtin_rubrics()[JUDGE]
    cheap, strong = prices()
    judges = [RubricJudge(rubric, _PriceOnly("cheap", cheap), CHEAP_MODEL, "cheap"),  # type: ignore[arg-type]
              RubricJudge(rubric, _PriceOnly("strong", strong), STRONG_MODEL, "strong")]  # type: ignore[arg-type]
    meta = {"decision": {"class": "success"}, "failed_gates": [], "signals": []}
    tokens, est_cheap, est_strong = [], [], []
    for _, value in generate(n_traces * 35, seed=seed).messages[:n_traces]:
        spans = decode_message(value)
        trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
        req = build_request(rubric, trace, meta, model=CHEAP_MODEL)
        tokens.append((len(req.system) + sum(len(text) for _, text in req.messages)) // CHARS_PER_TOKEN)
        values = extract_values(rubric, trace, meta)
        est_cheap.append(judges[0].estimate_usd(values))
        est_strong.append(judges[1].estimate_usd(values))
    return Corpus(np.array(tokens, np.int64), np.array(est_cheap), np.array(est_strong))


@dataclass
class Sampling:
    p: np.ndarray
    sampled: np.ndarray  # bool
    flagged: np.ndarray  # bool: class suspected_failure
    stratum: np.ndarray  # int, index into ``strata``
    strata: list[str]
    rules: Counter[str]


def _names(code: int) -> tuple[list[str], list[str]]:
    """Failed gates (policy order) and negative signal types (sorted), as stream.decide reports them."""
    fired = [d for j, d in enumerate(DETECTORS) if code >> j & 1]
    return [d for d in fired if d in GATES], sorted(d for d in fired if d in SIGNALS)


def sample(pop: Population, spec: SamplingSpec, version: str) -> Sampling:
    """The real sampler's decision for every trace."""
    sampler = Sampler(spec, version)
    names = {c: _names(c) for c in np.unique(pop.code).tolist()}
    n = len(pop.ids)
    p = np.empty(n)
    sampled = np.empty(n, dtype=bool)
    flagged = np.empty(n, dtype=bool)
    stratum = np.empty(n, dtype=np.int16)
    keys: dict[str, int] = {}
    rules: Counter[str] = Counter()
    for i, (tid, c) in enumerate(zip(pop.ids, pop.code.tolist(), strict=True)):
        gates, signals = names[c]
        d = sampler.decide(TraceFacts(tid, failed_gates=gates, negative_signals=signals))
        p[i], sampled[i], flagged[i] = d.p, d.sampled, d.sample_class == "suspected_failure"
        stratum[i] = keys.setdefault(d.stratum, len(keys))
        rules[d.rule] += 1
    return Sampling(p, sampled, flagged, stratum, list(keys), rules)


def escalation_table(spec: CascadeSpec) -> np.ndarray:
    """[cheap_ok, label_fail, confidence_cents, required] -> escalate, from the real cascade rule."""
    rubric = builtin_rubrics()[JUDGE]
    pass_label, fail_label = rubric.labels[0], "fail"
    base = {"trace_id": "t", "judge": JUDGE, "judge_version": rubric.version, "rubric_hash": rubric.rubric_hash}
    table = np.zeros((2, 2, 101, 2), dtype=bool)
    for req in (0, 1):
        unscored = Verdict.unscored(reason="invalid_output: simulated", **base)
        table[0, :, :, req] = escalation_reason(spec, rubric, unscored, is_required=bool(req)) is not None
        for fail in (0, 1):
            for cents in range(101):
                score = (100 - cents) / 100 if fail else cents / 100  # score = P(task completed)
                v = Verdict(label=fail_label if fail else pass_label, score=score, explanation="x", **base)
                table[1, fail, cents, req] = escalation_reason(spec, rubric, v, is_required=bool(req)) is not None
    return table


def required_mask(pop: Population, s: Sampling, spec: CascadeSpec) -> np.ndarray:
    """``cascade.always_strong_for`` per trace, via the real ``judges.cascade.required``."""
    if spec.always_strong_for is None:
        return np.zeros(len(pop.ids), dtype=bool)
    rubric = builtin_rubrics()[JUDGE]
    memo: dict[tuple[int, bool], bool] = {}
    out = np.empty(len(pop.ids), dtype=bool)
    for i, (c, f) in enumerate(zip(pop.code.tolist(), s.flagged.tolist(), strict=True)):
        if (c, f) not in memo:
            meta = {"decision": {"class": "suspected_failure" if f else "success"},
                    "failed_gates": [{"gate": g} for g in _names(c)[0]]}  # fmt: skip
            memo[c, f] = required(spec, rubric, meta, service="", agent=None)
        out[i] = memo[c, f]
    return out


# ---- the simulated judge ---------------------------------------------------------------------------
@dataclass
class Judging:
    """Outcome if every trace were judged by the cascade (the sampled design uses a subset)."""

    escalate: np.ndarray  # the real cascade rule says: call the strong tier
    cheap_ok: np.ndarray
    cheap_fail: np.ndarray  # cheap label is fail (meaningful where cheap_ok)
    strong_ok: np.ndarray
    strong_fail: np.ndarray


def simulate_judge(pop: Population, flagged: np.ndarray, table: np.ndarray, req: np.ndarray, seed: int) -> Judging:
    rng = np.random.default_rng([seed, 1])
    n = len(pop.ids)
    difficulty = np.where(pop.kind == SILENT, 2, np.where(pop.failed & flagged, 0, 1))
    acc = np.array([JUDGE_ACCURACY[k] for k in ("evident", "normal", "hard")])  # [difficulty, tier]

    def tier(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = rng.random(n) >= UNSCORED[t]
        right = rng.random(n) < acc[difficulty, t]
        conf = np.where(right, rng.beta(*CONFIDENCE_RIGHT, n), rng.beta(*CONFIDENCE_WRONG, n))
        return ok, pop.failed ^ ~right, np.rint(conf * 100).astype(np.int64)

    cheap_ok, cheap_fail, cents = tier(0)
    strong_ok, strong_fail, _ = tier(1)
    escalate = table[cheap_ok.astype(int), cheap_fail.astype(int), cents, req.astype(int)]
    return Judging(escalate, cheap_ok, cheap_fail, strong_ok, strong_fail)


def final_verdicts(j: Judging, escalated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(has a label, label is fail): the strong tier's if it ran and answered, else the cheap one's."""
    use_strong = escalated & j.strong_ok
    return use_strong | j.cheap_ok, np.where(use_strong, j.strong_fail, j.cheap_fail)


def spend(mask: np.ndarray, escalated: np.ndarray, tokens: np.ndarray, cheap: ModelPrice,
          strong: ModelPrice) -> dict[str, Any]:  # fmt: skip
    """Calls and USD of judging the traces in ``mask`` (strong tier where ``escalated``)."""
    n_cheap, n_strong = int(mask.sum()), int((mask & escalated).sum())
    cheap_usd = cheap.cost(int(tokens[mask].sum()), n_cheap * OUTPUT_TOKENS)
    strong_usd = strong.cost(int(tokens[mask & escalated].sum()), n_strong * OUTPUT_TOKENS)
    return {"calls": n_cheap + n_strong, "cheap_calls": n_cheap, "escalated_calls": n_strong,
            "usd": cheap_usd + strong_usd, "cheap_usd": cheap_usd, "strong_usd": strong_usd}


def _estimate(ok: np.ndarray, fail: np.ndarray, s: Sampling, judged: np.ndarray, method: str) -> Any:
    idx = np.flatnonzero(judged & ok)
    samples = list(zip((~fail[idx]).tolist(), s.p[idx].tolist(), [s.strata[k] for k in s.stratum[idx].tolist()],
                       strict=True))  # fmt: skip
    population = dict(zip(s.strata, np.bincount(s.stratum, minlength=len(s.strata)).tolist(), strict=True))
    return estimate_pass_rate(samples, method, population=population), naive_rate(samples)  # type: ignore[arg-type]


def _frac(num: np.ndarray, den: np.ndarray) -> float:
    d = int(den.sum())
    return int((num & den).sum()) / d if d else math.nan


# ---- one run ---------------------------------------------------------------------------------------
@dataclass
class Run:
    pop: Population
    sampling: Sampling
    judging: Judging
    tokens: np.ndarray
    summary: dict[str, Any]


def run(n: int, failure_rate: float, seed: int, corpus: Corpus, policy: Policy, cascade: CascadeSpec,
        success_rate: float | None = None, fp_scale: float = 1.0) -> Run:  # fmt: skip
    spec = policy.sampling
    if success_rate is not None:
        spec = spec.model_copy(update={"success": spec.success.model_copy(update={"rate": success_rate})})
    pop = simulate_population(n, failure_rate, seed, fp_scale, len(corpus.prompt_tokens))
    s = sample(pop, spec, policy.version)
    j = simulate_judge(pop, s.flagged, escalation_table(cascade), required_mask(pop, s, cascade), seed)
    tokens = corpus.prompt_tokens[pop.corpus_idx]
    cheap, strong = prices()
    every = np.ones(n, dtype=bool)
    ours = spend(s.sampled, j.escalate, tokens, cheap, strong)
    everything = spend(every, j.escalate, tokens, cheap, strong)
    ok, fail = final_verdicts(j, j.escalate)
    caught = s.sampled & ok & fail
    detectable = pop.failed & s.flagged
    visible = pop.failed & (pop.kind != SILENT)
    est, naive = _estimate(ok, fail, s, s.sampled, "poststratified")
    hajek, _ = _estimate(ok, fail, s, s.sampled, "hajek")
    kinds = {k.name: {"failures": int((pop.kind == i).sum()), "flagged": _frac(s.flagged, pop.kind == i),
                      "caught": _frac(caught, pop.kind == i)} for i, k in enumerate(KINDS)}  # fmt: skip
    summary = {
        "traces": n, "failure_rate": failure_rate, "seed": seed, "policy_version": policy.version,
        "success_rate": spec.success.rate, "suspected_failure_rate": spec.suspected_failure.rate, "fp_scale": fp_scale,
        "true_failures": int(pop.failed.sum()), "gate_detectable_failures": int(detectable.sum()),
        "flagged_traces": int(s.flagged.sum()), "flagged_successes": int((s.flagged & ~pop.failed).sum()),
        "sampled": int(s.sampled.sum()), "judged": ours, "judge_everything": everything,
        "spend_ratio": ours["usd"] / everything["usd"], "call_ratio": ours["calls"] / everything["calls"],
        "recall_gate_detectable": _frac(caught, detectable), "recall_all_failures": _frac(caught, pop.failed),
        "gate_recall_of_visible_kinds": _frac(s.flagged, visible),
        "every_flagged_p_is_1": bool((s.p[s.flagged] == 1.0).all()),
        "recall_all_failures_judge_everything": _frac(ok & fail, pop.failed),
        "true_pass_rate": 1.0 - float(pop.failed.mean()),
        "judge_everything_pass_rate": float(1.0 - fail[ok].mean()),
        "estimate": {"method": est.method, "rate": est.rate, "ci_low": est.ci_low, "ci_high": est.ci_high,
                     "ci_width": est.ci_high - est.ci_low, "n_judged": est.n_judged},
        "hajek": {"rate": hajek.rate, "ci_low": hajek.ci_low, "ci_high": hajek.ci_high},
        "naive_judged_pass_rate": naive, "per_kind": kinds, "top_rules": dict(s.rules.most_common(8)),
        "judge_accuracy_everything": float(((ok & (fail == pop.failed)).sum()) / ok.sum()),
        "judge_accuracy_model": dict(JUDGE_ACCURACY), "prompt_tokens_mean": float(tokens.mean()),
        "output_tokens": OUTPUT_TOKENS,
        "models": {"cheap": CHEAP_MODEL, "strong": STRONG_MODEL}, "escalate_below": cascade.escalate_below,
    }  # fmt: skip
    return Run(pop, s, j, tokens, summary)


def run_budget(r: Run, corpus: Corpus, budget_usd: float) -> dict[str, Any]:
    """The sampled traces, in arrival order, through the real budget ladder (one partition)."""
    book = BudgetBook(BudgetSpec(global_usd=budget_usd), partitions_total=1, clock=lambda: 0.0)
    cheap, strong = prices()
    pop, s, j = r.pop, r.sampling, r.judging
    n = len(pop.ids)
    judged, escalated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    counts: Counter[str] = Counter()
    for i in np.flatnonzero(s.sampled).tolist():
        level = book.level(0, JUDGE)
        failure_like = bool(s.flagged[i])
        if level >= Level.NO_SUCCESS and not failure_like:
            counts["success_skipped"] += 1
            continue
        c = int(pop.corpus_idx[i])
        res = None if level >= Level.DEFER else book.try_reserve(0, JUDGE, float(corpus.estimate_cheap[c]))
        if res is None:
            counts["failures_deferred" if failure_like else "success_skipped"] += 1
            continue
        book.settle(res, cheap.cost(int(r.tokens[i]), OUTPUT_TOKENS))
        judged[i] = True
        if j.escalate[i] and level < Level.CHEAP_ONLY:
            res = book.try_reserve(0, JUDGE, float(corpus.estimate_strong[c]))
            if res is not None:
                book.settle(res, strong.cost(int(r.tokens[i]), OUTPUT_TOKENS))
                escalated[i] = True
        counts["escalation_dropped"] += int(j.escalate[i] and not escalated[i])
    ok, fail = final_verdicts(j, escalated)
    est, _ = _estimate(ok, fail, s, judged, "poststratified")
    caught = judged & ok & fail
    return {"budget_usd": budget_usd, "spent_usd": book.spent(), "calls": int(judged.sum() + escalated.sum()),
            "success_samples_judged": int((judged & ~s.flagged).sum()), **counts,
            "recall_gate_detectable": _frac(caught, pop.failed & s.flagged),
            "estimate": {"rate": est.rate, "ci_low": est.ci_low, "ci_high": est.ci_high,
                         "ci_width": est.ci_high - est.ci_low}}  # fmt: skip


def coverage(repeats: int, n: int, failure_rate: float, seed: int, corpus: Corpus, policy: Policy,
             cascade: CascadeSpec) -> dict[str, Any]:  # fmt: skip
    hits_estimand = hits_truth = 0
    widths = []
    for k in range(repeats):
        sm = run(n, failure_rate, seed * 1000 + 17 + k, corpus, policy, cascade).summary
        e = sm["estimate"]
        hits_estimand += e["ci_low"] <= sm["judge_everything_pass_rate"] <= e["ci_high"]
        hits_truth += e["ci_low"] <= sm["true_pass_rate"] <= e["ci_high"]
        widths.append(e["ci_width"])
    return {"repeats": repeats, "traces": n, "covers_judge_everything_rate": hits_estimand / repeats,
            "covers_true_pass_rate": hits_truth / repeats, "mean_ci_width": float(np.mean(widths))}


# ---- report --------------------------------------------------------------------------------------
def _row(name: str, value: str, note: str = "") -> str:
    return f"  {name:44s} {value:>22s}  {note}"


def report(sm: dict[str, Any]) -> list[str]:
    ours, every, e = sm["judged"], sm["judge_everything"], sm["estimate"]
    ratio_ok = "MET" if sm["spend_ratio"] <= TARGET_SPEND_RATIO else "NOT MET"
    recall_ok = "MET" if sm["recall_gate_detectable"] >= TARGET_RECALL else "NOT MET"
    lines = [
        f"judge economics: {sm['traces']:,} simulated traces, failure rate {sm['failure_rate']:.1%}, seed {sm['seed']}",
        f"policy: stream/default_policy.yaml ({sm['policy_version']}), suspected_failure"
        f" p={sm['suspected_failure_rate']}, success p={sm['success_rate']}; fp-scale {sm['fp_scale']}",
        f"simulated judge accuracy (cheap, strong): {sm['judge_accuracy_model']}",
        f"cascade: {sm['models']['cheap']} -> {sm['models']['strong']} below confidence {sm['escalate_below']};"
        f" prices stream/prices.yaml; ~{sm['prompt_tokens_mean']:.0f} prompt + {OUTPUT_TOKENS} output tokens/call",
        _row("traces", f"{sm['traces']:,}"),
        _row("true failures", f"{sm['true_failures']:,}"),
        _row("flagged (suspected_failure)", f"{sm['flagged_traces']:,}",
             f"of which {sm['flagged_successes']:,} successes"),
        _row("gate-detectable failures (flagged)", f"{sm['gate_detectable_failures']:,}",
             f"gates+signals see {sm['gate_recall_of_visible_kinds']:.1%} of visible-kind failures"),
        _row("judge calls (cheap + escalated)",
             f"{ours['calls']:,} ({ours['cheap_calls']:,} + {ours['escalated_calls']:,})"),
        _row("judge spend", f"${ours['usd']:,.2f}",
             f"cheap ${ours['cheap_usd']:,.2f} + strong ${ours['strong_usd']:,.2f}"),
        _row("judge-everything calls", f"{every['calls']:,} ({every['cheap_calls']:,} + {every['escalated_calls']:,})"),
        _row("judge-everything spend", f"${every['usd']:,.2f}",
             f"cheap ${every['cheap_usd']:,.2f} + strong ${every['strong_usd']:,.2f}"),
        _row("spend ratio", f"{sm['spend_ratio']:.4f}", f"target <= {TARGET_SPEND_RATIO}: {ratio_ok}"),
        _row("recall of gate-detectable failures", f"{sm['recall_gate_detectable']:.4f}",
             f"target >= {TARGET_RECALL}: {recall_ok} (judged + labelled fail)"),
        _row("recall of all failures", f"{sm['recall_all_failures']:.4f}",
             f"judging everything: {sm['recall_all_failures_judge_everything']:.4f}"),
        _row("true pass rate", f"{sm['true_pass_rate']:.4f}"),
        _row("judge-everything pass rate (estimand)", f"{sm['judge_everything_pass_rate']:.4f}",
             f"judge accuracy {sm['judge_accuracy_everything']:.3f}"),
        _row(f"estimated pass rate ({e['method']})", f"{e['rate']:.4f}",
             f"95% CI [{e['ci_low']:.4f}, {e['ci_high']:.4f}] from {e['n_judged']:,} verdicts"),
        _row("CI width", f"{e['ci_width']:.4f}"),
        _row("estimated pass rate (hajek)", f"{sm['hajek']['rate']:.4f}",
             f"95% CI [{sm['hajek']['ci_low']:.4f}, {sm['hajek']['ci_high']:.4f}]"),
        _row("naive (unweighted) judged pass rate", f"{sm['naive_judged_pass_rate']:.4f}", "biased: for contrast"),
        "  per failure kind:                  failures  flagged  caught (judged + labelled fail)",
    ]
    for name, k in sm["per_kind"].items():
        lines.append(f"    {name:32s} {k['failures']:8,}  {k['flagged']:7.1%}  {k['caught']:7.1%}")
    n, rate = sm["traces"], sm["success_rate"]
    flagged, flagged_failures = sm["flagged_traces"] / n, sm["gate_detectable_failures"] / n
    room = (TARGET_SPEND_RATIO - rate) / (1 - rate) - flagged_failures  # flagged share of traffic the target allows
    lines.append(f"  why: spend ratio ~ flagged share {flagged:.2%} + success p {rate} x unflagged share"
                 f" {1 - flagged:.2%} = {flagged + rate * (1 - flagged):.4f} (same cascade, similar prompts).")
    if sm["spend_ratio"] > TARGET_SPEND_RATIO:
        ok_fp = room / (1 - sm["true_failures"] / n) if room > 0 else 0.0
        lines.append(f"  the target needs <= {ok_fp:.2%} of successes flagged at success p={rate} (now"
                     f" {sm['flagged_successes'] / (n - sm['true_failures']):.2%}): gate/signal false positives are the"
                     " knob; the success rate moves it less (see the knobs below).")  # fmt: skip
    return lines


def budget_report(fraction: float, b: dict[str, Any]) -> str:
    e = b["estimate"]
    return (f"\n  budget {fraction:.0%} of the needed spend (${b['budget_usd']:,.2f}, real BudgetBook ladder):"
            f" spent ${b['spent_usd']:,.2f}, {b['calls']:,} calls;\n    success samples judged"
            f" {b['success_samples_judged']:,}, skipped {b.get('success_skipped', 0):,}; suspected failures"
            f" deferred to the backlog {b.get('failures_deferred', 0):,};"
            f" escalations dropped {b.get('escalation_dropped', 0):,}\n    recall of gate-detectable failures this"
            f" period {b['recall_gate_detectable']:.4f}; estimate {e['rate']:.4f} [{e['ci_low']:.4f},"
            f" {e['ci_high']:.4f}] width {e['ci_width']:.4f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--failure-rate", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--success-rate", type=float, default=None, help="override the policy's success rate")
    ap.add_argument("--fp-scale", type=float, default=1.0, help="multiply every detector's false-positive rate")
    ap.add_argument("--always-strong-for-gates", default="", help="comma-separated globs (cascade.always_strong_for)")
    ap.add_argument("--evident-accuracy", type=float, nargs=2, metavar=("CHEAP", "STRONG"), default=None,
                    help="judge accuracy on flagged failures (default %s)" % (JUDGE_ACCURACY["evident"],))
    ap.add_argument("--repeats", type=int, default=50, help="repeat populations for CI coverage (0: skip)")
    ap.add_argument("--repeat-traces", type=int, default=50_000)
    ap.add_argument("--sweep-traces", type=int, default=200_000, help="population of the knob sweep (0: skip)")
    ap.add_argument("--budget-fraction", type=float, nargs="*", default=[0.5, 0.2],
                    help="budgets as fractions of the needed spend (none: skip)")
    ap.add_argument("--json", type=Path, default=None, help="write all figures to this file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.evident_accuracy is not None:
        JUDGE_ACCURACY["evident"] = tuple(args.evident_accuracy)
    policy = load_policy(None)
    check_detectors(policy)
    gates = [g.strip() for g in args.always_strong_for_gates.split(",") if g.strip()]
    cascade = CascadeSpec(**DEMO_CASCADE, always_strong_for=AppliesTo(failed_gates=gates) if gates else None)
    corpus = build_corpus()
    r = run(args.traces, args.failure_rate, args.seed, corpus, policy, cascade, args.success_rate, args.fp_scale)
    out: dict[str, Any] = {"main": r.summary}
    print("\n".join(report(r.summary)), flush=True)
    out["budget"] = []
    for fraction in args.budget_fraction:
        b = run_budget(r, corpus, fraction * r.summary["judged"]["usd"])
        out["budget"].append(b)
        print(budget_report(fraction, b), flush=True)
    if args.sweep_traces > 0:
        n = min(args.sweep_traces, args.traces)
        print(f"\n  knobs ({n:,} traces each): success p, fp-scale -> spend ratio, recall gate-detectable, CI width")
        rows = []
        for rate, fp in ((0.02, 1.0), (0.01, 1.0), (0.005, 1.0), (0.02, 0.5), (0.02, 0.2), (0.01, 0.2), (0.02, 0.0)):
            sm = run(n, args.failure_rate, args.seed, corpus, policy, cascade, rate, fp).summary
            keys = ("success_rate", "fp_scale", "spend_ratio", "recall_gate_detectable", "flagged_successes")
            rows.append({k: sm[k] for k in keys} | {"ci_width": sm["estimate"]["ci_width"]})
            print(f"    p={rate:<6} fp x{fp:<4} flagged successes {sm['flagged_successes'] / n:6.2%}  spend ratio"
                  f" {sm['spend_ratio']:.4f}  recall {sm['recall_gate_detectable']:.4f}"
                  f"  CI width {sm['estimate']['ci_width']:.4f}", flush=True)  # fmt: skip
        out["sweep"] = rows
    if args.repeats > 0:
        cov = coverage(args.repeats, args.repeat_traces, args.failure_rate, args.seed, corpus, policy, cascade)
        out["coverage"] = cov
        print(f"\n  CI coverage over {cov['repeats']} populations of {cov['traces']:,}: judge-everything pass rate"
              f" {cov['covers_judge_everything_rate']:.0%}, true pass rate {cov['covers_true_pass_rate']:.0%};"
              f" mean width {cov['mean_ci_width']:.4f}")  # fmt: skip
    out["runtime_s"] = time.perf_counter() - t0
    print(f"\n  runtime {out['runtime_s']:.1f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
