"""Scenario 11 (fault matrix row 17): a soak under steady load with periodic faults stays stable (see ``soak.py``).

The short version (in the default run) runs ~70 s with one SIGKILL + restart; the long one
(``-m reliability``) runs 10 minutes with a fault every minute (SIGKILL, ClickHouse outage, SIGTERM,
outage, …). Both assert no span lost, none visible twice, one verdict per sampled trace, and a
bounded RSS slope.

RSS bound: the slope is fitted within each worker process over its steady windows: past its
warm-up (chDB and Python caches filling, recovered traces) and outside ClickHouse outages and the
30 s of backlog drain after each. Measured here at 20 traces/s: 60-90 MB/min in a process's first
minute, 9-20 MB/min after it (the warm-up tail, sampled around faults every minute). A leak that
kept every trace's decoded spans (~28 KB per trace, 1,200 traces a minute: ~33 MB/min on top)
fails the long bound of 30 MB/min. The short version only has ~30 s windows inside the first
minute, so its bound (250 MB/min) only catches runaway growth; the long version is the real check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.soak import problems, run_soak
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("size", SIZES)
def test_soak_with_periodic_faults_is_stable(
    deployment: Callable[..., Deployment], figures: Callable[..., None], tmp_path: Path, size: str
) -> None:
    result = run_soak(deployment, tmp_path, minutes=pick(size, 1.2, 10), rate=20,
                      fault_every=pick(size, 30, 60), warmup=pick(size, 15, 60))  # fmt: skip
    shown = ("minutes", "faults", "rss_slope_mb_min", "rss_steady_points", "rss_steady_median_mb", "rss_max_mb",
             "lag_slope_per_min", "lag_max", "lag_last", "drain_s", "spans_sent", "lost", "dup_final", "raw_dup",
             "sampled", "verdicts", "dup_verdicts")  # fmt: skip
    figures(scenario="11 soak with periodic faults", guarantee="stable: no loss, no dup, bounded RSS slope",
            **{k: result[k] for k in shown})
    # The short run's steady windows are 15 s, right after a 15 s warm-up: its slope is mostly the
    # process's early growth, and only a gross leak passes 250 MB/min. Alone on a 2-core host it
    # measured 84 MB/min, next to other tests (make test, two processes) 100-124, and 162 in `make
    # test` on a faster 2-core Intel host (2026-12-05: more traces decoded in the same warm-up). The leak guard is
    # the long run's bound: 30 MB/min over 10 minutes.
    assert problems(result, rss_bound_mb_min=pick(size, 250, 30)) == []
