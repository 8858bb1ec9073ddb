"""The floor's own scale-out: 1 vs 2 floor processes on one store — what this host allows any worker.

    python bench/scaleout_floor.py [--spans N] [--repeat K] [--partitions P] [--dsn http://...]

Item 2 of the Performance table compares 1 and 2 ``tracejudge worker`` processes
(:mod:`bench.scaleout`). On a 2-core host the store (a ``tracejudge store-server``) and the broker
share the cores with the workers, so the ratio also depends on what they cost. This benchmark
runs the same comparison with the ingest benchmark's floor (:mod:`bench.floor`: aiokafka
``getmany`` + OTLP decode + batched inserts, no logic) in place of the workers: the least any
consumer must do per span. If the floor itself scales by less than the target, the host, not the
worker, sets the bound.

1. Generates and produces the scale-out benchmark's input (:mod:`bench.generate`, one message per
   trace keyed by trace id) once to a ``--partitions``-partition topic on a local tansu broker.
2. Each run gets a fresh ``tracejudge store-server`` (or with ``--dsn`` a new database on that
   ClickHouse server, dropped after the run; tables created first) and starts 1 (resp. 2)
   floor processes, each reading its share of the partitions (``0, 2, 4, ...`` and ``1, 3, 5, ...``)
   from the start until it has their messages, storing into that one store. They set up (connect,
   assign, read the end offsets), say so, and start reading together.
3. Rate: all spans stored / (last insert acknowledged - first message fetched) over all processes,
   and the steady-state rate (:func:`bench.scaleout.steady_rate`: slope of the stored count
   between 10 % and 90 % of the spans, from the processes' insert times merged). CPU: utime +
   stime of each floor process, the store server and the broker from the start signal until all
   have reported (``/proc``), in cores.
4. ``--repeat K`` alternates 1 and 2 processes K times and prints per-run and median rates and the
   ratios median(2) / median(1). Results: ``bench/results/scaleout-floor-<timestamp>.json``.

A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import shutil
import statistics
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

from bench.harness import CpuMeter, uptime  # noqa: E402
from bench.ingest import produce  # noqa: E402
from bench.scaleout import TARGET, steady_rate  # noqa: E402
from stream.demo.store_server_process import StoreServerProcess  # noqa: E402
from stream.store import ClickHouseStore  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
FLOOR = ROOT / "bench" / "floor.py"


def _merged_steps(results: list[dict[str, Any]], t0: float) -> list[tuple[float, int]]:
    """The processes' (time, spans stored so far) merged into one count over time since ``t0``."""
    events: list[tuple[float, int]] = []
    for r in results:
        before = 0
        for t, total in r["insert_steps"]:
            events.append((t - t0, total - before))
            before = total
    out, acc = [], 0
    for t, k in sorted(events):
        acc += k
        out.append((t, acc))
    return out


def messages_per_partition(keys: list[bytes], partitions: int) -> list[int]:
    """How many of the produced messages each partition holds: the producer's own partitioner on
    their keys. (Not the broker's end offsets: tansu's ListOffsets answered 3,550 for 3,629
    acknowledged messages here, while fetching went on past them.)"""
    from aiokafka.partitioner import DefaultPartitioner

    part, every = DefaultPartitioner(), list(range(partitions))
    counts = [0] * partitions
    for key in keys:
        counts[part(key, every, every)] += 1
    return counts


def _line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The process's next output line, or "" once ``deadline`` (time.monotonic) has passed."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return ""
    return proc.stdout.readline().strip()


