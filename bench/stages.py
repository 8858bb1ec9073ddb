"""CPU per span of each stage of the worker's hot path, in one process (no Kafka, no ClickHouse).

    python bench/stages.py [--spans 60000] [--seed 5] [--repeat 3] [--json FILE]
    python bench/stages.py --encoding otlp_json [--json-reference]

Generates the ingest benchmark's input (:mod:`bench.generate`), then times, with process CPU time,
the stages the worker's main thread runs for every span: ``parse`` (the protobuf message),
``decode+normalize`` (spans with GenAI fields; for ``--encoding otlp_json`` the whole of
``schemas.decode.decode``, which reads OTLP/JSON straight into spans, so ``parse`` is 0 — or, with
``--json-reference``, ``json_format`` into a request, then ``decode_request``), ``span_row``, ``assembly.add`` and ``expire``
(:class:`stream.assembly.TraceAssembler`), ``decide`` (the default policy's gates, the semantic
miner and sampling) and ``trace_row``. It prints µs per span for each, the median over
``--repeat`` rounds. What it leaves out: Faust and aiokafka, the ClickHouse client's
serialization (on the store thread) and producing to ``traces.to_judge``; ``bench/ingest.py``
measures the whole worker. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from bench.generate import generate  # noqa: E402
from schemas.decode import decode, decode_request, parse_message  # noqa: E402
from schemas.otlp_json import to_otlp_json  # noqa: E402
from stream.assembly import TraceAssembler  # noqa: E402
from stream.decide import TraceDecider  # noqa: E402
from stream.policy import load_policy  # noqa: E402
from stream.rows import span_row, trace_row  # noqa: E402
from stream.worker import GC_THRESHOLDS  # noqa: E402

STAGES = ("parse", "decode+normalize", "span_row", "assembly.add", "expire", "decide", "trace_row")


def one_round(messages: list[bytes], straight: bool = False) -> tuple[int, dict[str, float]]:
    """(spans, CPU seconds per stage) for one pass over ``messages``; ``straight``: decode them as
    the worker does OTLP/JSON, parse and decode in one step."""
    cpu: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    def timed(stage: str, work: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        out = work()
        cpu[stage] += time.process_time() - t0
        return out

    if straight:
        spans = timed("decode+normalize", lambda: [decode(m)[0] for m in messages])
    else:
        requests = timed("parse", lambda: [parse_message(m) for m in messages])
        spans = timed("decode+normalize", lambda: [decode_request(r) for r in requests])
    resources: dict[int, Any] = {}
    timed("span_row", lambda: [span_row(s, "t", 0, i, 0, False, resources) for i, ss in enumerate(spans) for s in ss])
    assembler = TraceAssembler(2, 600, 10**6)
    timed("assembly.add", lambda: [assembler.add(ss, ("t", 0), i, 1) for i, ss in enumerate(spans)])
    done = timed("expire", lambda: assembler.expire(10**12))
    decider = TraceDecider(load_policy(None))
    decisions = timed("decide", lambda: [decider.decide(c.trace) for c in done])
    timed("trace_row", lambda: [trace_row(c.trace, "t", 0, 1, 0, d) for c, d in zip(done, decisions, strict=True)])
    return sum(map(len, spans)), cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--encoding", choices=("otlp_proto", "otlp_json"), default="otlp_proto")
    p.add_argument("--json-reference", action="store_true",
                   help="OTLP/JSON through json_format and decode_request (the path before otlp_json_spans)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker runs (stream/worker.py)
    corpus = generate(args.spans, seed=args.seed)
    messages = [value for _, value in corpus.messages]
    if args.encoding == "otlp_json":
        messages = [to_otlp_json(ExportTraceServiceRequest.FromString(m)) for m in messages]
    straight = args.encoding == "otlp_json" and not args.json_reference
    rounds = []
    for _ in range(args.repeat):
        n, cpu = one_round(messages, straight)
        rounds.append({k: 1e6 * v / n for k, v in cpu.items()})
        gc.collect()
    median = {k: statistics.median(r[k] for r in rounds) for k in STAGES}
    total = statistics.median(sum(r.values()) for r in rounds)
    print(f"CPU per span, median of {args.repeat} rounds over {n:,} spans ({len(messages):,} {args.encoding} messages"
          f"{', json_format path' if args.json_reference else ''})")  # fmt: skip
    for k in STAGES:
        print(f"  {k:18s} {median[k]:6.1f} µs")
    print(f"  {'total':18s} {total:6.1f} µs  (~{1e6 / total:,.0f} spans/s on one core for these stages alone)")
    out = {"spans": n, "messages": len(messages), "encoding": args.encoding, "json_reference": args.json_reference,
           "seed": args.seed, "repeat": args.repeat,
           "us_per_span": median, "total_us_per_span": total, "rounds": rounds}  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
