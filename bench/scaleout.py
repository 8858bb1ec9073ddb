"""Scale-out benchmark: 1 vs 2 ``tracejudge worker`` processes in one consumer group, one store.

    python bench/scaleout.py [--spans N] [--repeat K] [--partitions P] [--dsn http://...]

1. Generates the ingest benchmark's input (:mod:`bench.generate`: realistic GenAI agent traces, one
   OTLP protobuf message per trace keyed by trace id) and produces it once, with
   :func:`bench.ingest.produce`, to a ``--partitions``-partition topic (default 8) on a local tansu
   broker.
2. Each run gets a fresh store — a new ``tracejudge store-server`` (its own chDB data dir), or with
   ``--dsn`` a new database on that ClickHouse server — a fresh consumer group and fresh
   DLQ / repartition / to_judge / events topics (``--partitions`` each), and starts 1 (resp. 2)
   workers at once, all pointed at the store's DSN.
3. Measurement window. The input is already in the topic, so a worker consumes as soon as it joins;
   with 2 workers the first one to join takes every partition and the group rebalances when the
   second joins. So the window opens only once the assignment is *settled*: every worker's
   ``/api/status`` lists owned input partitions, disjoint, covering all of them. It opens at the
   first status sample after that in which the store gained spans, and closes at the sample in
   which all spans are stored. Progress = sum over workers of ``spans_stored - replayed_spans``
   (spans redelivered by the rebalance are not counted twice). The 1-worker run uses the same rule.
   Whatever was consumed before the window (start-up, join, rebalance) is excluded and printed.
   Spans decoded but not yet stored when the window opens are counted in it although part of
   their CPU came before it; the rate without them (``spans_per_s_excl_inflight``) is printed too
   (a lower bound: their inserts fall in the window). So is the steady-state rate
   (``spans_per_s_steady``): the least-squares slope of the stored count over time, fitted to the
   points where it rose between 10 % and 90 % of the window's spans. It leaves out both ends:
   the batches in flight landing at the start, and the end, where the worker whose partitions
   ran dry first leaves the other alone. The window lasts ~45 s with 2 workers at 450k spans
   (the suite's size); at 150k it is ~13 s, ~18 inserts, and one insert more or less moves the
   rate by 5 %.
4. CPU: utime + stime of each worker, the store server, the broker and this script over the
   window (``/proc/<pid>/stat``), in cores, next to the machine's total busy cores.
   The JSON results also hold each run's inserts, rows and insert seconds per table, summed over
   the workers (``store_inserts``).
5. ``--repeat K`` alternates 1 and 2 workers K times; prints per-run and median spans/s and the ratio
   median(2) / median(1) (target >= 1.6), and the same for the two other rates. Results go to
   ``bench/results/scaleout-<timestamp>.json``.

A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.full import DEFAULT_WORKER_ENV  # noqa: E402
from stream.demo.store_server_process import StoreServerProcess  # noqa: E402
from bench.harness import (  # noqa: E402
    CpuMeter, parse_worker_env, scan_log, start_workers, status_or_none, system_busy_cores, uptime,
)  # fmt: skip
from bench.ingest import produce  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
POLL = 0.1
TARGET = 1.6


def _progress(statuses: list[dict[str, Any]]) -> int:
    return sum(s["counters"]["spans_stored"] - s["counters"]["replayed_spans"] for s in statuses)


def _store_inserts(statuses: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per table, summed over the workers: inserts, rows and seconds over the whole run."""
    out: dict[str, dict[str, float]] = {}
    for s in statuses:
        for table, st in (s.get("store_inserts") or {}).items():
            acc = out.setdefault(table, {"inserts": 0, "rows": 0, "seconds": 0.0})
            for k in acc:
                acc[k] += st.get(k, 0)
    return out


def _spans_per_insert(statuses: list[dict[str, Any]]) -> float | None:
    """Mean rows per ``spans`` insert over the run (all workers): the store's cost per span falls
    with it (bench/store_cost.py)."""
    got = [s.get("store_inserts", {}).get("spans") for s in statuses]
    inserts = sum(g["inserts"] for g in got if g)
    return sum(g["rows"] for g in got if g) / inserts if inserts else None


