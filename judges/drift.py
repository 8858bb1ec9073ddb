"""Drift: a judge version re-run on a frozen reference set agrees with humans less than it did.

The baseline is the first agreement measured for the judge version, tier and reference set (a
``tracejudge calibrate`` run, else the first drift run); the current agreement is a scheduled
re-run. A provider silently changing the model behind a pinned name shows up here first.
"""

from __future__ import annotations

from dataclasses import dataclass

from judges.calibration import Agreement

#: accuracy differences within this are float noise, not drift
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class DriftResult:
    drifted: bool
    drop: float  # baseline accuracy - current accuracy (negative: improved); 0.0 if not comparable
    message: str
    kappa_drop: float | None = None
    comparable: bool = True


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def check_drift(baseline: Agreement, current: Agreement, max_drop: float) -> DriftResult:
    """Drifted when accuracy fell by more than ``max_drop`` below the baseline's. Kappa is reported
    alongside. When either run has no scored case (accuracy undefined) nothing can be compared:
    ``drifted`` is False and ``comparable`` False (a judge that scores nothing is reported by its
    unscored / error verdicts and the paused-judge alert, not as drift)."""
    kappa_drop = (baseline.kappa - current.kappa
                  if baseline.kappa is not None and current.kappa is not None else None)  # fmt: skip
    kappas = f"kappa {_fmt(baseline.kappa)} -> {_fmt(current.kappa)}"
    if baseline.accuracy is None or current.accuracy is None:
        return DriftResult(False, 0.0, f"not comparable: accuracy {_fmt(baseline.accuracy)} -> "
                           f"{_fmt(current.accuracy)} (no scored cases); {kappas}", kappa_drop, False)  # fmt: skip
    drop = baseline.accuracy - current.accuracy
    drifted = drop > max_drop + _EPS
    what = f"dropped {drop:.3f} (more than {max_drop:.3f})" if drifted else f"change {-drop:+.3f} within {max_drop:.3f}"
    message = (f"{'DRIFT: ' if drifted else ''}accuracy {baseline.accuracy:.3f} -> {current.accuracy:.3f}, "
               f"{what}; {kappas}; scored {baseline.n_scored} -> {current.n_scored}")  # fmt: skip
    return DriftResult(drifted, drop, message, kappa_drop)
