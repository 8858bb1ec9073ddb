"""Flake tracking: deterministic selection and quarantine exactly at the threshold."""

from __future__ import annotations

import pytest

from judges.config import FlakeSpec
from judges.flake import FlakeTracker, selection_point


def ids(n: int) -> list[str]:
    return [f"{i * 2654435761 % 2**128:032x}" for i in range(n)]


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5])
def test_selection_share_matches_the_fraction(fraction: float) -> None:
    tracker = FlakeTracker(FlakeSpec(fraction=fraction))
    n = 10_000
    picked = sum(tracker.selected(t, "task_completion") for t in ids(n))
    sd = (n * fraction * (1 - fraction)) ** 0.5
    assert abs(picked - n * fraction) < 4 * sd


def test_selection_is_deterministic_and_per_judge() -> None:
    a, b = FlakeTracker(FlakeSpec(fraction=0.1)), FlakeTracker(FlakeSpec(fraction=0.1))
    trace_ids = ids(5000)
    first = {t for t in trace_ids if a.selected(t, "groundedness")}
    assert first == {t for t in trace_ids if b.selected(t, "groundedness")}  # another worker agrees
    other = {t for t in trace_ids if a.selected(t, "task_completion")}
    assert 0 < len(first & other) < 0.05 * len(trace_ids)  # independent draws: ~1 % overlap
    assert all(0.0 <= selection_point(t, "j") < 1.0 for t in trace_ids[:100])


def test_selection_extremes() -> None:
    assert not any(FlakeTracker(FlakeSpec(fraction=0.0)).selected(t, "j") for t in ids(1000))
    assert all(FlakeTracker(FlakeSpec(fraction=1.0)).selected(t, "j") for t in ids(1000))


def test_no_quarantine_before_min_pairs() -> None:
    tracker = FlakeTracker(FlakeSpec(fraction=1.0, min_pairs=10, max_disagreement=0.2))
    fired = [tracker.add("j", "h1", "pass", "fail") for _ in range(9)]  # 9/9 disagree
    assert fired == [False] * 9 and not tracker.quarantined("j", "h1")
    assert tracker.add("j", "h1", "pass", "pass") is True  # 10th pair: 9/10 > 0.2
    assert tracker.quarantined("j", "h1")
    assert tracker.add("j", "h1", "pass", "fail") is False  # already quarantined: fires once
    assert tracker.stats("j", "h1").pairs == 11 and tracker.stats("j", "h1").disagreements == 10


def test_quarantine_fires_exactly_when_rate_exceeds_threshold() -> None:
    tracker = FlakeTracker(FlakeSpec(min_pairs=10, max_disagreement=0.2))
    results = [tracker.add("j", "h", "pass", "fail" if i < 2 else "pass") for i in range(10)]
    assert not any(results)
    assert tracker.stats("j", "h").rate == pytest.approx(0.2)  # at the threshold: not above it
    assert not tracker.quarantined("j", "h")
    assert tracker.add("j", "h", "fail", "pass") is True  # 3/11 = 0.27
    # other versions and judges are independent
    assert not tracker.quarantined("j", "h-next") and not tracker.quarantined("k", "h")


def test_loaded_counts_continue_and_quarantine_can_be_lifted() -> None:
    tracker = FlakeTracker(FlakeSpec(min_pairs=20, max_disagreement=0.2))
    tracker.load("j", "h", 19, 5)
    assert not tracker.quarantined("j", "h")
    assert tracker.add("j", "h", "pass", "pass") is True  # 5/20 = 0.25
    for _ in range(5):
        assert tracker.add("j", "h", "pass", "pass") is False
    assert not tracker.quarantined("j", "h")  # 5/25 = 0.2: back at the threshold
    assert tracker.add("j", "h", "pass", "fail") is True  # 6/26 > 0.2: newly quarantined again
    tracker.load("q", "h", 100, 50)  # already quarantined when loaded: adding never "newly" fires
    assert tracker.quarantined("q", "h") and tracker.add("q", "h", "a", "b") is False
    with pytest.raises(ValueError):
        tracker.load("j", "h", 3, 4)


def test_stats_of_an_unknown_version() -> None:
    s = FlakeTracker(FlakeSpec()).stats("j", "h")
    assert (s.pairs, s.disagreements, s.rate, s.quarantined) == (0, 0, None, False)
