"""The latency benchmark's figures (bench/latency.py): per-trace stage times and the printed table.

``figures`` turns what one run collected — the ``traces``, ``verdicts`` and ``judge_calls`` rows
read back from the store, the load's produce acks, the poller's first-seen times and the to_judge
records' CreateTimes — into p50 / p90 / p99 / max per stage, in seconds, measured from the
completion moment C = ``last_seen`` + ``decision_wait``; ``print_figures`` prints them as a table
(``LABELS``: row order and labels, with the target next to (b)). Pure computation, no I/O but print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.harness import percentile

if TYPE_CHECKING:
    from bench.latency_io import Load, Poller

TARGET_S = 2.0  # issue 7, item 4: verdict p99 <= 2 s beyond the provider's own latency


def stats(values: list[float]) -> dict[str, float | int | None]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else None}  # fmt: skip


def figures(traces: list[tuple], verdicts: list[tuple], calls: list[tuple], load: Load, poller: Poller,
            dw: float, provider_s: float, to_judge: dict[str, float]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """traces: (id, last_seen ms, completed_at ms, sampled); verdicts: (id, judged_at ms, n tiers,
    status); calls: (id, ts ms, latency_s); to_judge: id -> produced (s). Every figure in seconds."""
    by_call: dict[str, list[tuple[float, float]]] = {}
    for tid, ts, lat in calls:
        by_call.setdefault(tid, []).append((ts / 1000 - lat, lat))  # (call start, latency)
    rows = {t[0]: t for t in traces}
    f: dict[str, list[float]] = {k: [] for k in (
        "ingest", "tick", "trace_write", "a", "to_call", "to_topic", "hop", "provider", "batch_wait", "verdict_write", "b", "b_measured")}  # fmt: skip
    calls_per_verdict: list[int] = []
    for tid, last_ms, done_ms, _ in traces:
        c = last_ms / 1000 + dw
        if tid in load.acked:
            f["ingest"].append(last_ms / 1000 - load.acked[tid])
        f["tick"].append(done_ms / 1000 - c)
        if tid in poller.trace_seen:
            f["a"].append(poller.trace_seen[tid] - c)
            f["trace_write"].append(poller.trace_seen[tid] - done_ms / 1000)
    for tid, judged_ms, _tiers, status in verdicts:
        t = rows.get(tid)
        mine = sorted(by_call.get(tid, []))
        if t is None or tid not in poller.verdict_seen or status != "ok" or not mine:
            continue
        c, done, seen = t[1] / 1000 + dw, t[2] / 1000, poller.verdict_seen[tid]
        calls_per_verdict.append(len(mine))
        measured = sum(lat for _, lat in mine)
        f["to_call"].append(mine[0][0] - done)
        if tid in to_judge:
            f["to_topic"].append(to_judge[tid] - done)
            f["hop"].append(mine[0][0] - to_judge[tid])
        f["provider"].append(measured)
        f["batch_wait"].append(judged_ms / 1000 - (mine[-1][0] + mine[-1][1]))
        f["verdict_write"].append(seen - judged_ms / 1000)
        f["b"].append(seen - c - provider_s * len(mine))
        f["b_measured"].append(seen - c - measured)
    out = {k: stats(v) for k, v in f.items()}
    out["calls_per_verdict"] = {"n": len(calls_per_verdict), "mean": (sum(calls_per_verdict) / len(calls_per_verdict))
                                if calls_per_verdict else None, "max": max(calls_per_verdict, default=None)}  # fmt: skip
    return out


LABELS = [
    ("ingest", "context: produce ack -> worker receipt (last_seen)", ""),
    ("tick", "  tick wait: C -> completed_at", ""),
    ("trace_write", "  trace write: completed_at -> traces row", ""),
    ("a", "(a) completion C -> traces row", ""),
    ("to_call", "  completed_at -> judge call starts", ""),
    ("to_topic", "    completed_at -> to_judge produced", ""),
    ("hop", "    to_judge produced -> call starts", ""),
    ("provider", "  provider calls (measured, per verdict)", ""),
    ("batch_wait", "  call end -> judged_at (batch's slowest call)", ""),
    ("verdict_write", "  judged_at -> verdict row", ""),
    ("b", "(b) C -> verdict row - latency x calls", f"target p99 <= {TARGET_S:.0f} s"),
    ("b_measured", "(b') C -> verdict row - measured call time", ""),
]


def print_figures(fig: dict[str, dict[str, Any]]) -> None:
    def s(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"{'seconds':48}{'n':>6}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for key, label, target in LABELS:
        r = fig[key]
        print(f"{label:48}{r['n']:>6}{s(r['p50']):>8}{s(r['p90']):>8}{s(r['p99']):>8}{s(r['max']):>8}  {target}")
    cpv = fig["calls_per_verdict"]
    print(f"provider calls per verdict: mean {s(cpv['mean'])}, max {cpv['max']} ({cpv['n']} ok verdicts)")
