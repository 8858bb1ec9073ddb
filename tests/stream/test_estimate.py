"""Pass-rate estimators: unit tests, and a seeded coverage experiment through the real sampler."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from stream.estimate import Estimate, Judged, estimate_pass_rate, naive_rate, wilson
from stream.sampling.hashing import unit_hash
from stream.sampling.rules import TraceFacts
from stream.sampling.sampler import Sampler, SamplingSpec

# ---- unit tests -----------------------------------------------------------------------------


def test_equal_probability_sample_gives_the_plain_mean() -> None:
    samples = [Judged(i % 4 != 0, 0.5, "success:base") for i in range(100)]  # 75 % pass
    for method in ("hajek", "ht", "poststratified"):
        est = estimate_pass_rate(samples, method, population={"success:base": 200})  # type: ignore[arg-type]
        assert est.rate == pytest.approx(0.75)
        assert est.ci_low < 0.75 < est.ci_high
        assert est.n_judged == 100 and est.n_population == 200


def test_weighting_undoes_oversampling_of_failures() -> None:
    # population: 100 flagged traces (50 fail), 10_000 unflagged (100 fail); flagged judged at 1.0,
    # unflagged at 0.1 -> 1000 judged of which 10 fail
    samples = [Judged(i >= 50, 1.0, "suspected_failure") for i in range(100)]
    samples += [Judged(i >= 10, 0.1, "success:base") for i in range(1000)]
    population = {"suspected_failure": 100, "success:base": 10_000, "drop": 5_000}
    truth = 1 - 150 / 10_100
    for method in ("hajek", "ht", "poststratified"):
        est = estimate_pass_rate(samples, method, population=population)  # type: ignore[arg-type]
        assert est.rate == pytest.approx(truth, abs=1e-9), method
        assert est.n_population == 10_100  # drop is out of scope
    assert naive_rate(samples) == pytest.approx(1 - 60 / 1100)
    per = estimate_pass_rate(samples, population=population).per_stratum
    assert per["suspected_failure"].ci_low == per["suspected_failure"].ci_high == 0.5  # census
    assert per["success:base"].ci_low < 0.99 < per["success:base"].ci_high


def test_all_pass_stratum_still_gets_a_nonzero_width_interval() -> None:
    samples = [Judged(True, 0.02, "success:base") for _ in range(40)]
    for method in ("hajek", "poststratified"):
        est = estimate_pass_rate(samples, method, population={"success:base": 2000})  # type: ignore[arg-type]
        assert est.rate == 1.0
        assert est.ci_high == 1.0 and est.ci_low < 0.95, (method, est)
    stratum = estimate_pass_rate(samples).per_stratum["success:base"]
    assert stratum.ci_low < 0.95 and stratum.ci_high == 1.0


def test_no_samples_and_unknown_population() -> None:
    est = estimate_pass_rate([])
    assert math.isnan(est.rate) and (est.ci_low, est.ci_high) == (0.0, 1.0) and est.n_judged == 0
    assert math.isnan(naive_rate([]))
    with pytest.raises(ValueError, match="needs the population"):
        estimate_pass_rate([Judged(True, 0.5, "a")], "ht")
    with pytest.raises(ValueError, match="no population count for judged strata: b"):
        estimate_pass_rate([Judged(True, 0.5, "a"), Judged(True, 0.5, "b")], "poststratified",
                           population={"a": 10})  # fmt: skip
    with pytest.raises(ValueError, match="inclusion probability 0"):
        estimate_pass_rate([Judged(True, 0.0, "drop")])
    with pytest.raises(ValueError, match="unknown method"):
        estimate_pass_rate([], "mean")  # type: ignore[arg-type]


def test_stratum_without_judged_traces_widens_to_the_worst_case() -> None:
    samples = [Judged(i % 10 != 0, 0.5, "a") for i in range(100)]
    full = estimate_pass_rate(samples, "poststratified", population={"a": 200})
    partial = estimate_pass_rate(samples, "poststratified", population={"a": 200, "b": 50})
    assert partial.rate == full.rate
    assert partial.ci_low == pytest.approx(full.ci_low * 0.8)
    assert partial.ci_high == pytest.approx(full.ci_high * 0.8 + 0.2)
    assert math.isnan(partial.per_stratum["b"].rate)


def test_higher_confidence_gives_a_wider_interval() -> None:
    samples = [Judged(i % 50 != 0, 0.02, "success:base") for i in range(500)]
    samples += [Judged(i % 3 != 0, 1.0, "suspected_failure") for i in range(300)]
    widths = [(e.ci_high - e.ci_low) for e in (estimate_pass_rate(samples, confidence=c) for c in (0.8, 0.95, 0.99))]
    assert 0 < widths[0] < widths[1] < widths[2]
    with pytest.raises(ValueError, match="confidence"):
        estimate_pass_rate(samples, confidence=1.0)


def test_wilson_interval() -> None:
    lo, hi = wilson(0.5, 100, 1.959964)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson(0.3, 10, 1.96, fraction=1.0) == (0.3, 0.3)
    assert wilson(0.0, 0, 1.96) == (0.0, 1.0)


# ---- coverage experiment --------------------------------------------------------------------

SEED = 20_251_103
POPULATION = 100_000
POOL = 200_000  # hashed trace ids; each repetition draws its population from this pool
# 1000, not 200: with 200 repetitions a perfectly calibrated 95 % interval still falls below a 93 %
# bar ~7 % of the time (binomial sd of the coverage 1.5 points); with 1000 it is ~0.1 %.
REPETITIONS = 1000
FAILURE_RATE = 0.03
GATE_RECALL = 0.70  # gates flag 70 % of failures ...
GATE_FALSE_POSITIVE = 0.05  # ... and 5 % of successes
STRATUM = {True: "suspected_failure", False: "success:base"}  # by gate flag
SPEC = SamplingSpec.model_validate({"suspected_failure": {"rate": 1.0}, "success": {"rate": 0.02}})


def _pool(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Synthetic 32-hex trace ids and their real ``unit_hash`` under the spec's salt."""
    raw = rng.bytes(16 * POOL)
    ids = [raw[i : i + 16].hex() for i in range(0, len(raw), 16)]
    return ids, np.fromiter((unit_hash(SPEC.salt, t) for t in ids), dtype=np.float64, count=POOL)


