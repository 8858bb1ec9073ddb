"""What the dashboard shows, read from ClickHouse with parameterized queries (read-only).

Every function takes ``query(sql, params) -> (columns, rows)`` and the database name, so the same
code runs inside the worker (on its embedded store) and standalone (embedded or server DSN).
Time series are bucketed by hour or day (UTC): traces and gate hits by ``completed_at``, signals
by ``ts``, judge calls by ``ts``, verdicts by their trace's ``completed_at`` (the traffic they
estimate).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.estimate import Estimate, estimate_pass_rate

Query = Callable[[str, Mapping[str, Any] | None], tuple[list[str], list[Any]]]

RANGES: dict[str, int | None] = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}
DEFAULT_BUCKET = {"24h": "hour", "7d": "hour", "30d": "day", "all": "day"}
STEPS = {"hour": 3600, "day": 86400}
MAX_BUCKETS = 800
PASS_LABEL, FAIL_LABEL = "pass", "fail"
ESTIMATOR = "poststratified"


@dataclass(frozen=True, slots=True)
class Window:
    range: str
    bucket: str
    since: int  # inclusive, aligned to step (epoch seconds)
    until: int  # exclusive, aligned to step
    step: int

    @property
    def buckets(self) -> list[int]:
        return list(range(self.since, self.until, self.step))

    @property
    def params(self) -> dict[str, int]:
        return {"since": self.since, "until": self.until, "step": self.step}

    def index(self, ts: int) -> int | None:
        i = (int(ts) - self.since) // self.step
        return i if 0 <= i < (self.until - self.since) // self.step else None


def make_window(range_name: str, bucket: str | None, now: float, first_ts: int | None = None) -> Window:
    """``range_name`` in :data:`RANGES`, ``bucket`` hour|day (None: the range's default)."""
    if range_name not in RANGES:
        raise ValueError(f"unknown range {range_name!r}")
    bucket = bucket or DEFAULT_BUCKET[range_name]
    if bucket not in STEPS:
        raise ValueError(f"unknown bucket {bucket!r}")
    step = STEPS[bucket]
    until = (int(now) // step + 1) * step
    span = RANGES[range_name]
    since = int(now) - span if span is not None else (first_ts if first_ts is not None else int(now))
    since = max(since // step * step, until - MAX_BUCKETS * step)
    return Window(range_name, bucket, since, until, step)


# each judge's newest version (rubric hash), as `tracejudge estimate --judge` picks it
_NEWEST = "SELECT judge, argMax(rubric_hash, judged_at) FROM {db}.verdicts FINAL GROUP BY judge"


def _bucket(col: str) -> str:
    return f"intDiv(toUnixTimestamp({col}), {{step:UInt32}}) * {{step:UInt32}}"


def _in_window(col: str) -> str:
    return f"{col} >= toDateTime({{since:UInt32}}, 'UTC') AND {col} < toDateTime({{until:UInt32}}, 'UTC')"


def first_trace_ts(query: Query, db: str) -> int | None:
    _, rows = query(f"SELECT toUnixTimestamp(min(completed_at)), count() FROM {db}.traces FINAL", None)
    return int(rows[0][0]) if rows and rows[0][1] else None


# ---- pass rate per judge -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JudgeRates:
    judge: str
    rubric_hash: str
    points: list[Estimate | None]  # per bucket; None: no judged trace in that bucket
    overall: Estimate
    statuses: dict[str, int] = field(default_factory=dict)  # verdicts in the window, by status


def pass_rates(query: Query, db: str, w: Window) -> list[JudgeRates]:
    """Per judge (newest rubric version), per bucket: the pass rate over ALL traffic of that bucket,
    post-stratified by sampling stratum with the bucket's stratum populations, MOVER-Wilson 95 % CI
    (:func:`stream.estimate.estimate_pass_rate`) — from ok verdicts joined with their traces' recorded
    inclusion probability and stratum."""
    _, versions = query(_NEWEST.format(db=db), None)
    if not versions:
        return []
    _, pop_rows = query(
        f"SELECT {_bucket('completed_at')} AS b, sample_stratum, count() FROM {db}.traces FINAL "
        f"WHERE {_in_window('completed_at')} AND sample_stratum != '' GROUP BY b, sample_stratum",
        w.params,
    )
    population: dict[int, dict[str, int]] = defaultdict(dict)
    for b, stratum, n in pop_rows:
        population[int(b)][str(stratum)] = int(n)
    _, rows = query(
        f"SELECT v.judge, {_bucket('t.completed_at')} AS b, ifNull(v.label, '') = {{pass:String}} AS passed, "
        "t.inclusion_p, t.sample_stratum, count() "
        f"FROM (SELECT trace_id, judge, label FROM {db}.verdicts FINAL WHERE status = 'ok' AND (judge, rubric_hash) IN "
        f"({_NEWEST.format(db=db)})) AS v "
        f"INNER JOIN (SELECT trace_id, completed_at, inclusion_p, sample_stratum FROM {db}.traces FINAL "
        f"WHERE {_in_window('completed_at')} AND sample_stratum != '' AND inclusion_p > 0) AS t "
        "ON v.trace_id = t.trace_id GROUP BY v.judge, b, passed, t.inclusion_p, t.sample_stratum",
        {**w.params, "pass": PASS_LABEL},
    )
    samples: dict[str, dict[int, list[tuple[bool, float, str]]]] = defaultdict(lambda: defaultdict(list))
    for judge, b, passed, p, stratum, k in rows:
        samples[str(judge)][int(b)].extend([(bool(passed), float(p), str(stratum))] * int(k))
    _, status_rows = query(
        f"SELECT judge, status, count() FROM {db}.verdicts FINAL WHERE {_in_window('judged_at')} GROUP BY judge, status",
        w.params,
    )
    statuses: dict[str, dict[str, int]] = defaultdict(dict)
    for judge, status, n in status_rows:
        statuses[str(judge)][str(status)] = int(n)
    total_pop: dict[str, int] = defaultdict(int)
    for per in population.values():
        for stratum, n in per.items():
            total_pop[stratum] += n
    out = []
    for judge, rubric_hash in sorted(versions):
        per_bucket = samples.get(str(judge), {})
        points: list[Estimate | None] = [None] * len(w.buckets)
        for b, s in per_bucket.items():
            i = w.index(b)
            if i is not None:
                points[i] = estimate_pass_rate(s, method=ESTIMATOR, population=population.get(b, {}))
        everything = [x for s in per_bucket.values() for x in s]
        overall = estimate_pass_rate(everything, method=ESTIMATOR, population=dict(total_pop))
        out.append(JudgeRates(str(judge), str(rubric_hash), points, overall, statuses.get(str(judge), {})))
    return out


# ---- volumes -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeriesSet:
    """Named series over the window's buckets, plus a summary table."""

    series: dict[str, list[float]]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(any(v) for v in self.series.values())


def _series(rows: list[Any], w: Window, top: int | None = None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, b, v in rows:
        i = w.index(int(b))
        if i is not None:
            out.setdefault(str(key) or "(none)", [0.0] * len(w.buckets))[i] += float(v)
    if top is not None and len(out) > top:
        ranked = sorted(out, key=lambda k: -sum(out[k]))
        other = [0.0] * len(w.buckets)
        for k in ranked[top - 1 :]:
            other = [a + b for a, b in zip(other, out.pop(k), strict=True)]
        out["other"] = other
    return dict(sorted(out.items()))


def volume_by_class(query: Query, db: str, w: Window) -> SeriesSet:
    _, rows = query(
        f"SELECT sample_class, {_bucket('completed_at')} AS b, count() FROM {db}.traces FINAL "
        f"WHERE {_in_window('completed_at')} GROUP BY sample_class, b",
        w.params,
    )
    _, summary = query(
        f"SELECT sample_class, count(), sum(sampled), round(avg(inclusion_p), 4) FROM {db}.traces FINAL "
        f"WHERE {_in_window('completed_at')} GROUP BY sample_class ORDER BY count() DESC",
        w.params,
    )
    return SeriesSet(_series(rows, w), [(c or "(none)", n, s, p) for c, n, s, p in summary])


def gate_hits(query: Query, db: str, w: Window) -> SeriesSet:
    _, rows = query(
        f"SELECT gate, {_bucket('completed_at')} AS b, count() FROM {db}.gate_results FINAL "
        f"WHERE {_in_window('completed_at')} GROUP BY gate, b",
        w.params,
    )
    _, summary = query(
        f"SELECT gate, any(gate_type), countIf(outcome = 'fail'), countIf(outcome = 'error'), argMax(reason, completed_at) "
        f"FROM {db}.gate_results FINAL WHERE {_in_window('completed_at')} GROUP BY gate ORDER BY count() DESC",
        w.params,
    )
    return SeriesSet(_series(rows, w, top=8), list(summary))


def signal_counts(query: Query, db: str, w: Window) -> SeriesSet:
    _, rows = query(
        f"SELECT type, {_bucket('ts')} AS b, count() FROM {db}.signals FINAL WHERE {_in_window('ts')} GROUP BY type, b",
        w.params,
    )
    _, summary = query(
        f"SELECT type, source, polarity, count(), sum(is_late), argMax(evidence, ts) FROM {db}.signals FINAL "
        f"WHERE {_in_window('ts')} GROUP BY type, source, polarity ORDER BY count() DESC",
        w.params,
    )
    return SeriesSet(_series(rows, w, top=8), list(summary))


def judge_spend(query: Query, db: str, w: Window) -> SeriesSet:
    _, rows = query(
        f"SELECT judge, {_bucket('ts')} AS b, sum(cost_usd) FROM {db}.judge_calls FINAL "
        f"WHERE {_in_window('ts')} GROUP BY judge, b",
        w.params,
    )
    _, summary = query(
        f"SELECT judge, model, purpose, count(), countIf(status != 'ok'), sum(input_tokens + output_tokens), "
        f"sum(cost_usd) FROM {db}.judge_calls FINAL WHERE {_in_window('ts')} "
        "GROUP BY judge, model, purpose ORDER BY sum(cost_usd) DESC",
        w.params,
    )
    return SeriesSet(_series(rows, w), list(summary))


# ---- budget burn ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Burn:
    period_start: float
    period_end: float
    spent: float  # charged to the live shares this period (all judges)
    budget: float | None
    per_judge: list[tuple[str, float, float | None]]  # (judge, spent, budget)
    marks: list[tuple[float, str]]


def budget_burn(query: Query, db: str, budget: Any, now: float) -> Burn:
    """Spend charged to the budget in the current period, as the judging runtime counts it: ledger
    rows of that period paid by a ``traces.to_judge`` partition (calibration and drift runs are not).
    ``budget`` is a :class:`judges.config.BudgetSpec` (or None: the current UTC day, no limits)."""
    period_s = float(budget.period_s) if budget is not None else 86400.0
    period = math.floor(now / period_s)
    _, rows = query(
        f"SELECT judge, sum(cost_usd) FROM {db}.judge_calls FINAL "
        "WHERE period = {period:Int64} AND kafka_partition >= 0 GROUP BY judge ORDER BY judge",
        {"period": period},
    )
    spent = {str(j): float(usd) for j, usd in rows}
    limits: dict[str, float] = dict(budget.per_judge_usd) if budget is not None else {}
    judges = sorted(set(spent) | set(limits))
    marks = [(budget.stop_success_at, "stop success"), (budget.cheap_only_at, "cheap only")] if budget is not None else []
    return Burn(period * period_s, (period + 1) * period_s, sum(spent.values()),
                budget.global_usd if budget is not None else None,
                [(j, spent.get(j, 0.0), limits.get(j)) for j in judges], marks)  # fmt: skip


# ---- lists ---------------------------------------------------------------------------------
def failing_traces(query: Query, db: str, w: Window, limit: int = 25) -> list[dict[str, Any]]:
    """The latest traces a judge (its newest version, as for the pass rate) labeled ``fail``, newest
    verdict first, with their trace's context."""
    _, rows = query(
        "SELECT trace_id, judge, score, explanation, toUnixTimestamp(judged_at), model, tier "
        f"FROM {db}.verdicts FINAL WHERE status = 'ok' AND label = {{fail:String}} AND {_in_window('judged_at')} "
        f"AND (judge, rubric_hash) IN ({_NEWEST.format(db=db)}) "
        "ORDER BY judged_at DESC, trace_id, judge LIMIT {limit:UInt32}",
        {**w.params, "fail": FAIL_LABEL, "limit": limit},
    )
    ids = sorted({str(r[0]) for r in rows})
    context: dict[str, tuple[Any, ...]] = {}
    if ids:
        _, trows = query(
            f"SELECT trace_id, service_name, agent_name, root_name, failed_gates, signals FROM {db}.traces FINAL "
            "WHERE trace_id IN {ids:Array(String)}",
            {"ids": ids},
        )
        context = {str(r[0]): r[1:] for r in trows}
    out = []
    for tid, judge, score, explanation, judged_at, model, tier in rows:
        service, agent, root, gates, signals = context.get(str(tid), ("", "", "", [], []))
        out.append({"trace_id": str(tid), "judge": judge, "score": score, "explanation": explanation,
                    "judged_at": int(judged_at), "model": model, "tier": tier, "service": service,
                    "agent": agent, "root_name": root, "failed_gates": list(gates), "signals": list(signals)})  # fmt: skip
    return out


def firing_alerts(query: Query, db: str, limit: int = 20) -> list[tuple[Any, ...]]:
    _, rows = query(
        "SELECT kind, judge, left(rubric_hash, 12), message, toUnixTimestamp(created_at) "
        f"FROM {db}.judge_alerts FINAL WHERE state = 'firing' ORDER BY created_at DESC LIMIT {{limit:UInt32}}",
        {"limit": limit},
    )
    return list(rows)
