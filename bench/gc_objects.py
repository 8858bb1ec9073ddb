"""What the garbage collector has to walk per open span and per span row.

    python bench/gc_objects.py                 # 20k spans of the benchmark corpus
    python bench/gc_objects.py --spans 50000

Decodes generated traces (`bench/generate.py`) as the worker does, builds their ``spans`` rows,
runs one full collection (which untracks tuples holding only untracked objects) and counts what
``gc.get_objects()`` gained, by type: the objects a young collection walks for each span held in
an open trace, and for each row waiting for its insert. Each tracked object costs every
collection of its generation a visit, plus one per reference it holds (``gc.get_referents``).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from bench.generate import generate  # noqa: E402
from schemas.decode import decode_request  # noqa: E402
from stream.rows import span_row  # noqa: E402


def tracked_since(before: set[int]) -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects() if id(o) not in before]


def report(what: str, new: list[object], n: int) -> None:
    refs = sum(len(gc.get_referents(o)) for o in new)
    print(f"{what}: {len(new) / n:.2f} tracked objects each, {refs / n:.1f} references from them")
    for name, count in Counter(type(o).__name__ for o in new).most_common(8):
        print(f"    {name:<16} {count / n:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    corpus = generate(args.spans, seed=args.seed)
    requests = [ExportTraceServiceRequest.FromString(v) for _, v in corpus.messages]
    gc.collect()
    gc.disable()  # only the explicit collections below
    before = {id(o) for o in gc.get_objects()}
    spans = [s for r in requests for s in decode_request(r)]
    new = tracked_since(before)
    report(f"decoded span ({len(spans):,} spans)", new, len(spans))
    before = {id(o) for o in gc.get_objects()}
    rows = [span_row(s, "t", 0, i, 0, False) for i, s in enumerate(spans)]
    new = tracked_since(before)
    report(f"span row ({len(rows):,} rows)", new, len(rows))


if __name__ == "__main__":
    main()
