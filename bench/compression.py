"""What ``producer_compression`` costs and saves: aiokafka's own codec functions on what the worker
produces, from the benchmark corpus (`bench/generate.py`).

    python bench/compression.py                 # 200 to_judge envelopes, 2,000 per-trace OTLP messages
    python bench/compression.py --messages 500

Per codec: the compression ratio and the CPU time per message and per MB, on two inputs:
``traces.to_judge`` envelopes (JSON, ~80 KB each) and per-trace OTLP protobuf requests (what a
repartition record holds, ~55 KB each). Each message is compressed alone, as a record batch of one
record would be (batches of several records compress a little better). Median of 3 rounds.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import codec  # noqa: E402

from bench.generate import generate  # noqa: E402
from bench.judge import envelopes  # noqa: E402

CODECS: dict[str, Callable[[bytes], bytes]] = {
    "gzip (aiokafka's level 9)": codec.gzip_encode,
    "snappy": codec.snappy_encode,
    "lz4": codec.lz4_encode,
    "zstd": codec.zstd_encode,
}


def measure(values: list[bytes], encode: Callable[[bytes], bytes], rounds: int = 3) -> tuple[float, float]:
    """(ratio, median seconds for all of ``values``)."""
    times, out = [], 0
    for _ in range(rounds):
        start = time.process_time()
        out = sum(len(encode(v)) for v in values)
        times.append(time.process_time() - start)
    return sum(map(len, values)) / out, statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envelopes", type=int, default=200)
    p.add_argument("--messages", type=int, default=2000)
    args = p.parse_args(argv)
    inputs = {
        "to_judge envelopes": [v for _, v in envelopes(args.envelopes)],
        "per-trace OTLP requests": [v for _, v in generate(args.messages * 28, seed=3).messages[: args.messages]],
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for what, values in inputs.items():
        mb = sum(map(len, values)) / 1e6
        print(f"{what}: {len(values)} messages, {mb / len(values) * 1e6:,.0f} bytes each")
        print(f"    {'codec':<26} {'ratio':>6} {'µs / message':>13} {'ms CPU / MB':>12}")
        results[what] = {}
        for name, encode in CODECS.items():
            ratio, seconds = measure(values, encode)
            results[what][name] = {"ratio": ratio, "us_per_message": seconds / len(values) * 1e6,
                                   "ms_per_mb": seconds / mb * 1e3}  # fmt: skip
            print(f"    {name:<26} {ratio:>6.2f} {seconds / len(values) * 1e6:>13,.0f} {seconds / mb * 1e3:>12.2f}")
    return results


if __name__ == "__main__":
    main()