def _draw_population(r: np.random.Generator, below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Indices into the pool for one repetition, distributed exactly like fresh random ids.

    Hashing 100k fresh ids for each repetition (1000 x 100k blake2b calls) would take minutes, so
    ids are hashed once. Drawing each repetition's traces from the pool uniformly would freeze
    the pool's realized share of ids below the success rate into every repetition (sample-size
    randomness is what HT's variance is about), so the draw reproduces fresh ids instead: with a
    uniform hash, the number of fresh ids hashing below the rate is Binomial(N, rate), and which
    ids those are is exchangeable. Failures and gate flags are drawn independently of the ids, so
    the rest can be any window of the (shuffled) pool ids hashing at or above the rate, ``above``.
    """
    k = int(r.binomial(POPULATION, SPEC.success.rate))
    start = int(r.integers(len(above)))
    rest = np.take(above, np.arange(start, start + POPULATION - k), mode="wrap")
    return np.concatenate([r.choice(below, k, replace=False), rest])


def test_ipw_interval_covers_the_true_pass_rate_and_naive_rate_is_biased() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    ids, hashes = _pool(rng)
    order = rng.permutation(POOL)
    below, above = order[hashes[order] < SPEC.success.rate], order[hashes[order] >= SPEC.success.rate]
    sampler = Sampler(SPEC, "test")
    methods = ("hajek", "poststratified", "ht")
    covered = {m: 0 for m in methods}
    covered_first_200 = dict(covered)
    widths: dict[str, list[float]] = {m: [] for m in methods}
    errors: dict[str, list[float]] = {m: [] for m in (*methods, "naive")}
    judged = []
    for rep in range(REPETITIONS):
        r = np.random.default_rng([SEED, rep])
        idx = _draw_population(r, below, above)
        failed = r.random(POPULATION) < FAILURE_RATE
        u = r.random(POPULATION)  # independent of `failed`, so one draw serves both branches
        flagged = np.where(failed, u < GATE_RECALL, u < GATE_FALSE_POSITIVE)
        p = np.where(flagged, SPEC.suspected_failure.rate, SPEC.success.rate)
        sampled = hashes[idx] < p  # the vectorized sampler: keep = unit_hash < rate
        if rep < 3:  # ... which is exactly what Sampler.decide does, trace by trace
            for i in [*range(2000), *np.flatnonzero(sampled)[:500].tolist()]:
                facts = TraceFacts(ids[idx[i]], failed_gates=["tool_error"] if flagged[i] else [])
                d = sampler.decide(facts)
                assert (d.sampled, d.p) == (bool(sampled[i]), float(p[i]))
                assert d.stratum == ("suspected_failure" if flagged[i] else "success:base")
        truth = 1.0 - float(failed.mean())
        strata = [STRATUM[f] for f in flagged[sampled].tolist()]
        samples = list(zip((~failed[sampled]).tolist(), p[sampled].tolist(), strata, strict=True))
        population = {"suspected_failure": int(flagged.sum()), "success:base": int((~flagged).sum())}
        judged.append(len(samples))
        for m in methods:
            est: Estimate = estimate_pass_rate(samples, m, population=population)  # type: ignore[arg-type]
            covered[m] += est.ci_low <= truth <= est.ci_high
            widths[m].append(est.ci_high - est.ci_low)
            errors[m].append(est.rate - truth)
        errors["naive"].append(naive_rate(samples) - truth)
        if rep == 199:
            covered_first_200 = dict(covered)

    print(f"\n{REPETITIONS} repetitions of {POPULATION} traces, ~{np.mean(judged):.0f} judged each, "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    for m in methods:
        print(f"  {m:15s} coverage {covered[m] / REPETITIONS:6.1%} (first 200: {covered_first_200[m] / 200:6.1%})  "
              f"mean CI width {np.mean(widths[m]):.4f}  mean error {np.mean(errors[m]):+.5f}")  # fmt: skip
    naive_bias = float(np.mean(errors["naive"]))
    print(f"  {'naive':15s} mean error {naive_bias:+.4f}")
    for m in ("hajek", "poststratified"):
        assert covered[m] / REPETITIONS >= 0.93, m
        assert abs(np.mean(errors[m])) < np.mean(widths[m]) / 10, m  # unbiased, up to noise
    assert covered["ht"] / REPETITIONS >= 0.93
    assert abs(naive_bias) > 10 * np.mean(widths["hajek"])  # the naive rate is badly biased


def test_a_rate_change_inside_the_window_keeps_the_interval_honest() -> None:
    """The success rate goes 0.02 -> 0.2 half-way through the window (a policy change), so one
    stratum holds traces of two ``p``. The point estimate weighted them, but the stratum's
    Wilson interval used the plain n, about 3x the effective size: the 95 % intervals covered
    the truth ~73 % of the time. With Kish's effective size they cover it as they should."""
    reps, size = 600, 30_000
    covered = {m: 0 for m in ("poststratified", "hajek")}
    for rep in range(reps):
        r = np.random.default_rng([SEED, 7, rep])
        failed = r.random(size) < FAILURE_RATE
        u = r.random(size)
        flagged = np.where(failed, u < GATE_RECALL, u < GATE_FALSE_POSITIVE)
        p = np.where(flagged, 1.0, np.where(np.arange(size) < size // 2, 0.02, 0.2))
        sampled = r.random(size) < p
        strata = [STRATUM[f] for f in flagged[sampled].tolist()]
        samples = list(zip((~failed[sampled]).tolist(), p[sampled].tolist(), strata, strict=True))
        population = {"suspected_failure": int(flagged.sum()), "success:base": int((~flagged).sum())}
        truth = 1.0 - float(failed.mean())
        for m in covered:
            est = estimate_pass_rate(samples, m, population=population)  # type: ignore[arg-type]
            covered[m] += est.ci_low <= truth <= est.ci_high
    print(f"\nrate 0.02 -> 0.2 mid-window, {reps} x {size} traces: " +
          ", ".join(f"{m} coverage {c / reps:.1%}" for m, c in covered.items()))  # fmt: skip
    for m, c in covered.items():
        assert c / reps >= 0.92, m  # sd of a calibrated coverage here: ~0.9 points
