"""bench/scaleout.py's window arithmetic: the steady-state rate ignores the window's two ends."""

from __future__ import annotations

import pytest

from bench.scaleout import steady_rate


def _steps(rate: float, seconds: int, batch: int) -> list[tuple[float, int]]:
    """Stored-span counts rising by ``batch`` at a steady ``rate`` (spans/s)."""
    return [(k * batch / rate, k * batch) for k in range(1, int(rate * seconds / batch) + 1)]


def test_a_steady_series_gives_its_rate() -> None:
    assert steady_rate(_steps(5000.0, 40, 8000)) == pytest.approx(5000.0)


def test_batches_in_flight_at_the_start_and_a_lone_worker_at_the_end_do_not_move_it() -> None:
    middle = _steps(10000.0, 40, 4000)
    start = [(0.05, 12000)]  # three batches decoded before the window land at once
    shifted = [(t + 0.1, n + 12000) for t, n in middle]
    end_t, end_n = shifted[-1]
    tail = [(end_t + k * 4000 / 5000.0, end_n + k * 4000) for k in range(1, 13)]  # half the rate, 10 s
    got = steady_rate(start + shifted + tail)
    assert got == pytest.approx(10000.0, rel=0.02)
    # the end-to-end rate (what the window's count over its length says) is well below it
    series = start + shifted + tail
    assert series[-1][1] / series[-1][0] < 0.95 * got


def test_too_few_points_give_no_rate() -> None:
    assert steady_rate([]) is None
    assert steady_rate([(1.0, 8000), (2.0, 16000)]) is None
