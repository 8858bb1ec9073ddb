"""Latency benchmark: a trace's completion -> its ``traces`` row -> its verdict row.

    python bench/latency.py [--rate 30] [--seconds 60] [--latency 0.2] [--success-rate 0.5]
                            [--store server|embedded] [--worker-env KEY=VALUE ...]

Steady load, one worker with judging on, against the demo's simulated provider
(:mod:`stream.demo.sim_provider`, its own process, OpenAI protocol over real HTTP) answering after
``--latency`` seconds:

* **Load**: ``--rate`` traces/s for ``--seconds`` s, produced live (one OTLP protobuf message per
  trace, keyed by trace id). Traces come from :func:`bench.generate.build_trace` (a pool of 300,
  each produced copy with a fresh trace id and its times shifted so the root ends just before it
  is sent).
* **Judging** (written to the work dir): one judge (``task_completion``) on one tier (``cheap``),
  flake re-judging off, verdict cache off, no budget limit, ``max_in_flight`` 64 — so a verdict is
  exactly one provider call (calls per verdict are counted from ``judge_calls`` and printed).
  **Policy**: the default policy with the success sampling rate raised to ``--success-rate`` (0.5),
  so a few hundred verdicts per minute are measured (suspected failures are sampled at 1.0).
* **Completion moment** C = ``traces.last_seen`` + ``decision_wait``. ``last_seen`` is the
  worker's clock when it received the trace's last span (the assembler's own definition: a trace
  is due ``decision_wait`` after it last saw a span), recorded on the row. Times before C are ingest
  (produce -> receipt, printed as context), not completion latency.
* **Visibility**: a poller queries the store every ``--poll`` s (50 ms) for ``traces`` and
  ``verdicts`` rows it has not seen; a row's visible time is when the first answer that holds it
  arrived (an upper bound: late by at most the poll interval plus one query). The schema has no server-side insert
  time (``completed_at`` / ``judged_at`` are set by the worker before its insert), so polling it is.
* **Store**: ``--store server`` (default): the worker writes to a ``tracejudge store-server``
  and the poller reads it directly, outside the worker. ``--store embedded``: the worker's own
  chDB, polled through the worker's ``/api/sql`` (which costs the measured process some CPU).

Printed: p50 / p90 / p99 / max of (a) completion -> ``traces`` row, (b) completion -> verdict row
minus the provider's latency per call (0.2 s x calls; also minus the measured call latency) and of
the stages between them: tick wait (C -> ``completed_at``), trace write (``completed_at`` -> row),
to the judge call (``completed_at`` -> call start = ``judge_calls.ts - latency_s``: to_judge produce,
topic hop, judge batch gathering, verdict/cache lookups), the call, batch wait (call end ->
``judged_at``: the batch's slowest call) and verdict write (``judged_at`` -> row: ledger flush +
insert). CPU per process over the run. Results: ``bench/results/latency-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from stream.demo.store_server_process import StoreServerProcess  # noqa: E402
from bench.harness import (  # noqa: E402
    CpuMeter, parse_worker_env, percentile, scan_log, start_workers, status_or_none, uptime,
)  # fmt: skip
from bench.latency_figures import figures, print_figures  # noqa: E402
from bench.latency_io import DB, Load, Poller, topic_times  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_WORKER_ENV = {  # product defaults except decision_wait (shorter, for a short run)
    "TRACEJUDGE_DECISION_WAIT": "5", "TRACEJUDGE_TICK_INTERVAL": "0.25", "TRACEJUDGE_BATCH_WITHIN": "0.2",
    "TRACEJUDGE_BATCH_MAX_MESSAGES": "500", "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "10", "TRACEJUDGE_LOG_LEVEL": "info",
}  # fmt: skip


# ---- set-up ------------------------------------------------------------------------------------
def start_provider(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The simulated provider in its own process (it must not share the GIL with anything measured)."""
    code = ("import sys; from stream.demo.sim_provider import SimulatedProvider as S; "
            f"s = S(latency_s={latency}, uncertain_rate=0.0); s.start(); print(s.url, flush=True); sys.stdin.read()")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT))  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def write_configs(work: Path, url: str, success_rate: float, max_in_flight: int) -> tuple[Path, Path]:
    judging = {
        "providers": [{"name": "sim", "type": "openai", "base_url": url + "/v1", "api_key_env": "TRACEJUDGE_SIM_API_KEY",
                       "price_in_per_1m": 0.15, "price_out_per_1m": 0.6, "timeout_s": 10,
                       "max_connections": max_in_flight}],
        "tiers": {"cheap": {"provider": "sim", "model": "sim-cheap"}},
        "judges": ["task_completion"], "max_in_flight": max_in_flight, "cache": False,
        "flake": {"fraction": 0.0}, "budget": {"global_usd": None},
    }  # fmt: skip
    policy = yaml.safe_load((ROOT / "stream" / "default_policy.yaml").read_text())
    policy["sampling"]["success"]["rate"] = success_rate
    jp, pp = work / "judging.yaml", work / "policy.yaml"
    jp.write_text(yaml.safe_dump(judging, sort_keys=False))
    pp.write_text(yaml.safe_dump(policy, sort_keys=False))
    return jp, pp


