"""Pass rate over all traffic from the judged sample, by inverse-probability weighting.

Only sampled traces are judged, and sampling is deliberately biased: suspected failures at ~1.0,
the rest at ~0.02. The unweighted pass rate of judged traces (:func:`naive_rate`) therefore says
little about traffic. Each judged trace carries its inclusion probability ``p`` and sampling
stratum (see :class:`stream.sampling.sampler.Decision`); within a stratum the design is Poisson
(Bernoulli) sampling: every trace is included independently with the same ``p``.

Estimators (``method``), y = 1 if the judge passed the trace:

* ``"ht"`` — Horvitz–Thompson: R = Σ y/p / N. Unbiased, but needs the population size N and is
  noisy (its numerator also carries the random sample size). Var(Σ y/p) = Σ (1-p)/p² · y².
* ``"hajek"`` (default) — ratio R = Σ w·y / Σ w with w = 1/p; needs no N. Variance by
  linearization (Taylor): Σ (1-p)/p² · (y - R)² / (Σ w)².
* ``"poststratified"`` — with the known number N_h of traces in each stratum (from the traces
  table): R = Σ N_h ȳ_h / N, Var = Σ (N_h/N)² (1 - f_h) s_h² / n_h, f_h = n_h / N_h. The most
  precise when N_h are known, and the only one robust to sampled traces that were never judged
  (budget, judge errors): it only assumes those are missing at random within their stratum.
  HT and Hájek need ``p`` to be the probability of being *judged*.

Confidence intervals (documented choice): a plain normal (Wald) interval undercovers here, and
lopsidedly — the uncertainty is dominated by the few failures found in the thinly sampled success
stratum (~18 in the coverage experiment), whose count is skewed; a stratum in which every judged
trace passed even has zero sample variance, i.e. a zero-width Wald interval, although 0 failures
among 40 judged at p = 0.02 stands for ~2000 unjudged traces (measured over 1000 simulated
populations: Wald 94.0 % coverage, missing 4.6 % low vs 1.3 % high; the intervals below 95.1 %,
2.0 % vs 2.9 %, and no wider). So intervals are MOVER-Wilson
(method of variance estimates recovery, Zou & Donner): each stratum gets a Wilson score interval
(l_h, u_h) with the finite-population correction (n_eff = n / (1 - f), f = n_h / N_h if known,
else the stratum's p; a census stratum, f = 1, is exact), and for R = Σ a_h ȳ_h

    low  = R - sqrt(Σ a_h² (ȳ_h - l_h)² + z² V_shares)
    high = R + sqrt(Σ a_h² (u_h - ȳ_h)² + z² V_shares)

with a_h = N_h / N (post-stratified), W_h / Σ W (Hájek), W_h / N (HT), W_h = Σ_h 1/p, and
V_shares the part of the linearization variance that comes from the random weights (0 when N_h
are known). With one stratum this is the Wilson interval; bounds are clipped to [0, 1], the
normal quantile comes from ``statistics.NormalDist``. ``Estimate.se`` is the textbook standard
error of the estimator named above (informational; the interval does not use it directly).

Strata with N_h > 0 but no judged trace (post-stratified only) cannot be estimated: their rate
is imputed with the rate of the covered strata and the interval is widened to the worst case
(0 or 1 for that share of traffic). Traces of the ``drop`` class (p = 0) are out of scope: the
estimand is the pass rate over non-dropped traffic.

If a policy change alters a stratum's rate inside the estimation window, the stratum holds
traces of several ``p``: its mean is weighted (Hájek), and its Wilson interval uses Kish's
effective sample size (Σw)² / Σw² instead of n (with n, a 0.02 → 0.2 change half-way through the
window left the 95 % intervals covering the truth 70-74 % of the time; with Kish's, 94-95 %,
over 600 simulated populations of 30,000 traces: ``tests/stream/test_estimate.py``). Keying
strata by policy version too (e.g. ``f"{policy_version}/{stratum}"``) gives each one ``p``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal, NamedTuple

Method = Literal["ht", "hajek", "poststratified"]
METHODS: tuple[str, ...] = ("ht", "hajek", "poststratified")
DROP_STRATUM = "drop"


class Judged(NamedTuple):
    """One judged trace: the verdict, its inclusion probability and its sampling stratum."""

    passed: bool
    p: float
    stratum: str


@dataclass(frozen=True, slots=True)
class Estimate:
    rate: float  # nan when nothing can be estimated
    ci_low: float
    ci_high: float
    n_judged: int
    n_population: int | None
    method: str
    se: float = math.nan
    per_stratum: dict[str, Estimate] = field(default_factory=dict)


@dataclass(slots=True)
class _Stratum:
    """Sufficient statistics of one stratum (y is binary, so sums of y² are sums of y)."""

    n: int = 0
    w: float = 0.0  # Σ 1/p
    wy: float = 0.0  # Σ y/p
    c: float = 0.0  # Σ (1-p)/p²
    cy: float = 0.0  # Σ (1-p)/p² · y
    p_sum: float = 0.0
    w2: float = 0.0  # Σ 1/p²

    def add(self, y: int, p: float, k: int = 1) -> None:
        """Add ``k`` judged traces with outcome ``y`` and inclusion probability ``p``."""
        self.n += k
        self.w += k / p
        self.wy += k * y / p
        ci = k * (1.0 - p) / (p * p)
        self.c += ci
        self.cy += ci * y
        self.p_sum += k * p
        self.w2 += k / (p * p)

    @property
    def n_kish(self) -> float:
        """Kish's effective sample size (Σw)² / Σw²: n when every trace has the same ``p``, less
        when ``p`` changed inside the window (a weighted mean of unequal weights varies more)."""
        return self.w * self.w / self.w2 if self.w2 else 0.0

    @property
    def mean(self) -> float:  # Hájek mean within the stratum (the plain mean when p is constant)
        return self.wy / self.w

    @property
    def c_mean(self) -> float:  # mean of y weighted by (1-p)/p² (= mean when p is constant)
        return self.cy / self.c if self.c else self.mean


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def wilson(rate: float, n: float, z: float, fraction: float = 0.0) -> tuple[float, float]:
    """Wilson score interval for a proportion from n draws, with finite-population correction."""
    if n == 0:
        return 0.0, 1.0
    if fraction >= 1.0:
        return rate, rate
    n_eff = n / (1.0 - fraction)
    z2n = z * z / n_eff
    centre = (rate + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(rate * (1 - rate) / n_eff + z2n / (4 * n_eff))
    return _clip(centre - half), _clip(centre + half)


def _collect(samples: Iterable[tuple[bool, float, str]]) -> dict[str, _Stratum]:
    # samples repeat few distinct (verdict, p, stratum) triples: count them at C speed first
    strata: dict[str, _Stratum] = {}
    for (passed, p, stratum), k in Counter(samples).items():
        if not 0.0 < p <= 1.0:
            raise ValueError(f"judged trace in stratum {stratum!r} has inclusion probability {p}: must be in (0, 1]")
        strata.setdefault(stratum, _Stratum()).add(1 if passed else 0, p, k)
    return strata


@dataclass(frozen=True, slots=True)
class _Part:
    """One stratum's term in R = Σ a_h ȳ_h, with the stratum's Wilson bounds."""

    weight: float
    mean: float
    low: float
    high: float


def _wilson_bounds(strata: dict[str, _Stratum], pop: dict[str, int] | None,
                   z: float) -> dict[str, Estimate]:  # fmt: skip
    out: dict[str, Estimate] = {}
    for key, s in sorted(strata.items()):
        n_pop = pop.get(key) if pop is not None else None
        fraction = min(1.0, s.n / n_pop) if n_pop else s.p_sum / s.n
        lo, hi = wilson(s.mean, s.n_kish, z, fraction)
        out[key] = Estimate(s.mean, lo, hi, s.n, n_pop, "wilson")
    return out


def _mover(rate: float, parts: Iterable[_Part], shares_var: float, z: float) -> tuple[float, float]:
    down = up = z * z * shares_var
    for t in parts:
        down += (t.weight * (t.mean - t.low)) ** 2
        up += (t.weight * (t.high - t.mean)) ** 2
    return _clip(rate - math.sqrt(down)), _clip(rate + math.sqrt(up))


def _population(population: Mapping[str, int] | None, method: str) -> dict[str, int] | None:
    if population is None:
        if method in ("ht", "poststratified"):
            raise ValueError(f"method {method!r} needs the population count of each stratum")
        return None
    bad = {k: v for k, v in population.items() if v < 0}
    if bad:
        raise ValueError(f"negative population counts: {bad}")
    return {k: int(v) for k, v in population.items() if k != DROP_STRATUM and v > 0}


def estimate_pass_rate(
    samples: Iterable[tuple[bool, float, str]],
    method: Method = "hajek",
    confidence: float = 0.95,
    population: Mapping[str, int] | None = None,
) -> Estimate:
    """Estimate the pass rate over all non-dropped traffic from judged traces.

    ``samples``: a ``(passed, p, stratum)`` tuple (e.g. :class:`Judged`) per judged trace, with
    ``p`` and ``stratum`` as recorded by the sampler's decision. ``population``: number of traces per
    stratum (all of them, judged or not; ``drop`` is ignored) — required for ``ht`` and
    ``poststratified``, optional for ``hajek`` (then only reported as ``n_population``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    z = _z(confidence)
    pop = _population(population, method)
    strata = _collect(samples)
    n = sum(s.n for s in strata.values())
    n_pop = sum(pop.values()) if pop is not None else None
    per = _wilson_bounds(strata, pop, z)
    if n == 0 or n_pop == 0:
        return Estimate(math.nan, 0.0, 1.0, n, n_pop, method, math.nan, per)
    if method == "poststratified":
        assert pop is not None and n_pop is not None
        return _poststratified(strata, pop, n_pop, z, per)
    # HT: R = Σ y/p / N; Hájek: R = Σ y/p / Σ 1/p. Both are Σ a_h ȳ_h with a_h = W_h / denominator.
    denominator = float(n_pop) if method == "ht" else sum(s.w for s in strata.values())
    rate = sum(s.wy for s in strata.values()) / denominator
    center = 0.0 if method == "ht" else rate  # linearization residual: y (HT total) or y - R (Hájek)
    shares_var = sum(s.c * (s.c_mean - center) ** 2 for s in strata.values()) / denominator**2
    within_var = sum(s.c * s.c_mean * (1.0 - s.c_mean) for s in strata.values()) / denominator**2
    parts = [_Part(s.w / denominator, s.mean, per[k].ci_low, per[k].ci_high) for k, s in strata.items()]
    lo, hi = _mover(rate, parts, shares_var, z)
    return Estimate(rate, lo, hi, n, n_pop, method, math.sqrt(within_var + shares_var), per)


def _poststratified(strata: dict[str, _Stratum], pop: dict[str, int], n_pop: int, z: float,
                    per: dict[str, Estimate]) -> Estimate:  # fmt: skip
    unknown = sorted(set(strata) - set(pop))
    if unknown:
        raise ValueError(f"no population count for judged strata: {', '.join(unknown)}")
    n_covered = sum(big_n for key, big_n in pop.items() if key in strata)
    rate = var = 0.0
    parts = []
    for key, s in strata.items():
        share = pop[key] / n_covered
        rate += share * s.mean
        f = min(1.0, s.n / pop[key])
        s2 = s.mean * (1.0 - s.mean) * s.n / (s.n - 1) if s.n > 1 else 0.0
        var += share * share * (1.0 - f) * s2 / s.n_kish
        parts.append(_Part(share, s.mean, per[key].ci_low, per[key].ci_high))
    lo, hi = _mover(rate, parts, 0.0, z)
    missing = n_pop - n_covered  # strata with traffic but no judged trace: worst case either way
    if missing:
        gap = missing / n_pop
        lo, hi = lo * (1.0 - gap), hi * (1.0 - gap) + gap
        for key in sorted(pop.keys() - strata.keys()):
            per[key] = Estimate(math.nan, 0.0, 1.0, 0, pop[key], "wilson")
    n = sum(s.n for s in strata.values())
    return Estimate(rate, lo, hi, n, n_pop, "poststratified", math.sqrt(var), per)


def naive_rate(samples: Iterable[tuple[bool, float, str]]) -> float:
    """Unweighted pass rate of the judged traces — biased toward the over-sampled failures."""
    verdicts = [bool(s[0]) for s in samples]
    return sum(verdicts) / len(verdicts) if verdicts else math.nan
