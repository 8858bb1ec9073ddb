"""Drift: accuracy on a frozen reference set compared with the baseline."""

from __future__ import annotations

import pytest

from judges.calibration import agreement
from judges.drift import check_drift


def acc(correct: int, total: int = 100, unscored: int = 0) -> object:
    """An agreement with ``correct`` of ``total`` scored pairs right (half fail, half pass)."""
    pairs: list[tuple[str, str | None]] = []
    for i in range(total):
        human = "fail" if i % 2 else "pass"
        right = i < correct
        pairs.append((human, human if right else ("pass" if human == "fail" else "fail")))
    return agreement(pairs + [("pass", None)] * unscored)


def test_drop_beyond_max_drop_is_drift() -> None:
    r = check_drift(acc(90), acc(70), max_drop=0.1)
    assert r.drifted and r.comparable
    assert r.drop == pytest.approx(0.2)
    assert r.kappa_drop == pytest.approx(0.8 - 0.4)  # balanced classes: kappa = 2 * accuracy - 1
    assert "DRIFT" in r.message and "0.900 -> 0.700" in r.message and "kappa" in r.message


def test_drop_at_or_below_max_drop_is_not_drift() -> None:
    at = check_drift(acc(90), acc(80), max_drop=0.1)  # 0.9 - 0.8 is 0.0999… in floats
    assert not at.drifted and at.drop == pytest.approx(0.1)
    assert not check_drift(acc(90), acc(85), max_drop=0.1).drifted
    better = check_drift(acc(80), acc(95), max_drop=0.0)
    assert not better.drifted and better.drop == pytest.approx(-0.15)
    assert check_drift(acc(80), acc(79), max_drop=0.0).drifted


def test_unscored_current_run_is_not_comparable() -> None:
    r = check_drift(acc(90), agreement([("pass", None)] * 10), max_drop=0.1)
    assert not r.drifted and not r.comparable and r.drop == 0.0
    assert "not comparable" in r.message
