"""Scenario 1: SIGKILL at random points, again and again, while traces stream in and are judged.

One worker with judging on (a local OpenAI-compatible fake provider: honest answers, some latency)
takes a continuous stream of traces: keyed ones, and unkeyed ones split over two partitions (which
go through the repartition topic); about a third are suspected failures, so they are sampled and
judged. The worker is SIGKILLed N times at random moments after it became ready (so kills land
mid-poll, between an insert and its commit, mid-commit, mid-judging, just after recovery)
and restarted each time. At the end, against what the broker acknowledged:

* every span is in ``spans FINAL`` (lost 0), none twice (visible duplicates 0);
* every trace is in ``traces FINAL`` once, with the span count it was sent with;
* every sampled trace has exactly one verdict row (no duplicate (trace, judge, rubric) key);
* repeated paid calls (provider requests − distinct (trace, judge, tier)) are at most what can be
  in flight or awaiting the ledger flush at each kill.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.judges.fake_provider import FakeProviderServer
from tests.reliability.load import DB, TraceLoad, judging_settings, scalar, settled, slow_honest, stored, with_key
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for

MAX_IN_FLIGHT = 4


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("size", SIZES)
def test_sigkill_at_random_points_loses_and_doubles_nothing(
    deployment: Callable[..., Deployment], figures: Callable[..., None], tmp_path: Path, size: str
) -> None:
    rng = random.Random(pick(size, 101, 202))
    kills = int(pick(size, 10, 50))
    started = time.monotonic()
    with FakeProviderServer() as server:
        server.default = slow_honest(0.1)
        settings = judging_settings(server, tmp_path / "judging.yaml",
                                    max_in_flight=MAX_IN_FLIGHT)  # fmt: skip
        # session timeout 3 s (the minimum): a killed member leaves the group in 3 s, so a restart
        # takes ~5 s instead of ~13 s. decision_wait 2 s: after a restart, the replay of what was
        # read but not committed must reach a restored trace's other half within that time.
        d = with_key(deployment(kafka_session_timeout=3, decision_wait=2.0, **settings))
        worker = d.start_worker()
        load = TraceLoad(d.settings["TRACEJUDGE_KAFKA_BOOTSTRAP"], d.input_topic, rate=20, seed=rng.randrange(10**6))
        load.start()
        restarts: list[float] = []
        mid_judging = orphaned = 0
        unanswered = lambda: len(server.requests) - len(server.responses)  # noqa: E731
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 4.5))  # past decision_wait too: completions, judging
                assert worker.proc.poll() is None, f"worker died on its own; see {worker.log_path}"
                mid_judging += unanswered() > orphaned  # a judge call in flight
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait()
                worker.stop()
                t0 = time.monotonic()
                worker = d.start_worker()
                restarts.append(time.monotonic() - t0)
                orphaned = unanswered()  # the killed worker's calls (their answers could not be sent)
            time.sleep(2.0)
        finally:
            load.stop()
        draining = time.monotonic()
        assert wait_for(lambda: settled(worker.sql, load), 120, 1.0), stored(worker.sql, load)
        drain = time.monotonic() - draining
        time.sleep(1.5)  # nothing more arrives; the ledger flushes every 50 ms
        got = stored(worker.sql, load)
        live = f"FROM {DB}.judge_calls FINAL WHERE purpose = 'live'"
        distinct_calls = scalar(worker.sql, "SELECT count() FROM "
                                            f"(SELECT DISTINCT trace_id, judge, rubric_hash, tier {live})")  # fmt: skip
        ledger_calls = scalar(worker.sql, f"SELECT count() {live}")
        requests = len(server.requests)
    elapsed = time.monotonic() - started
    figures(scenario="1 SIGKILL at random points", guarantee="no loss, no visible dup, one verdict per sampled trace",
            kills=kills, kills_mid_judging=mid_judging, spans=got["spans_sent"], lost=got["lost"],
            dup_final=got["dup_final"], raw_dup=got["raw_dup"], traces=got["traces_sent"], wrong_span_count=got["wrong_span_count"],
            sampled=got["sampled"], verdicts=got["verdicts"], dup_verdicts=got["dup_verdicts"],
            repeated_paid_calls=requests - distinct_calls, unledgered_calls=requests - ledger_calls,
            restart_s=round(sum(restarts) / len(restarts), 1), drain_s=round(drain, 1),
            elapsed_s=round(elapsed))  # fmt: skip
    assert got["lost"] == 0 and got["dup_final"] == 0
    assert got["traces_missing"] == 0 and got["dup_traces"] == 0 and got["unexpected_traces"] == 0
    assert got["wrong_span_count"] == 0
    assert got["sampled"] > 0 and got["sampled_unjudged"] == 0 and got["judged_unsampled"] == 0
    assert got["dup_verdicts"] == 0 and got["verdicts_not_ok"] == 0
    # a kill can repeat only calls in flight (max_in_flight per tier) or answered but not yet on the ledger
    assert 0 <= requests - distinct_calls <= kills * 2 * MAX_IN_FLIGHT
