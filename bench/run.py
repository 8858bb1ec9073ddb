"""The whole benchmark suite in one run, and the README's Performance table from its results.

    python -m bench.run                 # = make bench: all six (and the floor's own scale-out), 40-55 minutes on a 2-core machine
    python -m bench.run --quick         # shorter runs (smaller inputs, 2-minute steady load): ~12 minutes
    python -m bench.run --only ingest,judge

Each benchmark runs as its own process, one after the other (they would skew each other's
figures on a small machine), and writes its JSON results; this script then prints one Markdown
table — figure, target, met or not — and writes it with every figure to
``bench/results/performance-<timestamp>.{md,json}``. Nothing is asserted: a benchmark reports.
The machines are shared and noisy: the figures are medians or ratios measured within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

Row = tuple[str, str, str, bool | None]  # (what, measured, target, met)


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if d is None:
            return None
        d = d.get(key) if isinstance(d, dict) else (d[key] if isinstance(d, list) and len(d) > key else None)
    return d


def _f(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


# ---- one function per benchmark: its command line and the rows it contributes --------------
def ingest_rows(r: dict[str, Any]) -> list[Row]:
    ratio = _get(r, "ratio", "median_full_over_median_floor")
    floor, full = _get(r, "floor", "median_spans_per_s"), _get(r, "full", "median_spans_per_s")
    runs = len(_get(r, "floor", "runs") or [])
    return [(
        "1. Throughput: full path / floor (spans/s)",
        f"{_f(full)} / {_f(floor)} = **{_f(ratio, '.2f')}** (median of {runs})", "≥ 0.70",
        None if ratio is None else ratio >= 0.7,
    )]  # fmt: skip


def scaleout_rows(r: dict[str, Any]) -> list[Row]:
    ratio = r.get("ratio")
    med = r.get("median") or {}
    one, two = med.get("1"), med.get("2")
    low = r.get("ratio_excl_inflight")  # a lower bound: bench/scaleout.py, step 3
    steady = r.get("ratio_steady")  # the window's middle 80 %: bench/scaleout.py, step 3
    met = None if ratio is None else ratio >= 1.6 and (steady is None or steady >= 1.6)
    return [(
        "2. Scale-out: 2 workers / 1 worker (spans/s, shared store-server)",
        f"{_f(two)} / {_f(one)} = **{_f(ratio, '.2f')}**"
        + (f"; steady state {_f(steady, '.2f')}" if steady else "")
        + (f"; {_f(low, '.2f')} without the spans in flight when the window opened" if low else ""),
        "≥ 1.6", met,
    )]  # fmt: skip


def scaleout_floor_rows(r: dict[str, Any]) -> list[Row]:
    """Context for row 2, no target of its own: the same 1-vs-2 comparison with the floor (no
    logic) in place of the workers, i.e. what the host's cores allow any consumer here."""
    one, two = _get(r, "median_spans_per_s", "1"), _get(r, "median_spans_per_s", "2")
    ratio, steady = r.get("ratio_spans_per_s"), r.get("ratio_spans_per_s_steady")
    return [(
        "2. Scale-out of the floor itself: 2 / 1 floor processes (no logic, same store-server and broker)",
        f"{_f(two)} / {_f(one)} = **{_f(ratio, '.2f')}**" + (f"; steady state {_f(steady, '.2f')}" if steady else ""),
        "— (the host's bound for row 2)", None,
    )]  # fmt: skip


def memory_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    o, s = r.get("open"), r.get("steady")
    if o:
        rows.append((
            f"3. Memory: RSS per open trace / its raw OTLP bytes ({o['open_traces']:,} open traces)",
            f"{o['bytes_per_open_trace'] / 1024:,.1f} KB / {o['raw_bytes_per_open_trace'] / 1024:,.1f} KB = "
            f"**{o['ratio']:.2f}x**; peak RSS {o['peak_rss_mb']:,.0f} MB", "≤ 3x", o["ratio"] <= 3.0,
        ))  # fmt: skip
    if s:
        slope = s.get("second_half_slope_mb_per_min")
        rows.append((
            f"3. Memory: RSS at steady load ({s['minutes']:g} min, {s['rate_traces_per_s']:g} traces/s)",
            f"{_f(s.get('rss_second_half_first_mb'))} → {_f(s.get('rss_end_mb'))} MB over the second half, "
            f"slope **{_f(slope, '+.1f')} MB/min**", "flat (slope ≤ 1% of RSS per min)",
            None if slope is None else abs(slope) <= 0.01 * (s.get("rss_end_mb") or 1),
        ))  # fmt: skip
    return rows


