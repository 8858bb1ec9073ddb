"""Judge stage throughput: the judging runtime against a provider with fixed latency.

    python bench/judge.py                          # 2000 traces, 200 ms provider, defaults below
    python bench/judge.py --traces 4000 --latency 0.2 --max-in-flight 128 --batch 256

In one process: the real :class:`stream.judging.JudgeService` (cascade, budget book, cache
lookups, ledger and verdict writes into a fresh embedded ClickHouse) judging to_judge envelopes
built from the benchmark corpus (`bench/generate.py`), against the demo's simulated provider (own process) over
real HTTP (`stream/demo/sim_provider.py`, OpenAI protocol) answering after ``--latency`` seconds.
No Kafka here: this isolates the judge stage (the worker feeds it from ``take_events`` batches of
``batch_max_messages``). Prints provider calls/s, verdicts/s and batch latency; nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate  # noqa: E402
from judges.config import parse_judging_config  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from schemas.model import CompletionReason, Trace  # noqa: E402
from stream import judge_envelope  # noqa: E402
from stream.dlq import InMessage  # noqa: E402
from stream.judge_sink import JudgeSink  # noqa: E402
from stream.judging import JudgeService, build_providers  # noqa: E402
from stream.store import ClickHouseStore  # noqa: E402


def envelopes(n: int) -> list[InMessage]:
    corpus = generate(n * 50, seed=7)
    out = []
    for i, (key, value) in enumerate(corpus.messages[:n]):
        spans = decode_message(value)
        trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)
        meta = {"decision": {"class": "suspected_failure", "rule": "bench", "stratum": "suspected_failure", "p": 1.0,
                             "policy_version": "bench"}, "failed_gates": [], "signals": []}  # fmt: skip
        out.append(InMessage("traces.to_judge", i % 4, i, key, judge_envelope.encode(trace, meta)))
    return out


async def run(args: argparse.Namespace, store: ClickHouseStore, url: str) -> dict[str, float]:
    cfg = parse_judging_config({
        "providers": [{"name": "sim", "type": "openai", "base_url": url + "/v1", "api_key_env": "BENCH_KEY",
                       "price_in_per_1m": 0.15, "price_out_per_1m": 0.6, "timeout_s": 30,
                       "max_connections": args.max_in_flight}],
        "tiers": {"cheap": {"provider": "sim", "model": "sim-cheap"}},
        "judges": ["task_completion"], "max_in_flight": args.max_in_flight, "batch_max_messages": args.batch,
        "cache": False,
    })  # fmt: skip
    sent: list = []

    async def send(records):  # noqa: ANN001, ANN202
        sent.extend(records)

    svc = JudgeService(cfg, JudgeSink(store), send, topic="traces.to_judge", dlq_topic="dlq", partitions_total=4,
                       providers=build_providers(cfg, env={"BENCH_KEY": "x"}))  # fmt: skip
    await svc.on_assigned(range(4))
    msgs = envelopes(args.traces)
    batch_s = []
    t0 = time.perf_counter()
    for i in range(0, len(msgs), args.batch):
        b0 = time.perf_counter()
        await svc.handle_batch(msgs[i : i + args.batch])
        batch_s.append(time.perf_counter() - b0)
    elapsed = time.perf_counter() - t0
    calls = svc.runner.stats["calls"]
    return {"elapsed_s": elapsed, "calls": calls, "calls_per_s": calls / elapsed,
            "verdicts_per_s": svc.counters["verdicts"] / elapsed, "batch_p50_s": statistics.median(batch_s),
            "batch_max_s": max(batch_s), "dead_lettered": len(sent)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--max-in-flight", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    # the provider runs in its own process: it must not compete with the judge stage for the GIL
    code = ("import sys, time; from stream.demo.sim_provider import SimulatedProvider as S; "
            f"s = S(latency_s={args.latency}, uncertain_rate=0.0); s.start(); print(s.url, flush=True); "
            "sys.stdin.read()")  # fmt: skip
    sim = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           cwd=str(Path(__file__).resolve().parent.parent))  # fmt: skip
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as d:
            store = ClickHouseStore(f"chdb://{os.path.join(d, 'ch')}", "bench")
            store.migrate()
            r = asyncio.run(run(args, store, url))
            store.close()
    finally:
        sim.kill()
    print(f"judge stage: {args.traces} traces, provider latency {args.latency * 1000:.0f} ms, "
          f"max_in_flight {args.max_in_flight}, batch {args.batch}")  # fmt: skip
    print(f"  {r['calls']} provider calls in {r['elapsed_s']:.1f} s = {r['calls_per_s']:.0f} calls/s "
          f"({r['verdicts_per_s']:.0f} verdicts/s); batch p50 {r['batch_p50_s']:.2f} s, max {r['batch_max_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
