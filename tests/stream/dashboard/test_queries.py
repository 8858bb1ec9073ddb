"""The dashboard's data, against real embedded ClickHouse with known rows."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from judges.config import BudgetSpec
from schemas.model import Span
from stream.dashboard import Dashboard, queries
from stream.dashboard.trace_data import load_trace, span_tree, valid_trace_id
from stream.estimate import Estimate, estimate_pass_rate, naive_rate
from tests.stream.dashboard.seed import FAILURES, HOURS, NEW, SUCCESSES, Seeded


def same(got: Estimate | None, want: Estimate) -> None:
    assert got is not None
    assert (got.n_judged, got.n_population, got.method) == (want.n_judged, want.n_population, want.method)
    assert got.rate == pytest.approx(want.rate, abs=1e-12)
    assert (got.ci_low, got.ci_high) == (pytest.approx(want.ci_low, abs=1e-12), pytest.approx(want.ci_high, abs=1e-12))


def test_window_buckets_are_aligned_and_bounded() -> None:
    now = 1_760_000_123.0
    w = queries.make_window("24h", None, now)
    assert (w.bucket, w.step) == ("hour", 3600)
    assert w.since % 3600 == 0 and w.until % 3600 == 0 and w.since <= now - 86400 < w.since + 3600
    assert w.until > now and len(w.buckets) == 25 and w.index(int(now)) == 24 and w.index(w.until) is None
    assert queries.make_window("30d", None, now).step == 86400
    assert queries.make_window("7d", "day", now).buckets[-1] == int(now) // 86400 * 86400
    # "all" starts at the first trace, capped at MAX_BUCKETS buckets
    assert queries.make_window("all", None, now, first_ts=int(now) - 3 * 86400).since == (int(now) // 86400 - 3) * 86400
    assert len(queries.make_window("all", "hour", now, first_ts=0).buckets) == queries.MAX_BUCKETS
    for bad in (("1y", None), ("24h", "minute")):
        with pytest.raises(ValueError):
            queries.make_window(bad[0], bad[1], now)


def test_pass_rate_per_bucket_is_the_weighted_estimate(dash: Dashboard, seeded: Seeded, now: float) -> None:
    w = queries.make_window("24h", None, now)
    rates = {r.judge: r for r in queries.pass_rates(dash.query, dash.db, w)}
    assert set(rates) == {"task_completion", "tool_use_correctness"}
    assert rates["task_completion"].rubric_hash == NEW  # newest version only; the old one is never mixed in
    assert rates["tool_use_correctness"].statuses == {"ok": len(seeded.labels["tool_use_correctness"]), "unscored": HOURS}
    for judge, labels in seeded.labels.items():
        jr = rates[judge]
        all_samples, all_pop = [], Counter()
        for h in range(HOURS):
            bucket = seeded.hour0 + h * 3600
            traffic = [t for t in seeded.traces if t["bucket"] == bucket]
            pop = Counter(t["stratum"] for t in traffic)
            samples = [(labels[t["trace_id"]], t["p"], t["stratum"]) for t in traffic if t["trace_id"] in labels]
            assert pop == {"suspected_failure": FAILURES, "success:base": SUCCESSES}
            same(jr.points[w.index(bucket)], estimate_pass_rate(samples, method="poststratified", population=pop))
            all_samples += samples
            all_pop += pop
        assert sum(p is not None for p in jr.points) == HOURS  # no judged trace elsewhere: gaps, not zeros
        want = estimate_pass_rate(all_samples, method="poststratified", population=all_pop)
        same(jr.overall, want)
        assert jr.overall.n_judged == len(labels) and jr.overall.n_population == HOURS * (FAILURES + SUCCESSES)
        if judge == "task_completion":  # failures pass 40 %, successes 95 %: the judged sample is failure-biased
            assert want.rate - naive_rate(all_samples) > 0.05
        assert want.ci_low < want.rate < want.ci_high


def test_volumes_gates_signals_and_spend(dash: Dashboard, seeded: Seeded, now: float) -> None:
    w = queries.make_window("24h", None, now)
    vol = queries.volume_by_class(dash.query, dash.db, w)
    assert {k: sum(v) for k, v in vol.series.items()} == {"success": HOURS * SUCCESSES, "suspected_failure": HOURS * FAILURES}
    for h in range(HOURS):
        assert vol.series["suspected_failure"][w.index(seeded.hour0 + h * 3600)] == FAILURES
    assert {r[0]: (r[1], r[2]) for r in vol.rows} == {"success": (HOURS * SUCCESSES, HOURS * SUCCESSES // 10),
                                                       "suspected_failure": (HOURS * FAILURES, HOURS * FAILURES)}  # fmt: skip
    gates = queries.gate_hits(dash.query, dash.db, w)
    assert {k: sum(v) for k, v in gates.series.items()} == seeded.gate_hits
    by_gate = {r[0]: r for r in gates.rows}
    assert by_gate["tool_errors"][2:4] == (HOURS * (FAILURES - 1), HOURS)  # fail, error
    sig = queries.signal_counts(dash.query, dash.db, w)
    assert {k: sum(v) for k, v in sig.series.items()} == seeded.signal_counts
    spend = queries.judge_spend(dash.query, dash.db, w)
    assert sum(sum(v) for v in spend.series.values()) == pytest.approx(seeded.spend_total)
    assert {(r[0], r[2]) for r in spend.rows} == {("task_completion", "live"), ("task_completion", "calibration")}


def test_budget_burn_counts_only_charged_calls_of_the_period(dash: Dashboard, seeded: Seeded, now: float) -> None:
    spec = BudgetSpec(period_s=86400, global_usd=2.0, per_judge_usd={"task_completion": 0.5, "groundedness": 1.0})
    burn = queries.budget_burn(dash.query, dash.db, spec, now)
    assert burn.spent == pytest.approx(seeded.spend_today)  # the 0.5 USD calibration run is not charged
    assert burn.period_start == int(now) // 86400 * 86400 and burn.period_end == burn.period_start + 86400
    assert burn.budget == 2.0 and burn.marks == [(0.5, "stop success"), (0.8, "cheap only")]
    assert burn.per_judge == [("groundedness", 0.0, 1.0), ("task_completion", pytest.approx(seeded.spend_today), 0.5)]
    unconfigured = queries.budget_burn(dash.query, dash.db, None, now)
    assert unconfigured.budget is None and unconfigured.spent == pytest.approx(seeded.spend_today)


def test_latest_failing_traces_newest_first(dash: Dashboard, seeded: Seeded, now: float) -> None:
    w = queries.make_window("24h", None, now)
    failing = queries.failing_traces(dash.query, dash.db, w, limit=20)
    assert [(f["trace_id"], f["judge"]) for f in failing] == seeded.failing[:20]
    hostile = next(f for f in failing if f["trace_id"] == seeded.hostile_id)
    assert hostile["failed_gates"] == ["tool_errors"] and "<script>" in hostile["agent"]


def test_trace_detail_spans_as_a_tree_with_verdicts(dash: Dashboard, seeded: Seeded) -> None:
    d = load_trace(dash.query, dash.db, seeded.hostile_id)
    assert d.found and d.trace is not None and d.trace["sample_class"] == "suspected_failure"
    assert [n.depth for n in d.spans] == [0, 1, 1, 1] and d.spans_total == 4
    assert [n.span.kind.value for n in d.spans] == ["agent", "llm", "tool", "llm"]
    assert d.spans[2].span.tool_name == "lookup_order" and d.spans[2].span.is_error
    assert "Where is my order?" in d.spans[1].span.input_messages[0].content
    assert {(v["judge"], v["rubric_hash"][:1]) for v in d.verdicts} == {("task_completion", "b"), ("task_completion", "a"),
                                                                         ("tool_use_correctness", "c")}  # fmt: skip
    assert [g[0] for g in d.gates] == ["latency", "tool_errors"] and [s[1] for s in d.signals] == ["frustration"]
    assert not load_trace(dash.query, dash.db, "f" * 32).found


def test_span_tree_orders_children_and_keeps_orphans_and_cycles() -> None:
    def s(sid: str, parent: str | None, start: int) -> Span:
        return Span(trace_id="1" * 32, span_id=sid * 16, parent_span_id=parent * 16 if parent else None, start_ns=start)

    spans = [s("c", "a", 5), s("b", "a", 2), s("a", None, 1), s("d", "z", 0), s("e", "f", 3), s("f", "e", 4)]
    nodes = span_tree(spans)
    assert [(n.span.span_id[0], n.depth) for n in nodes] == [("d", 0), ("a", 0), ("b", 1), ("c", 1), ("e", 0), ("f", 0)]


@pytest.mark.parametrize("raw", ["", "xyz", "0" * 31, "0" * 33, "g" * 32, "'; DROP TABLE x --", "../" * 11])
def test_trace_ids_are_validated(raw: str) -> None:
    assert valid_trace_id(raw) is None


def test_empty_store_has_no_data(dash: Dashboard, now: float) -> None:
    w = queries.make_window("24h", None, now)
    assert queries.pass_rates(dash.query, dash.db, w) == []
    for fn in (queries.volume_by_class, queries.gate_hits, queries.signal_counts, queries.judge_spend):
        assert fn(dash.query, dash.db, w).empty
    assert queries.failing_traces(dash.query, dash.db, w) == [] and queries.firing_alerts(dash.query, dash.db) == []
    burn = queries.budget_burn(dash.query, dash.db, BudgetSpec(global_usd=1.0), now)
    assert burn.spent == 0 and not math.isnan(burn.spent)
    assert queries.first_trace_ts(dash.query, dash.db) is None
