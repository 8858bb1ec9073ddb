"""Scenario 11 (fault matrix row 17): a soak under steady load with periodic faults.

    python -m tests.reliability.soak --minutes 10           # own tansu broker, temporary data dir
    python -m tests.reliability.soak --minutes 3 --rate 20 --fault-every 45

One worker (judging on, against a local fake OpenAI-compatible provider) takes a fixed rate of
GenAI traces (keyed ones, and unkeyed ones split over two partitions that go through the
repartition topic). Every ``fault_every`` seconds a fault hits it, in turn: SIGKILL + restart,
a ClickHouse outage (when ``stream/faults.py`` exists: ``{"clickhouse": "down"}`` then ``"up"``
in the worker's ``TRACEJUDGE_FAULTS_FILE``), SIGTERM + restart, and the outage again. Every few
seconds it samples the worker's RSS and the consumer lag (end − committed offsets, every topic the
worker consumes). At the end it prints the RSS slope and the lag trend (least squares within each
worker process over its steady windows: past its warm-up, outside outages and the backlog drain
after them), and lost / duplicated spans, traces and verdicts. Exit code 1 if a guarantee broke.

The load, the judging deployment and the store checks live in :mod:`tests.reliability.load`
(shared with the kill and SIGTERM scenarios).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.judges.fake_provider import FakeProviderServer
from tests.reliability.load import TraceLoad, judging_settings, settled, slow_honest, stored, with_key
from tests.reliability.support import committed_offsets, end_offsets, rss_mb
from tests.stream.conftest import Deployment, wait_for


# ---- sampling and trends ----------------------------------------------------------------------
def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mt, mv = sum(t for t, _ in points) / n, sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return None if var == 0 else 60 * sum((t - mt) * (v - mv) for t, v in points) / var


def pooled_slope_per_min(segments: list[list[tuple[float, float]]]) -> float | None:
    """One slope fitted across segments, each with its own intercept (a restart resets the level)."""
    num = den = 0.0
    for pts in segments:
        if len(pts) < 3:
            continue
        mt, mv = sum(t for t, _ in pts) / len(pts), sum(v for _, v in pts) / len(pts)
        num += sum((t - mt) * (v - mv) for t, v in pts)
        den += sum((t - mt) ** 2 for t, _ in pts)
    return None if den == 0 else 60 * num / den


@dataclass
class Sample:
    t: float  # seconds since the soak started
    pid: int
    since_start: float  # seconds since this worker process started
    rss_mb: float | None
    lag: int | None


@dataclass
class Sampler:
    """Samples RSS and consumer lag every ``every`` seconds in a thread."""

    d: Deployment
    topics: list[str]
    every: float = 3.0
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    worker_started: float = field(default_factory=time.monotonic)
    outages: list[tuple[float, float]] = field(default_factory=list)  # (from, to) s since started

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def restarted(self) -> None:
        self.worker_started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def lag(self) -> int:
        group = self.d.settings["TRACEJUDGE_CONSUMER_GROUP"]
        bootstrap = self.d.settings["TRACEJUDGE_KAFKA_BOOTSTRAP"]
        total = 0
        for topic in self.topics:
            ends, done = end_offsets(bootstrap, topic), committed_offsets(bootstrap, group, topic)
            # tansu's ListOffsets reports the start of a partition's last batch + 1 (not its end)
            # when that batch holds several records: lag reads low by that much, never below 0
            total += sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            w = self.d.workers[-1]
            rss = lag = None
            with contextlib.suppress(OSError, KeyError):
                rss = rss_mb(w.proc.pid) if w.proc.poll() is None else None
            with contextlib.suppress(Exception):
                lag = self.lag()
            now = time.monotonic()
            self.samples.append(Sample(now - self.started, w.proc.pid, now - self.worker_started, rss, lag))

    def now(self) -> float:
        return time.monotonic() - self.started

    def segments(self, warmup: float, value: Callable[[Sample], float | None],
                 settle: float = 30.0) -> list[list[tuple[float, float]]]:  # fmt: skip
        """Steady windows: per worker process, the samples past its warm-up, leaving out each
        ClickHouse outage and the ``settle`` seconds of backlog drain after it."""
        by_pid: dict[int, list[tuple[float, float]]] = {}
        for s in self.samples:
            v = value(s)
            if v is None or s.since_start < warmup or any(a <= s.t <= b + settle for a, b in self.outages):
                continue
            by_pid.setdefault(s.pid, []).append((s.t, v))
        return list(by_pid.values())


# ---- the soak ---------------------------------------------------------------------------------
def outage_supported() -> bool:
    return importlib.util.find_spec("stream.faults") is not None


def fault_plan(outage: bool) -> list[str]:
    """Restarts every other fault, so each worker process runs two fault periods (its warm-up
    and a steady window); without ``stream/faults.py`` the outage slots pass without a fault."""
    return ["kill", "clickhouse" if outage else "pause", "term", "clickhouse" if outage else "pause"]


def run_soak(make: Callable[..., Deployment], work: Path, *, minutes: float, rate: float, fault_every: float,
             warmup: float = 60.0, outage_s: float = 15.0, seed: int = 1,
             log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Run the soak; return its figures. ``make(**settings)`` builds the deployment (fresh topics)."""
    outage = outage_supported()
    faults_file = work / "faults.json"
    with FakeProviderServer() as server:
        server.default = slow_honest(0.05)
        settings = judging_settings(server, work / "judging.yaml")
        if outage:
            settings["faults_file"] = faults_file  # missing file: no fault
        d = with_key(make(kafka_session_timeout=3, decision_wait=3.0, **settings))
        judge_topic = d.settings["TRACEJUDGE_JUDGE_TOPIC"]
        topics = [d.input_topic, d.settings["TRACEJUDGE_REPARTITION_TOPIC"], judge_topic]
        worker = d.start_worker()
        sampler = Sampler(d, topics)
        load = TraceLoad(d.settings["TRACEJUDGE_KAFKA_BOOTSTRAP"], d.input_topic, rate=rate, seed=seed).start()
        plan, done, exits = fault_plan(outage), [], []
        end = time.monotonic() + minutes * 60
        next_fault = time.monotonic() + fault_every
        try:
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker died ({worker.proc.returncode}); see {worker.log_path}")
                if time.monotonic() < next_fault or time.monotonic() > end - fault_every / 2:
                    continue
                fault = plan[len(done) % len(plan)]
                log(f"[{sampler.now():6.0f}s] fault: {fault}")
                if fault == "pause":
                    pass
                elif fault == "clickhouse":
                    from stream.faults import write_faults

                    down = sampler.now()
                    write_faults(faults_file, clickhouse="down")
                    time.sleep(outage_s)
                    write_faults(faults_file, clickhouse="up")
                    sampler.outages.append((down, sampler.now()))
                else:
                    worker.proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
                    exits.append((fault, worker.proc.wait(60)))
                    worker.stop()
                    sampler.restarted()
                    worker = d.start_worker()
                done.append(fault)
                next_fault = time.monotonic() + fault_every
        finally:
            load.stop()
        drain_started = time.monotonic()
        sql = worker.sql
        wait_for(lambda: settled(sql, load), 180, 1.0)
        drain = time.monotonic() - drain_started
        time.sleep(1.5)  # nothing more arrives
        sampler.stop()
        figures = stored(sql, load)
        rss_segments = sampler.segments(warmup, lambda s: s.rss_mb)
        lag_segments = sampler.segments(warmup, lambda s: s.lag)
        all_lag = [s.lag for s in sampler.samples if s.lag is not None]
        rss_all = [s.rss_mb for s in sampler.samples if s.rss_mb is not None]
        paid = len(server.requests)
        worker.stop()
    return {
        "minutes": minutes, "rate": rate, "faults": ",".join(done) or "none", "exits": exits,
        "rss_slope_mb_min": _round(pooled_slope_per_min(rss_segments)),
        "rss_steady_points": sum(len(s) for s in rss_segments),
        "rss_max_mb": round(max(rss_all), 1) if rss_all else None,
        "rss_steady_median_mb": [round(sorted(v for _, v in seg)[len(seg) // 2]) for seg in rss_segments if seg],
        "lag_slope_per_min": _round(pooled_slope_per_min(lag_segments)),
        "lag_max": max(all_lag) if all_lag else None,
        "lag_last": all_lag[-1] if all_lag else None,
        "drain_s": round(drain, 1), "provider_requests": paid, **figures,
        "samples": [(round(s.t, 1), s.pid, round(s.since_start, 1), s.rss_mb and round(s.rss_mb, 1), s.lag)
                    for s in sampler.samples],
    }


def problems(result: dict[str, Any], rss_bound_mb_min: float) -> list[str]:
    """The soak's guarantees that ``result`` violates (empty: stable)."""
    bad = [f"{k} = {result[k]}" for k in ("lost", "dup_final", "traces_missing", "dup_traces", "wrong_span_count",
                                          "unexpected_traces", "sampled_unjudged", "dup_verdicts") if result[k]]  # fmt: skip
    # SIGKILL ends a worker with -9; SIGTERM must be a clean shutdown (0)
    bad += [f"{f}: exit code {code}" for f, code in result["exits"] if code != {"kill": -9, "term": 0}[f]]
    slope = result["rss_slope_mb_min"]
    if slope is None or slope >= rss_bound_mb_min:
        bad.append(f"RSS slope {slope} MB/min (bound {rss_bound_mb_min})")
    return bad


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


@contextlib.contextmanager
def local_deployments(work: Path) -> Iterator[Callable[..., Deployment]]:
    """``make(**settings)`` against a broker of our own (the script's counterpart of the fixture)."""
    from stream.demo.broker import LocalBroker
    from stream.topics import ensure_topics

    made: list[Deployment] = []
    with LocalBroker(work / "tansu") as broker:

        def make(**settings: Any) -> Deployment:
            topic = f"soak.{len(made)}.{random.randrange(16**6):06x}"
            asyncio.run(ensure_topics(broker.bootstrap, {topic: 4}))
            made.append(Deployment(broker, topic, work / f"data{len(made)}", **settings))
            return made[-1]

        try:
            yield make
        finally:
            for d in made:
                d.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20.0, help="traces per second")
    ap.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds after each (re)start left out of the trends")
    ap.add_argument("--rss-bound", type=float, default=30.0, help="MB/min (see tests/reliability/test_soak.py)")
    ap.add_argument("--work-dir", type=Path, help="keep data and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        make = stack.enter_context(local_deployments(work))
        result = run_soak(make, work, minutes=args.minutes, rate=args.rate, fault_every=args.fault_every,
                          warmup=args.warmup)  # fmt: skip
    samples = result.pop("samples")
    print("t_s pid since_start_s rss_mb lag")
    for row in samples:
        print(*row)
    print(json.dumps(result, indent=1, default=str))
    bad = problems(result, args.rss_bound)
    print("soak: stable (no loss, no duplicates, bounded RSS slope)" if not bad else f"soak FAILED: {'; '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
