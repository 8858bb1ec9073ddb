"""The simulated judge of bench/economics.py: per tier an accuracy, a confidence and a rate of
unusable answers; the real cascade rule (as a lookup table) decides escalation.

A model, not measurements: what the constants mean is documented in bench/economics.py (SIMULATED,
"judge"). bench/population.py joins it to the simulated population and the real project code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (cheap, strong) accuracy. evident: a failure a detector flagged (its evidence — error span,
#: exception, repeated call, empty answer, user correction — is in what the judge reads); normal:
#: successes and unflagged failures of visible kinds; hard: silent wrong-but-fluent answers.
JUDGE_ACCURACY = {"evident": (0.95, 0.99), "normal": (0.90, 0.97), "hard": (0.70, 0.88)}
CONFIDENCE_RIGHT, CONFIDENCE_WRONG = (10.0, 2.0), (4.0, 3.0)  # Beta parameters
UNSCORED = (0.005, 0.002)  # (cheap, strong) rate of unusable answers (paid, no label)


@dataclass
class Judging:
    """Outcome if every trace were judged by the cascade (the sampled design uses a subset)."""

    escalate: np.ndarray  # the real cascade rule says: call the strong tier
    cheap_ok: np.ndarray
    cheap_fail: np.ndarray  # cheap label is fail (meaningful where cheap_ok)
    strong_ok: np.ndarray
    strong_fail: np.ndarray


def simulate_judge(failed: np.ndarray, difficulty: np.ndarray, table: np.ndarray, req: np.ndarray,
                   seed: int) -> Judging:  # fmt: skip
    """Both tiers' answers on every trace: ``failed`` the truth, ``difficulty`` 0/1/2 (evident,
    normal, hard: the keys of ``JUDGE_ACCURACY``), ``table`` the real escalation rule
    (:func:`bench.population.escalation_table`), ``req`` whether the cascade requires the strong tier."""
    rng = np.random.default_rng([seed, 1])
    n = len(failed)
    acc = np.array([JUDGE_ACCURACY[k] for k in ("evident", "normal", "hard")])  # [difficulty, tier]

    def tier(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = rng.random(n) >= UNSCORED[t]
        right = rng.random(n) < acc[difficulty, t]
        conf = np.where(right, rng.beta(*CONFIDENCE_RIGHT, n), rng.beta(*CONFIDENCE_WRONG, n))
        return ok, failed ^ ~right, np.rint(conf * 100).astype(np.int64)

    cheap_ok, cheap_fail, cents = tier(0)
    strong_ok, strong_fail, _ = tier(1)
    escalate = table[cheap_ok.astype(int), cheap_fail.astype(int), cents, req.astype(int)]
    return Judging(escalate, cheap_ok, cheap_fail, strong_ok, strong_fail)


def final_verdicts(j: Judging, escalated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(has a label, label is fail): the strong tier's if it ran and answered, else the cheap one's."""
    use_strong = escalated & j.strong_ok
    return use_strong | j.cheap_ok, np.where(use_strong, j.strong_fail, j.cheap_fail)