def run_once(n: int, bootstrap: str, topic: str, counts: list[int], work: Path, broker_pid: int,
             timeout: float, dsn: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One run of ``n`` floor processes; ``dsn``: a ClickHouse server, a fresh database on it
    (dropped after), else a fresh store-server."""
    partitions = len(counts)
    work.mkdir(parents=True, exist_ok=True)
    server = StoreServerProcess(work / "store", log_level="WARNING") if dsn is None else None
    store_dsn = server.dsn if server is not None else dsn
    database = "tracejudge" if server is not None else f"bench_scaleout_floor_{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[str]] = []
    try:
        store = ClickHouseStore(store_dsn, database)
        store.migrate()
        store.close()
        shares = [list(range(partitions))[i::n] for i in range(n)]
        for i, share in enumerate(shares):
            cmd = [sys.executable, str(FLOOR), "--bootstrap", bootstrap, "--topic", topic, "--partitions",
                   str(partitions), "--messages", str(sum(counts[q] for q in share)), "--dsn", store_dsn,
                   "--database", database, "--no-migrate", "--barrier", "--partition-list", ",".join(map(str, share))]  # fmt: skip
            log = open(work / f"floor-{i}.log", "wb")  # noqa: SIM115 - closed with the process below
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          text=True, cwd=str(ROOT)))  # fmt: skip
            log.close()
        deadline = time.monotonic() + timeout
        for i, p in enumerate(procs):
            if _line(p, deadline) != "ready":
                raise RuntimeError(f"floor-{i} did not start: {(work / f'floor-{i}.log').read_text()[-2000:]}")
        pids = {f"floor-{i}": p.pid for i, p in enumerate(procs)}
        if server is not None:
            pids["store-server"] = server.proc.pid
        pids["broker"] = broker_pid
        cpu = CpuMeter(pids)
        cpu.start()
        for p in procs:  # go
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        results = []
        for i, p in enumerate(procs):
            line = _line(p, deadline)  # the process's JSON line, once it has stored its share
            if not line:
                raise RuntimeError(f"floor-{i} failed or timed out: {(work / f'floor-{i}.log').read_text()[-2000:]}")
            results.append(json.loads(line))
        cpu.stop()
        store = ClickHouseStore(store_dsn, database)
        _, ((stored,),) = store.query(f"SELECT count() FROM {database}.spans")
        store.close()
    finally:
        for p in procs:
            if p.poll() is None and p.stdin is not None:
                try:
                    p.stdin.write("\n")  # done: exit
                    p.stdin.close()
                except OSError:
                    pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        if server is not None:
            server.stop()
        else:  # a failed run's database goes too
            try:
                store = ClickHouseStore(store_dsn, database)
                store.command(f"DROP DATABASE IF EXISTS {database} SYNC")
                store.close()
            except Exception as exc:  # noqa: BLE001 - report, and keep the run's own error
                print(f"could not drop database {database}: {exc}", file=sys.stderr)
    first, last = min(r["first"] for r in results), max(r["last"] for r in results)
    spans, secs = sum(r["spans"] for r in results), last - first
    return {
        "processes": n, "spans": spans, "seconds": secs, "spans_per_s": spans / secs,
        "spans_per_s_steady": steady_rate(_merged_steps(results, first)),
        "per_process": [{"spans": r["spans"], "seconds": r["seconds"], "inserts": r["inserts"]} for r in results],
        "rows_in_table": stored, "cpu_cores": {k: v / cpu.seconds for k, v in cpu.used.items()},
        "cpu_line": cpu.line(), "spans_per_cpu_s": spans / max(1e-9, cpu.machine_total()),
    }  # fmt: skip


def _ratio(runs: list[dict[str, Any]], key: str) -> tuple[float | None, float | None, float | None]:
    rates = {n: [r[key] for r in runs if r["processes"] == n and r.get(key)] for n in (1, 2)}
    if not rates[1] or not rates[2]:
        return None, None, None
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return one, two, two / one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=450_000, help="total spans to generate (default 450000, as the suite's scale-out)")
    p.add_argument("--repeat", type=int, default=3, help="alternating 1-process / 2-process runs (default 3)")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dsn", default=None,
                   help="a ClickHouse server (http://user:pass@host:8123), a fresh database per run; default: a store-server per run")
    p.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.partitions < 2 or args.repeat < 1:
        p.error("--partitions must be at least 2 (one share per process) and --repeat at least 1")

    from bench.generate import generate
    from stream.demo.broker import LocalBroker
    from stream.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="tracejudge-scaleout-floor-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(uptime())
    corpus = generate(args.spans, seed=args.seed)
    store = f"ClickHouse server {args.dsn.split('@')[-1]}, a fresh database" if args.dsn else "a fresh tracejudge store-server"
    print(f"input: {corpus.traces:,} messages, {corpus.spans:,} spans, {corpus.bytes / 1e6:,.1f} MB; store: {store} per run; "
          "floor: bench/floor.py (consume + decode + insert, no logic)")  # fmt: skip
    runs: list[dict[str, Any]] = []
    try:
        with LocalBroker(work / "broker") as broker:
            topic = f"bench.scaleout-floor.{uuid.uuid4().hex[:8]}"
            asyncio.run(ensure_topics(broker.bootstrap, {topic: args.partitions}))
            asyncio.run(produce(broker.bootstrap, topic, corpus.messages))
            counts = messages_per_partition([k for k, _ in corpus.messages], args.partitions)
            corpus.messages = []
            broker_pid = broker._proc.pid if broker._proc else 0  # noqa: SLF001 - CPU accounting only
            for i in range(args.repeat):
                for n in (1, 2):
                    d = work / f"run-{i}-{n}p"
                    r = run_once(n, broker.bootstrap, topic, counts, d, broker_pid, args.timeout, args.dsn)
                    r["repeat"] = i
                    runs.append(r)
                    print(f"run {i + 1}/{args.repeat} {n} floor process{'es' if n > 1 else '  '}: "
                          f"{r['spans_per_s']:>8,.0f} spans/s ({r['spans']:,} spans in {r['seconds']:.1f}s; steady "
                          f"{r['spans_per_s_steady'] or 0:,.0f}; per process "
                          f"{[(q['spans'], round(q['seconds'], 1)) for q in r['per_process']]}; in the table "
                          f"{r['rows_in_table']:,})\n      CPU cores: {r['cpu_line']}; "
                          f"{r['spans_per_cpu_s']:,.0f} spans per CPU-second", flush=True)  # fmt: skip
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    out: dict[str, Any] = {"timestamp": stamp, "cpus": os.cpu_count(), "spans": args.spans,
                           "partitions": args.partitions, "runs": runs}  # fmt: skip
    for key, what in (("spans_per_s", "whole window"), ("spans_per_s_steady", "steady state")):
        one, two, ratio = _ratio(runs, key)
        out[f"ratio_{key}"], out[f"median_{key}"] = ratio, {"1": one, "2": two}
        if ratio is not None:
            pairs = ", ".join(f"{b[key] / a[key]:.2f}" for a, b in zip(runs[::2], runs[1::2], strict=False)
                              if a.get(key) and b.get(key))  # fmt: skip
            print(f"floor, {what}, median: 1 process {one:,.0f}, 2 processes {two:,.0f} spans/s, ratio {ratio:.3f} "
                  f"(runs {pairs}; the worker's target is >= {TARGET})")  # fmt: skip
    for n in (1, 2):
        cores = [r["cpu_cores"] for r in runs if r["processes"] == n]
        keys = sorted({k for c in cores for k in c})
        print(f"median CPU, {n} process{'es' if n > 1 else ''}: "
              + ", ".join(f"{k} {statistics.median(c.get(k, 0.0) for c in cores):.2f}" for k in keys) + " cores")
    print(uptime())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    for path in (RESULTS_DIR / f"scaleout-floor-{stamp}.json", args.json):
        if path is not None:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