# ---- main --------------------------------------------------------------------------------------
def _wait_judging_ready(worker: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}; see {worker.log_path}")
        s = status_or_none(worker)
        if s and s.get("owned_partitions") and (s.get("judging") or {}).get("owned_partitions"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout:.0f}s; see {worker.log_path}")


def run(args: argparse.Namespace, work: Path, worker_env: dict[str, str]) -> dict[str, Any]:
    from stream.demo.broker import LocalBroker
    from stream.topics import ensure_topics
    from stream.store import ClickHouseStore

    dw = float(worker_env["TRACEJUDGE_DECISION_WAIT"])
    provider, url = start_provider(args.latency)
    server = store = worker = None
    try:
        with LocalBroker(work / "broker") as broker:
            rid = uuid.uuid4().hex[:8]
            names = {k: f"bench.latency.{rid}.{k}" for k in ("in", "dlq", "by_trace", "to_judge", "to_judge_dlq",
                                                              "events", "events_dlq")}  # fmt: skip
            asyncio.run(ensure_topics(broker.bootstrap, {t: 4 for t in names.values()}))
            jp, pp = write_configs(work, url, args.success_rate, args.max_in_flight)
            env = {
                "TRACEJUDGE_KAFKA_BOOTSTRAP": broker.bootstrap, "TRACEJUDGE_INPUT_TOPIC": names["in"],
                "TRACEJUDGE_DLQ_TOPIC": names["dlq"], "TRACEJUDGE_REPARTITION_TOPIC": names["by_trace"],
                "TRACEJUDGE_JUDGE_TOPIC": names["to_judge"], "TRACEJUDGE_JUDGE_DLQ_TOPIC": names["to_judge_dlq"],
                "TRACEJUDGE_EVENTS_TOPIC": names["events"], "TRACEJUDGE_EVENTS_DLQ_TOPIC": names["events_dlq"],
                "TRACEJUDGE_CONSUMER_GROUP": f"bench-latency-{rid}", "TRACEJUDGE_JUDGING_FILE": str(jp),
                "TRACEJUDGE_POLICY_FILE": str(pp), "TRACEJUDGE_SIM_API_KEY": "simulated", **worker_env,
            }  # fmt: skip
            if args.store == "server":
                server = StoreServerProcess(work / "store", log_level="WARNING")
                env["TRACEJUDGE_CLICKHOUSE_DSN"] = server.dsn
            (worker,) = start_workers(1, env, work)
            _wait_judging_ready(worker)
            if server is not None:
                store = ClickHouseStore(server.dsn, DB)

                def sql(q: str) -> list[Any]:
                    return list(store.query(q)[1])
            else:
                sql = worker.sql
            poller = Poller(sql, args.poll)
            poller.thread.start()
            load = Load(broker.bootstrap, names["in"], args.rate, args.seconds, seed=args.seed)
            pids = {"worker": worker.proc.pid, "provider": provider.pid, "broker": broker._proc.pid}  # noqa: SLF001
            if server is not None:
                pids["store-server"] = server.proc.pid
            pids["bench"] = os.getpid()
            cpu = CpuMeter(pids)
            cpu.start()
            load.thread.start()
            load.thread.join()
            if load.error is not None:
                raise RuntimeError("the load producer failed") from load.error
            produced_at = time.time()
            deadline = produced_at + dw + args.drain
            sampled_n = -1
            while time.time() < deadline:
                time.sleep(1.0)
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.proc.returncode}; see {worker.log_path}")
                if sum(1 for t in load.acked if t in poller.trace_seen) < len(load.acked):
                    continue
                sampled_n = int(sql(f"SELECT count() FROM {DB}.traces FINAL WHERE sampled = 1")[0][0])
                if len(poller.verdict_seen) >= sampled_n:
                    break
            cpu.stop()
            poller.stop()
            traces = sql(f"SELECT trace_id, toUnixTimestamp64Milli(last_seen), toUnixTimestamp64Milli(completed_at), "
                         f"sampled FROM {DB}.traces FINAL")  # fmt: skip
            verdicts = sql(f"SELECT trace_id, toUnixTimestamp64Milli(judged_at), length(tiers_called), status "
                           f"FROM {DB}.verdicts FINAL")  # fmt: skip
            calls = sql(f"SELECT trace_id, toUnixTimestamp64Milli(ts), latency_s FROM {DB}.judge_calls FINAL "
                        "WHERE purpose = 'live'")  # fmt: skip
            to_judge = asyncio.run(topic_times(broker.bootstrap, names["to_judge"]))
            reasons = dict(sql(f"SELECT completion_reason, count() FROM {DB}.traces FINAL GROUP BY 1"))
            status = status_or_none(worker) or {}
            fig = figures(traces, verdicts, calls, load, poller, dw, args.latency, to_judge)
            return {
                "figures": fig, "traces_produced": len(load.acked), "spans_produced": load.spans,
                "traces_stored": len(traces), "sampled": sum(1 for t in traces if t[3]),
                "verdicts": len(verdicts), "verdicts_not_ok": sum(1 for v in verdicts if v[3] != "ok"),
                "calls": len(calls), "completion_reasons": reasons,
                "not_seen_by_poller": {"traces": sum(1 for t in traces if t[0] not in poller.trace_seen),
                                       "verdicts": sum(1 for v in verdicts if v[0] not in poller.verdict_seen)},
                "poller": {"polls": len(poller.query_s), "errors": poller.errors,
                           "query_p50_s": percentile(poller.query_s, 50), "query_p99_s": percentile(poller.query_s, 99)},
                "drain_s": time.time() - produced_at, "cpu_line": cpu.line(),
                "cpu_cores": {k: v / cpu.seconds for k, v in cpu.used.items()}, "cpu_seconds_window": cpu.seconds,
                "judging": status.get("judging"),
                "slow_calls": sorted((ts, round(lat, 3)) for _, ts, lat in calls if lat > 3 * args.latency), "log_warnings": scan_log(worker.log_path),
            }  # fmt: skip
    finally:
        if store is not None:
            store.close()
        if worker is not None:
            worker.stop(timeout=60)
        if server is not None:
            server.stop()
        provider.kill()
        provider.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=30.0, help="traces per second (default 30)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default 60)")
    p.add_argument("--latency", type=float, default=0.2, help="provider latency per call, s (default 0.2)")
    p.add_argument("--success-rate", type=float, default=0.5, help="policy: success sampling rate (default 0.5)")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--store", choices=("server", "embedded"), default="server")
    p.add_argument("--poll", type=float, default=0.05, help="visibility poll interval, s (default 0.05)")
    p.add_argument("--drain", type=float, default=60.0, help="max wait after the load for rows and verdicts, s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    worker_env = parse_worker_env(args.worker_env, DEFAULT_WORKER_ENV)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tracejudge-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(uptime())
    print(f"load: {args.rate:g} traces/s for {args.seconds:g} s; provider latency {args.latency * 1000:.0f} ms; "
          f"success sampling rate {args.success_rate:g}; store: {args.store}; poll every {args.poll * 1000:.0f} ms")  # fmt: skip
    print(f"judging: task_completion on tier cheap only (1 call per verdict), cache off, flake off, "
          f"max_in_flight {args.max_in_flight}, judge batch_max_messages 64 (default)")  # fmt: skip
    print(f"worker settings: {' '.join(f'{k}={v}' for k, v in sorted(worker_env.items()))}", flush=True)
    try:
        r = run(args, work, worker_env)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"produced {r['traces_produced']:,} traces ({r['spans_produced']:,} spans); stored {r['traces_stored']:,} "
          f"traces {r['completion_reasons']}; sampled {r['sampled']:,}; verdicts {r['verdicts']:,} "
          f"({r['verdicts_not_ok']} not ok); live provider calls {r['calls']:,}; drained {r['drain_s']:.1f}s after the load")  # fmt: skip
    print(f"poller: {r['poller']['polls']} polls, query p50 {r['poller']['query_p50_s'] * 1000:.0f} ms / p99 "
          f"{r['poller']['query_p99_s'] * 1000:.0f} ms, {r['poller']['errors']} errors; rows it never saw: "
          f"{r['not_seen_by_poller']}")  # fmt: skip
    print()
    print_figures(r["figures"])
    print(f"\nCPU cores over the run: {r['cpu_line']}")
    if r["log_warnings"][0]:
        print(f"worker log: {r['log_warnings'][0]} warnings/errors, e.g.:")
        for ln in r["log_warnings"][1]:
            print(f"  {ln[:200]}")
    print(uptime())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"latency-{stamp}.json"
    text = json.dumps({"timestamp": stamp, "args": {k: str(v) for k, v in vars(args).items()},
                       "worker_env": worker_env, **r}, indent=1, default=str)  # fmt: skip
    for path in (out, args.json):
        if path is not None:
            path.write_text(text)
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