def latency_rows(r: dict[str, Any]) -> list[Row]:
    fig = r.get("figures") or {}
    a, b = fig.get("a") or {}, fig.get("b_beyond_provider") or fig.get("b") or {}
    provider = _get(r, "args", "latency") or "0.2"
    return [
        ("4. Latency: trace completion → `traces` row",
         f"p50 {_f(a.get('p50'), '.2f')} s, p99 **{_f(a.get('p99'), '.2f')} s** (n={_f(a.get('n'))})", "—", None),
        (f"4. Latency: trace completion → verdict row, beyond the provider's {provider} s",
         f"p50 {_f(b.get('p50'), '.2f')} s, p99 **{_f(b.get('p99'), '.2f')} s** (n={_f(b.get('n'))})", "p99 ≤ 2 s",
         None if b.get("p99") is None else b["p99"] <= 2.0),
    ]  # fmt: skip


def judge_rows(r: dict[str, Any]) -> list[Row]:
    rate = r.get("calls_per_s")
    rebalances = r.get("rebalances")
    met = None if rate is None else rate >= 200 and (rebalances in (None, 0))
    return [(
        f"5. Judge stage: provider calls/s per worker, 200 ms provider ({'a worker fed by Kafka' if r.get('mode') == 'kafka' else 'in process'})",
        f"**{_f(rate)} calls/s**" + (f", rebalances {rebalances}" if rebalances is not None else ""),
        "≥ 200, no rebalances", met,
    )]  # fmt: skip


def economics_rows(r: dict[str, Any]) -> list[Row]:
    m = r.get("main") or r
    ratio, recall, width = m.get("spend_ratio"), m.get("recall_gate_detectable"), _get(m, "estimate", "ci_width")
    return [
        ("6. Judge economics: spend / judge-everything spend (1M traces, 3% failures)",
         f"**{_f(ratio, '.3f')}**", "≤ 0.05", None if ratio is None else ratio <= 0.05),
        ("6. Judge economics: recall of gate-detectable failures; CI width of the pass rate",
         f"**{_f(recall, '.3f')}**; CI width {_f(width, '.4f')}", "≥ 0.98", None if recall is None else recall >= 0.98),
    ]  # fmt: skip


Bench = tuple[str, Callable[[bool, Path], list[str]], Callable[[dict[str, Any]], list[Row]]]
BENCHES: list[Bench] = [
    # five floor/full pairs: on these hosts one pair's ratio moves by +-0.1 within an hour
    ("ingest", lambda q, out: ["bench/ingest.py", "--repeat", "1" if q else "5", "--spans",
                               "100000" if q else "200000", "--json", str(out)], ingest_rows),
    ("scaleout", lambda q, out: ["bench/scaleout.py", "--repeat", "1" if q else "3", "--spans",
                                 "150000" if q else "450000", "--json", str(out)],
     scaleout_rows),
    ("scaleout_floor", lambda q, out: ["bench/scaleout_floor.py", "--repeat", "1" if q else "3", "--spans",
                                       "150000" if q else "450000", "--json", str(out)], scaleout_floor_rows),
    ("memory", lambda q, out: ["bench/memory.py", "--open-traces", "20000" if q else "50000", "--minutes",
                               "2" if q else "10", "--json", str(out)], memory_rows),
    ("latency", lambda q, out: ["bench/latency.py", "--seconds", "30" if q else "60", "--json", str(out)],
     latency_rows),
    ("judge", lambda q, out: ["bench/judge.py", "--kafka", "--traces", "2000" if q else "3000", "--json", str(out)],
     judge_rows),
    ("economics", lambda q, out: ["bench/economics.py", "--traces", "1000000", "--json", str(out)],
     economics_rows),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (smaller inputs, shorter steady load)")
    p.add_argument("--only", default="", help="comma-separated subset: " + ",".join(b[0] for b in BENCHES))
    args = p.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {b[0] for b in BENCHES}
    if unknown:
        p.error(f"unknown benchmarks: {sorted(unknown)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    results: dict[str, Any] = {}
    for name, command, to_rows in BENCHES:
        if only and name not in only:
            continue
        out = RESULTS / f"suite-{stamp}-{name}.json"
        cmd = [sys.executable, *command(args.quick, out)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        began = time.monotonic()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        took = time.monotonic() - began
        try:
            result = json.loads(out.read_text())
        except (OSError, ValueError):
            result = None
        results[name] = {"returncode": rc, "seconds": took, "result": result}
        if rc != 0 or result is None:
            rows.append((name, f"FAILED (exit {rc}; see its output above)", "", False))
            continue
        rows.extend(to_rows(result))
    table = render(rows)
    header = (f"Measured {time.strftime('%Y-%m-%d')} with `python -m bench.run{' --quick' if args.quick else ''}` "
              f"on {os.cpu_count()} cores, Python {platform.python_version()}.")  # fmt: skip
    print("\n" + header + "\n\n" + table)
    (RESULTS / f"performance-{stamp}.md").write_text(header + "\n\n" + table + "\n")
    (RESULTS / f"performance-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: bench/results/performance-{stamp}.md (.json)")
    return 0 if all(r["returncode"] == 0 for r in results.values()) else 1


def render(rows: list[Row]) -> str:
    lines = ["| benchmark | measured | target | met |", "|---|---|---|---|"]
    for what, measured, target, met in rows:
        lines.append(f"| {what} | {measured} | {target} | {'—' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
