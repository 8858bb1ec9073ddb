"""ClickHouse's CPU per stored span by insert size: what `insert_chunk_spans` buys.

    python bench/store_cost.py [--spans 60000] [--chunks 1000,5000,15000] [--repeat 3] [--json FILE]
    python bench/store_cost.py --chunks 10000 --spans 100000 --compare optimize_on_insert=1

The ingest benchmark's input (:mod:`bench.generate`) is decoded and turned into ``spans`` rows
once (:func:`stream.rows.span_row`); then, for each chunk size, a fresh ``tracejudge
store-server`` (one chDB engine, the store of the scale-out benchmark) gets the rows in inserts of
that many spans through :class:`stream.store.ClickHouseStore` — the worker's own insert, with its
deduplication token — and the server process's CPU (utime + stime, all threads) is read from
``/proc``: while the inserts run, and then until ``system.merges`` has been empty for 2 s (the
background merges those parts cause), in total and by server thread name. Figures are µs of
server CPU per span, medians over ``--repeat`` rounds (chunk sizes interleaved). The client's own
serialization is not in them. By thread, a thread that ended during the run is missing (``/proc``
forgets it), so those figures can sum to less than the total. ``--compare NAME=VALUE`` adds, for
every chunk size, runs whose ``spans`` inserts also carry that ClickHouse setting (interleaved with
the worker's own settings, :data:`stream.store.TABLE_INSERT_SETTINGS`), e.g. ``optimize_on_insert=1``
to see what the worker saves by turning it off.
A benchmark: it asserts nothing; quote medians (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.harness import thread_cpu_seconds, tree_cpu_seconds  # noqa: E402
from schemas.decode import decode_request, parse_message  # noqa: E402
from stream.demo.store_server_process import StoreServerProcess  # noqa: E402
from stream.rows import SPAN_COLUMNS, span_row  # noqa: E402
from stream.store import ClickHouseStore  # noqa: E402


def build_rows(spans: int) -> list[tuple[Any, ...]]:
    corpus = generate(spans, seed=3, start_ns=1_700_000_000_000_000_000)
    rows = []
    for offset, (_, value) in enumerate(corpus.messages):
        rows.extend(span_row(s, "bench", 0, offset, 0, False) for s in decode_request(parse_message(value)))
    return rows


def one_run(rows: list[tuple[Any, ...]], chunk: int, work: Path, extra: dict[str, str] | None = None) -> dict[str, float]:
    """Server CPU µs per span for storing ``rows`` in inserts of ``chunk``: inserts, then merges.
    ``extra``: settings added to the worker's own for these ``spans`` inserts."""
    server = StoreServerProcess(work, log_level="WARNING")
    store = ClickHouseStore(server.dsn, table_insert_settings={"spans": extra or {}})
    try:
        store.migrate()
        pid = server.proc.pid
        cpu0, t0, threads0 = tree_cpu_seconds(pid), time.monotonic(), thread_cpu_seconds(pid)
        for k in range(0, len(rows), chunk):
            store.insert("spans", rows[k : k + chunk], SPAN_COLUMNS, f"bench-{k}")
        cpu1, t1 = tree_cpu_seconds(pid), time.monotonic()
        quiet_since = None
        while quiet_since is None or time.monotonic() - quiet_since < 2.0:
            busy = store.query("SELECT count() FROM system.merges")[1][0][0]
            quiet_since = None if busy else (quiet_since or time.monotonic())
            time.sleep(0.2)
        cpu2, threads2 = tree_cpu_seconds(pid), thread_cpu_seconds(pid)
        parts = store.query(f"SELECT count() FROM system.parts WHERE active AND database = '{store.database}' "
                            "AND table = 'spans'")[1][0][0]  # fmt: skip
        stored = store.query(f"SELECT count() FROM {store.database}.spans FINAL")[1][0][0]
        n = len(rows)
        by_thread = {name: 1e6 * (sec - threads0.get(name, 0.0)) / n for name, sec in threads2.items()}
        return {"rows_stored": stored, "insert_us": 1e6 * (cpu1 - cpu0) / n, "merge_us": 1e6 * (cpu2 - cpu1) / n,
                "total_us": 1e6 * (cpu2 - cpu0) / n, "insert_wall_s": t1 - t0, "parts": parts,
                "by_thread_us": {k: v for k, v in by_thread.items() if v >= 0.05}}  # fmt: skip
    finally:
        store.close()
        server.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=60_000)
    p.add_argument("--chunks", default="1000,5000,15000", help="insert sizes in spans, comma-separated")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--compare", default=None, metavar="NAME=VALUE", help="also run with this insert setting")
    args = p.parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",")]
    variants: dict[str, dict[str, str]] = {"worker": {}}
    if args.compare:
        name, _, value = args.compare.partition("=")
        variants[args.compare] = {name.strip(): value.strip()}
    cases = [(c, v) for c in chunks for v in variants]
    rows = build_rows(args.spans)
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="tracejudge-store-cost-") as tmp:
        for r in range(args.repeat):
            for k, (c, v) in enumerate(cases):
                runs[c, v].append(one_run(rows, c, Path(tmp) / f"{c}-{k}-{r}", variants[v]))
    print(f"store-server CPU per span ({len(rows):,} spans, median of {args.repeat}): inserts + the merges they cause")
    print(f"  {'spans/insert':>12s} {'insert µs':>10s} {'merges µs':>10s} {'total µs':>9s} {'parts left':>10s}  settings")
    medians: dict[str, dict[str, Any]] = {}
    for c, v in cases:
        m = {k: statistics.median(run[k] for run in runs[c, v]) for k in ("insert_us", "merge_us", "total_us", "parts")}
        medians[f"{c}/{v}"] = m
        print(f"  {c:12,d} {m['insert_us']:10.1f} {m['merge_us']:10.1f} {m['total_us']:9.1f} {m['parts']:10.0f}  {v}")
    print("  by server thread, µs per span (inserts + merges; `python` = the HTTP front and the engine calls it makes):")
    for c, v in cases:
        names = sorted({k for run in runs[c, v] for k in run["by_thread_us"]})
        med = {k: statistics.median(run["by_thread_us"].get(k, 0.0) for run in runs[c, v]) for k in names}
        medians[f"{c}/{v}"]["by_thread_us"] = med
        print(f"  {c:12,d} " + ", ".join(f"{k} {x:.1f}" for k, x in sorted(med.items(), key=lambda kv: -kv[1]) if x >= 0.5)
              + f"  {v}")
    out = {"spans": len(rows), "repeat": args.repeat, "medians": medians,
           "runs": {f"{c}/{v}": rs for (c, v), rs in runs.items()}}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
