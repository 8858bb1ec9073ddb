"""The model behind bench/economics.py: simulated population, detectors and judge, and the cost arithmetic.

The simulation (``KINDS``, ``NOISE`` and the other constants below, and the simulated judge of
bench/sim_judge.py; what each means is documented in bench/economics.py, SIMULATED) is joined to the real project code that
decides the economics: ``Sampler.decide`` on every trace (``sample``), the cascade's escalation
rule (``escalation_table``, ``required_mask``), stream/prices.yaml and the real judge prompt
(``prices``, ``build_corpus``, ``spend``), ``BudgetBook`` (``run_budget``) and the estimator
(``estimate_pass_rate``). ``run`` does one population end to end and returns the figures the
report prints; ``coverage`` repeats it. bench/economics.py holds the command line and the report.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from bench.generate import generate
from bench.sim_judge import JUDGE_ACCURACY, Judging, final_verdicts, simulate_judge
from judges.budget import BudgetBook, Level
from judges.cascade import escalation_reason, required
from judges.config import BudgetSpec, CascadeSpec
from judges.prompt import build_request, extract_values
from judges.rubric import builtin_rubrics
from judges.rubric_judge import RubricJudge
from judges.verdict import Verdict
from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from stream.estimate import estimate_pass_rate, naive_rate
from stream.policy import Policy
from stream.prices import ModelPrice, load_prices
from stream.sampling.rules import TraceFacts
from stream.sampling.sampler import Sampler, SamplingSpec
from stream.signals.base import SEMANTIC_TYPES

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
    difficulty = np.where(pop.kind == SILENT, 2, np.where(pop.failed & s.flagged, 0, 1))
    j = simulate_judge(pop.failed, difficulty, escalation_table(cascade), required_mask(pop, s, cascade), seed)
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