def steady_rate(steps: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Spans/s as the least-squares slope of stored spans over time, fitted to the points where the
    count rose (``steps``: (seconds, spans) since the window opened) between ``lo`` and ``hi`` of
    the final count. The ends are left out: at the start the batches already in flight land at
    once, at the end the worker whose partitions ran dry first leaves the other alone."""
    if not steps:
        return None
    total = steps[-1][1]
    pts = [(t, n) for t, n in steps if lo * total <= n <= hi * total]
    if len(pts) < 5:
        return None
    mt, mn = statistics.fmean(t for t, _ in pts), statistics.fmean(n for _, n in pts)
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (n - mn) for t, n in pts) / var if var > 0 else None


def _settled(statuses: list[dict[str, Any]], topic: str, partitions: int) -> bool:
    owned = [{p for p in s.get("owned_partitions", []) if p.rsplit("/", 1)[0] == topic} for s in statuses]
    if any(not o for o in owned):
        return False
    union = set().union(*owned)
    return len(union) == partitions and sum(len(o) for o in owned) == partitions


def run_once(n: int, bootstrap: str, topic: str, partitions: int, spans: int, work: Path, broker_pid: int,
             worker_env: dict[str, str], dsn: str | None, timeout: float) -> dict[str, Any]:  # fmt: skip
    from stream.topics import ensure_topics

    run_id = uuid.uuid4().hex[:8]
    names = {k: f"{topic}.{k}.{run_id}" for k in ("dlq", "by_trace", "to_judge", "to_judge_dlq", "events", "events_dlq")}
    asyncio.run(ensure_topics(bootstrap, {t: partitions for t in names.values()}))
    server = None
    database = "tracejudge"
    if dsn is None:
        server = StoreServerProcess(work / "store", log_level="WARNING")
        store_dsn = server.dsn
    else:
        store_dsn, database = dsn, f"bench_scaleout_{run_id}"
    env = {
        "TRACEJUDGE_KAFKA_BOOTSTRAP": bootstrap, "TRACEJUDGE_CLICKHOUSE_DSN": store_dsn,
        "TRACEJUDGE_CLICKHOUSE_DATABASE": database, "TRACEJUDGE_INPUT_TOPIC": topic,
        "TRACEJUDGE_DLQ_TOPIC": names["dlq"], "TRACEJUDGE_REPARTITION_TOPIC": names["by_trace"],
        "TRACEJUDGE_JUDGE_TOPIC": names["to_judge"], "TRACEJUDGE_JUDGE_DLQ_TOPIC": names["to_judge_dlq"],
        "TRACEJUDGE_EVENTS_TOPIC": names["events"], "TRACEJUDGE_EVENTS_DLQ_TOPIC": names["events_dlq"],
        "TRACEJUDGE_CONSUMER_GROUP": f"bench-scaleout-{run_id}", "TRACEJUDGE_TOPIC_PARTITIONS": str(partitions),
        **worker_env,
    }  # fmt: skip
    began = time.perf_counter()
    workers = start_workers(n, env, work)
    pids = {f"worker-{i}": w.proc.pid for i, w in enumerate(workers)}
    if server is not None:
        pids["store-server"] = server.proc.pid
    pids["broker"] = broker_pid
    pids["bench"] = os.getpid()
    cpu = CpuMeter(pids)
    result: dict[str, Any] = {"workers": n, "run_id": run_id, "dsn": "store-server" if server else "server"}
    t_settled = t0 = t_end = None
    n0 = progress = inflight0 = 0
    last_change, last_progress = time.perf_counter(), -1
    per_worker0: list[int] = []
    steps: list[tuple[float, int]] = []  # (seconds since the window opened, spans since), at each rise
    statuses: list[dict[str, Any]] = []
    try:
        deadline = began + timeout
        while time.perf_counter() < deadline:
            dead = [w for w in workers if w.proc.poll() is not None]
            if dead:
                result["error"] = f"worker exited with {dead[0].proc.returncode}; see {dead[0].log_path}"
                break
            got = [status_or_none(w) for w in workers]
            now = time.perf_counter()
            if any(s is None for s in got):
                time.sleep(POLL)
                continue
            statuses = [s for s in got if s is not None]
            progress = _progress(statuses)
            if progress != last_progress:
                last_progress, last_change = progress, now
            if t_settled is None:
                if _settled(statuses, topic, partitions):
                    t_settled, n_settled = now, progress
                    result["before_window_spans"] = progress
            elif t0 is None:
                if progress > n_settled:
                    t0, n0 = now, progress
                    per_worker0 = [_progress([s]) for s in statuses]
                    # spans decoded but not yet stored: part of their CPU was spent before the window
                    inflight0 = sum(s["counters"]["spans_in"] - s["counters"]["spans_stored"] for s in statuses)
                    busy0 = system_busy_cores()
                    cpu.start()
            else:
                if progress - n0 > (steps[-1][1] if steps else 0):
                    steps.append((now - t0, progress - n0))
                if not (progress >= spans or (now - last_change > 10 and progress >= 0.99 * spans)):
                    time.sleep(POLL)
                    continue
                t_end = now
                cpu.stop()
                busy1 = system_busy_cores()
                break
            time.sleep(POLL)
        else:
            result["error"] = f"timed out after {timeout:.0f}s (progress {progress:,}/{spans:,})"
        if t0 is not None and t_end is not None:
            secs = t_end - t0
            result.update(
                spans=progress - n0, seconds=secs, spans_per_s=(progress - n0) / secs,
                inflight_at_start=inflight0, spans_per_s_excl_inflight=(progress - n0 - inflight0) / secs,
                spans_per_s_steady=steady_rate(steps), steps=[(round(t, 3), k) for t, k in steps],
                startup_s=(t_settled or t0) - began, first_batch_after_settle_s=t0 - (t_settled or t0),
                complete=progress >= spans, progress=progress,
                per_worker_spans=[_progress([s]) - a for s, a in zip(statuses, per_worker0, strict=False)],
                owned=[sorted(p for p in s["owned_partitions"] if p.rsplit("/", 1)[0] == topic) for s in statuses],
                cpu_cores={k: v / secs for k, v in cpu.used.items()}, cpu_line=cpu.line(),
                spans_per_cpu_s=(progress - n0) / max(1e-9, sum(v for k, v in cpu.used.items() if k != "bench")),
                machine_busy_cores=(busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1]) * (os.cpu_count() or 1),
                rebalance_replayed=sum(s["counters"]["replayed_spans"] for s in statuses),
                spans_per_insert=_spans_per_insert(statuses),
                store_inserts=_store_inserts(statuses),
            )  # fmt: skip
    finally:
        codes = [w.stop(timeout=60) for w in workers]
        result["exit_codes"] = codes
        result["log_warnings"] = {f"worker-{i}": scan_log(w.log_path)[0] for i, w in enumerate(workers)}
        result["log_first"] = [ln[:200] for w in workers for ln in scan_log(w.log_path, 2)[1]]
        if server is not None:
            server.stop()
    return result


def _print_ratio(runs: list[dict[str, Any]], key: str, what: str) -> float | None:
    """Print median(2 workers) / median(1 worker) of the rate ``key`` and the per-pair ratios."""
    rates = {n: [r[key] for r in runs if r["workers"] == n and r.get(key)] for n in (1, 2)}
    if not rates[1] or not rates[2]:
        return None
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(rates[1], rates[2], strict=False))
    print(f"{what}, median: 1 worker {one:,.0f}, 2 workers {two:,.0f}, ratio {two / one:.3f} (runs {pairs})")
    return two / one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=150_000, help="total spans to generate (default 150000)")
    p.add_argument("--repeat", type=int, default=1, help="alternating 1-worker / 2-worker runs (default 1)")
    p.add_argument("--partitions", type=int, default=8, help="partitions of every topic (default 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dsn", default=None,
                   help="a ClickHouse server (http://user:pass@host:8123); default: a store-server per run")  # fmt: skip
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data dirs, logs)")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    from bench.generate import generate
    from stream.demo.broker import LocalBroker
    from stream.topics import ensure_topics

    worker_env = parse_worker_env(args.worker_env, DEFAULT_WORKER_ENV)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tracejudge-scaleout-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(uptime())
    t = time.perf_counter()
    corpus = generate(args.spans, seed=args.seed)
    print(f"input: {corpus.traces:,} messages (1 trace each, keyed by trace id), {corpus.spans:,} spans, "
          f"{corpus.bytes / 1e6:,.1f} MB (generated in {time.perf_counter() - t:.1f}s)")  # fmt: skip
    print(f"store: {'ClickHouse server ' + args.dsn.split('@')[-1] if args.dsn else 'tracejudge store-server (chDB behind the HTTP interface), fresh per run'}")
    print(f"worker settings: {' '.join(f'{k}={v}' for k, v in sorted(worker_env.items()))}")
    runs: list[dict[str, Any]] = []
    try:
        with LocalBroker(work / "broker") as broker:
            topic = f"bench.scaleout.{uuid.uuid4().hex[:8]}"
            asyncio.run(ensure_topics(broker.bootstrap, {topic: args.partitions}))
            secs = asyncio.run(produce(broker.bootstrap, topic, corpus.messages))
            print(f"produced to {topic} ({args.partitions} partitions) in {secs:.1f}s", flush=True)
            spans = corpus.spans
            corpus.messages = []
            broker_pid = broker._proc.pid if broker._proc else 0  # noqa: SLF001 - CPU accounting only
            for i in range(args.repeat):
                for n in (1, 2):
                    d = work / f"run-{i}-{n}w"
                    r = run_once(n, broker.bootstrap, topic, args.partitions, spans, d, broker_pid, worker_env,
                                 args.dsn, args.timeout)  # fmt: skip
                    r["repeat"] = i
                    runs.append(r)
                    if "spans_per_s" in r:
                        print(f"run {i + 1}/{args.repeat} {n} worker{'s' if n > 1 else ' '}: {r['spans_per_s']:>8,.0f} spans/s "
                              f"({r['spans']:,} spans in {r['seconds']:.1f}s; before the window {r['before_window_spans']:,} "
                              f"spans, start-up + join {r['startup_s']:.1f}s; per worker {r['per_worker_spans']}; "
                              f"partitions {[len(o) for o in r['owned']]}; log warnings {sum(r['log_warnings'].values())};"
                              f" steady state {r['spans_per_s_steady'] or 0:,.0f} spans/s)",
                              flush=True)  # fmt: skip
                        others = r["machine_busy_cores"] - sum(r["cpu_cores"].values())
                        print(f"      CPU cores over the window: {r['cpu_line']}; machine busy {r['machine_busy_cores']:.2f}, "
                              f"other processes {max(0.0, others):.2f}{'  (shared machine: not comparable)' if others > 0.3 else ''}; "
                              f"{r['spans_per_cpu_s']:,.0f} spans per CPU-second of workers + store + broker; "
                              f"{r['spans_per_insert'] or 0:,.0f} spans per insert")
                    else:
                        print(f"run {i + 1}/{args.repeat} {n} workers: FAILED: {r.get('error')}", flush=True)
                    for ln in r["log_first"]:
                        print(f"      log: {ln}")
                    if not args.keep:
                        shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    rates = {n: [r["spans_per_s"] for r in runs if r["workers"] == n and "spans_per_s" in r] for n in (1, 2)}
    med = {n: statistics.median(v) if v else None for n, v in rates.items()}
    print()
    print(f"{'':16}{'1 worker spans/s':>18}{'2 workers spans/s':>19}{'2/1':>8}")
    for i in range(args.repeat):
        one = next((r.get("spans_per_s") for r in runs if r["repeat"] == i and r["workers"] == 1), None)
        two = next((r.get("spans_per_s") for r in runs if r["repeat"] == i and r["workers"] == 2), None)
        ratio = f"{two / one:.2f}" if one and two else "-"
        print(f"{'run ' + str(i + 1):16}{one or 0:>18,.0f}{two or 0:>19,.0f}{ratio:>8}")
    ratio = med[2] / med[1] if med[1] and med[2] else None
    print(f"{'median':16}{med[1] or 0:>18,.0f}{med[2] or 0:>19,.0f}{(f'{ratio:.2f}' if ratio else '-'):>8}"
          f"   (target >= {TARGET})")  # fmt: skip
    ratio_low = _print_ratio(runs, "spans_per_s_excl_inflight", "not counting the spans in flight when the window"
                             " opened (decoded, not yet stored: part of their CPU came before it)")  # fmt: skip
    ratio_steady = _print_ratio(runs, "spans_per_s_steady", "steady state (slope of stored spans between 10 % and"
                                " 90 % of the window's spans)")  # fmt: skip
    eff = {n: [r["spans_per_cpu_s"] for r in runs if r["workers"] == n and "spans_per_cpu_s" in r] for n in (1, 2)}
    if eff[1] and eff[2]:
        print(f"spans per CPU-second (workers + store + broker), median: 1 worker {statistics.median(eff[1]):,.0f}, "
              f"2 workers {statistics.median(eff[2]):,.0f} (equal = no scale-out overhead; the ratio is then "
              "bounded by the cores the run could get)")  # fmt: skip
    for n in (1, 2):
        cores = [r["cpu_cores"] for r in runs if r["workers"] == n and "cpu_cores" in r]
        if cores:
            keys = cores[0].keys()
            print(f"median CPU, {n} worker{'s' if n > 1 else ''}: " + ", ".join(
                f"{k} {statistics.median(c.get(k, 0.0) for c in cores):.2f}" for k in keys) + " cores")  # fmt: skip
    print(uptime())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"scaleout-{stamp}.json"
    text = json.dumps({"timestamp": stamp, "cpus": os.cpu_count(), "spans": spans, "partitions": args.partitions,
                       "worker_env": worker_env, "runs": runs, "median": med, "ratio": ratio,
                       "ratio_excl_inflight": ratio_low, "ratio_steady": ratio_steady}, indent=1)  # fmt: skip
    for path in (out, args.json):
        if path is not None:
            path.write_text(text)
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
