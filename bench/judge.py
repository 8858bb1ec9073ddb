"""Judge stage throughput: the judging runtime against a provider with fixed latency.

    python bench/judge.py                          # 2000 traces, 200 ms provider, defaults below
    python bench/judge.py --traces 4000 --latency 0.2 --max-in-flight 128 --batch 256
    python bench/judge.py --kafka                  # inside a real `tracejudge worker` on tansu

The provider runs in its own process and speaks the OpenAI chat-completions protocol over real
HTTP, answering after ``--latency`` seconds: ``--provider lean`` (default, :mod:`bench.lean_provider`:
an asyncio server doing next to nothing per request — it stands in for a remote provider whose CPU
is not ours) or ``--provider sim`` (the demo's rule-based :mod:`stream.demo.sim_provider`, a thread
per connection). Its own CPU per request is reported.

Default mode, in one process: the real :class:`stream.judging.JudgeService` (cascade, budget book,
ledger and verdict writes into a fresh embedded ClickHouse) judging to_judge envelopes built from
the benchmark corpus (`bench/generate.py`), batch after batch like the worker's ``take_events``.

``--kafka``: the envelopes are produced to a ``traces.to_judge`` topic (4 partitions) on a local
tansu broker, then a real ``tracejudge worker`` with a judging file consumes it; its
``/api/status`` is polled every 0.1 s and calls/s is measured from the first stored verdict to the
last. Rebalances = the judge service's partition assignments after the first (must be 0).

Prints calls/s, verdicts/s, per-call latency (p50/p99, from the ledger: what the provider took plus
our own queueing), and CPU per call of the judge and of the provider; nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.harness import py_spy  # noqa: E402
from judges.config import parse_judging_config  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from schemas.model import CompletionReason, Trace  # noqa: E402
from stream import judge_envelope  # noqa: E402

JUDGE = "task_completion"
TICKS = os.sysconf("SC_CLK_TCK")


def envelopes(n: int) -> list[tuple[bytes, bytes]]:
    """(trace id, to_judge envelope) of ``n`` distinct benchmark traces."""
    spans = n * 20
    while len(corpus := generate(spans, seed=7).messages) < n:
        spans *= 2
    out = []
    for key, value in corpus[:n]:
        decoded = decode_message(value)
        trace = Trace.fast(trace_id=decoded[0].trace_id, spans=decoded, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
        meta = {"decision": {"class": "suspected_failure", "rule": "bench", "stratum": "suspected_failure", "p": 1.0,
                             "policy_version": "bench"}, "failed_gates": [], "signals": []}  # fmt: skip
        out.append((key, judge_envelope.encode(trace, meta)))
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def judging_doc(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    return {
        "providers": [{"name": "sim", "type": "openai", "base_url": base_url, "api_key_env": "BENCH_KEY",
                       "price_in_per_1m": 0.15, "price_out_per_1m": 0.6, "timeout_s": 30,
                       "max_connections": args.max_in_flight}],
        "tiers": {"cheap": {"provider": "sim", "model": "sim-cheap"}},
        "judges": [JUDGE], "max_in_flight": args.max_in_flight, "batch_max_messages": args.batch,
        "cache": False, "budget": {"global_usd": 1e6},
    }  # fmt: skip


def start_provider(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    if args.provider == "lean":
        label = parse_judging_config(judging_doc(args, "http://x/v1")).rubrics()[JUDGE].labels[0]
        cmd = [sys.executable, "-m", "bench.lean_provider", "--latency", str(args.latency), "--label", label]
    else:
        cmd = [sys.executable, "-c", "import sys; from stream.demo.sim_provider import SimulatedProvider as S; "
               f"s = S(latency_s={args.latency}, uncertain_rate=0.0); s.start(); print(s.base_url, flush=True); "
               "sys.stdin.read()"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# ---- in process ----------------------------------------------------------------------------------
async def run_inprocess(args: argparse.Namespace, base_url: str, store: Any) -> dict[str, Any]:
    from stream.dlq import InMessage
    from stream.judge_sink import JudgeSink
    from stream.judging import JudgeService, build_providers
    from stream.worker import tune_gc

    cfg = parse_judging_config(judging_doc(args, base_url))
    sent: list = []

    async def send(records):  # noqa: ANN001, ANN202
        sent.extend(records)

    svc = JudgeService(cfg, JudgeSink(store), send, topic="traces.to_judge", dlq_topic="dlq", partitions_total=4,
                       providers=build_providers(cfg, env={"BENCH_KEY": "x"}))  # fmt: skip
    await svc.on_assigned(range(4))
    msgs = [InMessage("traces.to_judge", i % 4, i, k, v) for i, (k, v) in enumerate(envelopes(args.traces))]
    tune_gc()  # as `tracejudge worker` does at start-up
    stalls: list[float] = []  # how late a 10 ms timer fires: what a consumer heartbeat would wait

    async def watch_loop() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - t - 0.01)

    watcher = asyncio.ensure_future(watch_loop())
    batch_s = []
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(msgs), args.batch):
        b0 = time.perf_counter()
        await svc.handle_batch(msgs[i : i + args.batch])
        batch_s.append(time.perf_counter() - b0)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    watcher.cancel()
    stalls.sort()
    await svc.flush_calls()
    return {"elapsed_s": elapsed, "calls": svc.runner.stats["calls"], "verdicts": svc.counters["verdicts"],
            "judge_cpu_s": cpu, "batch_p50_s": statistics.median(batch_s), "batch_max_s": max(batch_s),
            "dead_lettered": len(sent), "rebalances": None, "stall_p99_s": stalls[int(len(stalls) * 0.99)],
            "stall_max_s": stalls[-1]}  # fmt: skip


def latency_quantiles(query: Any) -> tuple[float, float]:
    rows = query("SELECT quantileExact(0.5)(latency_s), quantileExact(0.99)(latency_s) FROM {db}.judge_calls")
    return float(rows[0][0]), float(rows[0][1])


# ---- inside a real worker on Kafka -------------------------------------------------------------
def run_kafka(args: argparse.Namespace, base_url: str, work: Path) -> dict[str, Any]:
    import httpx
    import yaml

    from bench.ingest import produce
    from stream.demo.broker import LocalBroker, free_port
    from stream.topics import ensure_topics
    from stream.demo.run import WorkerProcess

    msgs = envelopes(args.traces)
    judging = work / "judging.yaml"
    judging.write_text(yaml.safe_dump(judging_doc(args, base_url)))
    with LocalBroker(work / "broker") as broker:
        topic = "bench.otlp"
        asyncio.run(ensure_topics(broker.bootstrap, {topic: 4, f"{topic}.to_judge": 4}))
        produce_s = asyncio.run(produce(broker.bootstrap, f"{topic}.to_judge", msgs))
        print(f"produced {len(msgs)} envelopes to {topic}.to_judge in {produce_s:.1f} s", flush=True)
        env = {
            "TRACEJUDGE_KAFKA_BOOTSTRAP": broker.bootstrap, "TRACEJUDGE_DATA_DIR": str(work / "data"),
            "TRACEJUDGE_INPUT_TOPIC": topic, "TRACEJUDGE_DLQ_TOPIC": f"{topic}.dlq",
            "TRACEJUDGE_REPARTITION_TOPIC": f"{topic}.by_trace", "TRACEJUDGE_JUDGE_TOPIC": f"{topic}.to_judge",
            "TRACEJUDGE_JUDGE_DLQ_TOPIC": f"{topic}.to_judge.dlq", "TRACEJUDGE_EVENTS_TOPIC": f"{topic}.events",
            "TRACEJUDGE_EVENTS_DLQ_TOPIC": f"{topic}.events.dlq", "TRACEJUDGE_CONSUMER_GROUP": "bench-judge",
            "TRACEJUDGE_JUDGING_FILE": str(judging), "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "10",
            "TRACEJUDGE_WEB_HOST": "127.0.0.1", "TRACEJUDGE_WEB_PORT": str(free_port()), "BENCH_KEY": "x",
            "TRACEJUDGE_LOG_LEVEL": "info",
        }  # fmt: skip
        worker = WorkerProcess(env, work / "worker.log")
        spy = None
        if args.profile:  # py-spy (not a project dependency) samples the worker for the whole run
            spy = subprocess.Popen([py_spy(), "record", "--pid", str(worker.proc.pid), "--rate", "100", "--format",
                                    "raw", "--output", args.profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        samples: list[tuple[float, int, int, float]] = []  # (t, calls, verdicts, worker cpu s)
        status: dict[str, Any] = {}
        try:
            deadline = time.perf_counter() + args.timeout
            while time.perf_counter() < deadline and worker.proc.poll() is None:
                try:
                    status = worker.status()["judging"] or {}
                except (httpx.HTTPError, ValueError, KeyError):
                    time.sleep(0.1)
                    continue
                calls, verdicts = status["runner"]["calls"], status["counters"]["verdicts"]
                samples.append((time.perf_counter(), calls, verdicts, cpu_s(worker.proc.pid)))
                if verdicts >= len(msgs):
                    break
                time.sleep(0.1)
            p50, p99 = latency_quantiles(lambda q: worker.sql(q.format(db="tracejudge")))
        finally:
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                spy.wait(30)
            worker.stop(timeout=60)
    log = (work / "worker.log").read_text(errors="replace")
    first = next(s for s in samples if s[2] > 0)
    last = samples[-1]
    # judge CPU per call in each third of the calls: flat unless a cost grows with what is stored
    marks = [first] + [next(s for s in samples if s[1] - first[1] >= (last[1] - first[1]) * k / 3) for k in (1, 2)]
    marks.append(last)
    thirds = [(b[3] - a[3]) / max(b[1] - a[1], 1) * 1000 for a, b in zip(marks, marks[1:])]
    return {"elapsed_s": last[0] - first[0], "calls": last[1] - first[1], "verdicts": last[2] - first[2],
            "verdicts_total": last[2], "judge_cpu_s": last[3] - first[3], "p50_s": p50, "p99_s": p99,
            "rebalances": status["counters"]["assignments"] - 1, "cpu_ms_per_call_thirds": thirds,
            "log_rebalance_lines": [ln[:160] for ln in log.splitlines() if "rebalanc" in ln.lower()],
            "log_errors": sum(" ERROR " in ln or "Traceback" in ln for ln in log.splitlines())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--max-in-flight", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--provider", choices=("lean", "sim"), default="lean")
    ap.add_argument("--kafka", action="store_true", help="measure inside a real worker consuming tansu")
    ap.add_argument("--profile", help="--kafka: write py-spy folded stacks of the worker to this file")
    ap.add_argument("--timeout", type=float, default=600.0, help="--kafka: give up after this many seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (JSON)")
    args = ap.parse_args()
    r, provider_cpu = measure(args)
    report(args, r, provider_cpu)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "mode": "kafka" if args.kafka else "in_process", "traces": args.traces, "latency_s": args.latency,
            "max_in_flight": args.max_in_flight, "batch": args.batch, "provider": args.provider,
            "calls_per_s": r["calls"] / r["elapsed_s"], "verdicts_per_s": r["verdicts"] / r["elapsed_s"],
            "judge_cpu_ms_per_call": r["judge_cpu_s"] / max(r["calls"], 1) * 1000,
            "provider_cpu_ms_per_call": provider_cpu / max(r["calls"], 1) * 1000,
            "rebalances": r.get("rebalances"), **{k: v for k, v in r.items() if isinstance(v, (int, float))},
        }, indent=1))  # fmt: skip


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    prov, base_url = start_provider(args)
    try:
        with tempfile.TemporaryDirectory() as d:
            p0 = cpu_s(prov.pid)
            if args.kafka:
                r = run_kafka(args, base_url, Path(d))
            else:
                from stream.store import ClickHouseStore

                store = ClickHouseStore(f"chdb://{os.path.join(d, 'ch')}", "bench")
                store.migrate()
                r = asyncio.run(run_inprocess(args, base_url, store))
                r["p50_s"], r["p99_s"] = latency_quantiles(lambda q: store.query(q.format(db="bench"))[1])
                store.close()
            provider_cpu = cpu_s(prov.pid) - p0
    finally:
        prov.kill()
    return r, provider_cpu


def report(args: argparse.Namespace, r: dict[str, Any], provider_cpu: float) -> None:
    where = "in a tansu-fed worker" if args.kafka else "in process"
    print(f"judge stage ({where}): {args.traces} traces, {args.provider} provider at {args.latency * 1000:.0f} ms, "
          f"max_in_flight {args.max_in_flight}, batch {args.batch}")  # fmt: skip
    print(f"  {r['calls']} provider calls in {r['elapsed_s']:.1f} s = {r['calls'] / r['elapsed_s']:.0f} calls/s "
          f"({r['verdicts'] / r['elapsed_s']:.0f} verdicts/s)")  # fmt: skip
    over = [(q - args.latency) * 1000 for q in (r["p50_s"], r["p99_s"])]
    print(f"  per-call latency p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms "
          f"(+{over[0]:.0f} / +{over[1]:.0f} ms over the provider's {args.latency * 1000:.0f} ms)")  # fmt: skip
    print(f"  CPU per call: judge {r['judge_cpu_s'] / max(r['calls'], 1) * 1000:.2f} ms, "
          f"provider {provider_cpu / max(r['calls'], 1) * 1000:.2f} ms (whole run); judge process busy "
          f"{r['judge_cpu_s'] / r['elapsed_s']:.0%} of the time, i.e. one full core would do "
          f"{r['calls'] / max(r['judge_cpu_s'], 1e-9):.0f} calls/s")  # fmt: skip
    if args.kafka:
        print(f"  rebalances after the initial assignment: {r['rebalances']} "
              f"(worker log: {len(r['log_rebalance_lines'])} lines mention a rebalance, {r['log_errors']} errors); "
              f"verdicts stored {r['verdicts_total']}")  # fmt: skip
        print("  judge CPU per call by third of the calls: "
              + ", ".join(f"{ms:.2f}" for ms in r["cpu_ms_per_call_thirds"]) + " ms")
        for ln in r["log_rebalance_lines"][:5]:
            print(f"    {ln}")
    else:
        print(f"  batch p50 {r['batch_p50_s']:.2f} s, max {r['batch_max_s']:.2f} s; event-loop stalls p99 "
              f"{r['stall_p99_s'] * 1000:.0f} ms, max {r['stall_max_s'] * 1000:.0f} ms; dead-lettered {r['dead_lettered']}")  # fmt: skip


if __name__ == "__main__":
    main()
