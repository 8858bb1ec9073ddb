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

SIMULATED (a model, not measurements; every number below is a constant in bench/population.py or,
for the judge, bench/sim_judge.py):

* population: ``--traces`` traces, a fraction ``--failure-rate`` truly failed, split into the
  failure kinds of ``KINDS`` (shares sum to 1). All kinds but ``silent_wrong_answer`` (20 % of
  failures: fluent, plausible, wrong) are gate-visible: each has detectors (gate names of the
  default policy, plus the policy's commented ``required_action`` example ``refund_needs_tool``;
  negative signal types of the semantic miner and of ``action_signals``) that fire with the
  per-kind recall given there. On top, every detector fires on ANY trace with the base rate of
  ``NOISE`` (false positives on successes, e.g. a tool error the agent got past by retrying with
  other arguments — the default policy's ``ignore_recovered: identical_retry`` skips only
  identical retries, ``true`` would skip these too; how much of real noise either is depends on
  the agent, so ``NOISE`` does not assume it —, a user who
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
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.population import (  # noqa: E402
    DEMO_CASCADE,
    OUTPUT_TOKENS,
    build_corpus,
    check_detectors,
    coverage,
    run,
    run_budget,
)
from bench.sim_judge import JUDGE_ACCURACY  # noqa: E402
from judges.config import CascadeSpec  # noqa: E402
from judges.rubric import AppliesTo  # noqa: E402
from stream.policy import load_policy  # noqa: E402

TARGET_SPEND_RATIO = 0.05
TARGET_RECALL = 0.98


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
