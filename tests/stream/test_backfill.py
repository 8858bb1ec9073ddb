"""Backfill against the real embedded ClickHouse and a local provider server over HTTP: traces
rebuilt exactly as the worker sent them, interruption and resume without paying twice, recovery
of lost verdicts from the ledger cache, a rubric change judged as a new version, the budget cap,
and the command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from judges.config import parse_judging_config
from judges.prompt import extract_values, input_hash
from judges.rubric import BUILTIN_DIR
from schemas.model import CompletionReason, Trace
from stream import judge_envelope
from stream.assembly import CompletedTrace
from stream.backfill import Backfill
from stream.decide import TraceDecision
from stream.decision_rows import GATE_COLUMNS, SIGNAL_COLUMNS, encode_for_judges, gate_rows, signal_rows
from stream.gates.base import Evidence, GateOutcome, GateResult
from stream.judging import build_providers
from stream.rows import SPAN_COLUMNS, TRACE_COLUMNS, span_row, trace_row
from stream.sampling.sampler import Decision
from stream.signals.base import Signal
from stream.store import ClickHouseStore
from tests.judges.fake_llm import build_trace
from tests.judges.fake_provider import FakeProviderServer
from tests.stream.judging_support import KEY_ENV, FakeTime, config, honest, ledger, verdict_rows

NOW = 1_800_000_000.0
SINCE_MS = int((NOW - 86400) * 1000)
_LOOP = asyncio.new_event_loop()  # the providers' pooled clients live on one loop


def run(coro: Any) -> Any:
    return _LOOP.run_until_complete(coro)


# ---- stored traces, written with the worker's own row builders ----------------------------------
def stored(i: int, *, completed_s: float, failing: bool | None = None, sampled: bool = True) -> tuple[Trace, TraceDecision]:
    failing = i % 3 == 0 if failing is None else failing
    base = build_trace(f"where is my order {i}?", "Sorry." if failing else f"It ships on day {i}.",
                       "ERROR: order service down" if failing else f'{{"status": "shipped", "n": {i}}}',
                       tool_error=failing, seed=7000 + i)  # fmt: skip
    ns = int(completed_s * 1e9)
    trace = Trace.fast(trace_id=base.trace_id, spans=base.spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE,
                       first_seen_ns=ns - 10**9, last_seen_ns=ns - 5 * 10**8, completed_ns=ns)  # fmt: skip
    tool = next(s for s in trace.spans if s.tool_name)
    gates, signals = [], []
    if failing:
        gates = [GateResult("tool_errors", "tool_error", GateOutcome.FAIL, "tool lookup_order failed",
                            [Evidence(tool.span_id, "ERROR: order service down", "lookup_order")]),
                 GateResult("a_latency", "latency", GateOutcome.FAIL, "slow", []),
                 GateResult("pii", "pattern", GateOutcome.ERROR, "gate raised", [])]  # fmt: skip
        signals = [Signal("frustration", "negative", "semantic", "frustration_en", "where is my order",
                          message_index=0, span_id=tool.span_id, language="en")]  # fmt: skip
    cls, stratum, p = ("suspected_failure", "suspected_failure", 1.0) if failing else ("success", "success:base", 0.5)
    return trace, TraceDecision(gates, signals, Decision(cls, "gate:tool_errors" if failing else "success:base", p,
                                                         sampled, stratum, "pv1"))  # fmt: skip


def write(store: ClickHouseStore, items: list[tuple[Trace, TraceDecision]]) -> None:
    spans, traces, gates, signals = [], [], [], []
    for k, (t, d) in enumerate(items):
        spans += [span_row(s, "otlp_spans", 0, k, t.completed_ns // 10**6, False) for s in t.spans]
        traces.append(trace_row(t, "otlp_spans", 0, k, decision=d))
        gates += gate_rows(CompletedTrace(t, ("otlp_spans", 0), k, 0), d)
        signals += signal_rows(CompletedTrace(t, ("otlp_spans", 0), k, 0), d)
    store.insert("spans", spans, SPAN_COLUMNS)
    store.insert("traces", traces, TRACE_COLUMNS)
    store.insert("gate_results", gates, GATE_COLUMNS)
    store.insert("signals", signals, SIGNAL_COLUMNS)


def seed(store: ClickHouseStore, n: int = 20) -> list[str]:
    """``n`` sampled traces in the last day, plus ones a backfill must not touch: unsampled, older."""
    judged = [stored(i, completed_s=NOW - 3600 - 60 * i) for i in range(n)]
    other = [stored(100, completed_s=NOW - 600, sampled=False), stored(101, completed_s=NOW - 2 * 86400)]
    write(store, judged + other)
    return sorted(t.trace_id for t, _ in judged)


def backfill(store: ClickHouseStore, server: FakeProviderServer, clock: Any = None, reserve: float = 0.5,
             chunk_size: int | None = None, **overrides: Any) -> Backfill:  # fmt: skip
    cfg = parse_judging_config(config(server, **overrides))
    return Backfill(store, cfg, "task_completion", providers=build_providers(cfg, env=KEY_ENV),
                    clock=clock or FakeTime(NOW), reserve=reserve, chunk_size=chunk_size)  # fmt: skip


def verdicts_by_hash(store: ClickHouseStore) -> dict[str, dict[str, tuple[Any, ...]]]:
    _, rows = store.query(f"SELECT rubric_hash, trace_id, status, label, purpose, judged_at FROM {store.database}.verdicts FINAL")
    out: dict[str, dict[str, tuple[Any, ...]]] = {}
    for h, tid, *rest in rows:
        out.setdefault(h, {})[tid] = tuple(rest)
    return out


# ---- tests ---------------------------------------------------------------------------------------
def test_rebuilt_trace_and_meta_are_what_the_worker_sent(store: ClickHouseStore) -> None:
    items = [stored(i, completed_s=NOW - 100 - i) for i in range(4)]
    write(store, items)
    with FakeProviderServer() as server:
        job = backfill(store, server)
        rows = run(job._page(SINCE_MS, int(NOW * 1000), (-1, "")))
        rebuilt = {t.trace_id: (t, meta) for t, meta in run(job.load(rows))}
    assert len(rebuilt) == 4
    for trace, d in items:
        sent_trace, sent_meta = judge_envelope.decode(encode_for_judges(trace, d))
        got_trace, got_meta = rebuilt[trace.trace_id]
        assert got_meta == sent_meta  # decision, failed gates (fail only, in gate order) with evidence, signals
        assert sorted((s.span_id, s.name, s.attributes) for s in got_trace.spans) == \
            sorted((s.span_id, s.name, s.attributes) for s in sent_trace.spans)  # fmt: skip
        values = extract_values(job.rubric, got_trace, got_meta, 8000)
        assert input_hash(values) == input_hash(extract_values(job.rubric, sent_trace, sent_meta, 8000))
    failing = [m for _, m in rebuilt.values() if m["decision"]["class"] == "suspected_failure"]
    assert failing and all([g["gate"] for g in m["failed_gates"]] == ["tool_errors", "a_latency"] for m in failing)


def test_interrupted_backfill_resumes_and_never_pays_twice(store: ClickHouseStore) -> None:
    ids = seed(store, 20)
    with FakeProviderServer() as server:
        server.default = honest()
        first = run(backfill(store, server).run(SINCE_MS, limit=8))
        assert (first.total, first.already, first.judged, first.stopped) == (20, 0, 8, "limit")
        assert len(server.requests) == 8 and first.remaining == 12

        counted: list[int] = []
        second_job = backfill(store, server)  # a new process: everything it knows comes from ClickHouse
        second = run(second_job.run(SINCE_MS, progress=lambda n, r: counted.append(n),
                                    on_start=lambda r: counted.append(-r.already)))  # fmt: skip
        assert (second.total, second.already, second.judged, second.stopped, second.remaining) == (20, 8, 12, None, 0)
        assert counted[0] == -8 and sum(counted[1:]) == 12
        assert len(server.requests) == 20

        third = run(backfill(store, server).run(SINCE_MS))
        assert (third.already, third.judged) == (20, 0) and len(server.requests) == 20

    [got] = verdicts_by_hash(store).values()
    assert sorted(got) == ids  # neither the unsampled nor the older trace
    assert {v[0] for v in got.values()} == {"ok"} and {v[2] for v in got.values()} == {"backfill"}
    failing = {stored(i, completed_s=0)[0].trace_id for i in range(20) if i % 3 == 0}
    assert {t for t, v in got.items() if v[1] == "fail"} == failing
    assert verdict_rows(store) == 20  # no duplicate rows even before FINAL
    calls = ledger(store)
    assert sorted(c["trace_id"] for c in calls) == ids
    assert {(c["purpose"], c["kafka_partition"]) for c in calls} == {("backfill", -1)}
    assert first.cost_usd + second.cost_usd == pytest.approx(sum(c["cost_usd"] for c in calls)) == pytest.approx(0.04)


def test_verdicts_lost_after_payment_come_from_the_ledger_cache(store: ClickHouseStore) -> None:
    seed(store, 6)
    with FakeProviderServer() as server:
        server.default = honest()
        run(backfill(store, server).run(SINCE_MS))
        assert len(server.requests) == 6
        # a crash after the ledger flush but before the verdict rows: the calls are paid, verdicts missing
        lost = sorted(verdicts_by_hash(store).popitem()[1])[:2]
        store.command(f"DELETE FROM {store.database}.verdicts WHERE trace_id IN {{ids:Array(String)}}", {"ids": lost})
        again = run(backfill(store, server).run(SINCE_MS))
        assert (again.already, again.judged, again.cache_hits, again.cost_usd) == (4, 2, 2, 0.0)
        assert len(server.requests) == 6 and len(ledger(store)) == 6
    [got] = verdicts_by_hash(store).values()
    assert len(got) == 6


def test_a_rubric_change_is_judged_as_a_new_version_and_old_verdicts_stay(store: ClickHouseStore, tmp_path: Path) -> None:
    ids = seed(store, 20)
    rubric = yaml.safe_load((BUILTIN_DIR / "task_completion.yaml").read_text())
    rubric["template"] += "\nA refund promised without a refund tool call is a fail.\n"
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "task_completion.yaml").write_text(yaml.safe_dump(rubric))
    with FakeProviderServer() as server:
        server.default = honest()
        old_job = backfill(store, server)
        run(old_job.run(SINCE_MS))
        before = verdicts_by_hash(store)
        new_job = backfill(store, server, rubrics_dir=str(tmp_path / "rubrics"))
        assert new_job.rubric.rubric_hash != old_job.rubric.rubric_hash
        result = run(new_job.run(SINCE_MS))
        assert (result.already, result.judged, result.cache_hits) == (0, 20, 0)
        assert len(server.requests) == 40
    after = verdicts_by_hash(store)
    assert after[old_job.rubric.rubric_hash] == before[old_job.rubric.rubric_hash]  # untouched
    assert sorted(after[new_job.rubric.rubric_hash]) == ids
    assert verdict_rows(store) == 40


def test_budget_cap_stops_the_backfill_and_the_next_period_continues(store: ClickHouseStore) -> None:
    seed(store, 20)
    clock = FakeTime(NOW)
    period = int(NOW // 86400)
    live = [(f"live{i}", int(NOW * 1000) - 1000, period, "t", "task_completion", "1", "h", "cheap", "live", "fake",
             "m", "m", "ok", "", 1000, 100, 0.004, 0.1, 1, 0, "w", f"ih{i}", "") for i in range(2)]  # fmt: skip
    from stream.judge_rows import CALL_COLUMNS

    store.insert("judge_calls", live, CALL_COLUMNS)  # $0.008 already spent by live partition 0
    spent = lambda: sum(c["cost_usd"] for c in ledger(store) if c["purpose"] == "backfill" and c["period"] == clock.t // 86400)  # noqa: E731
    with FakeProviderServer() as server:
        server.default = honest()
        budget = {"global_usd": 0.04, "period_s": 86400}
        job = backfill(store, server, clock, reserve=0.5, chunk_size=4, budget=budget)
        first = run(job.run(SINCE_MS))
        # cap = 0.04 * (1 - 0.5) = 0.02, of which live spent 0.008: the backfill may spend 0.012
        assert first.stopped == "budget" and 0 < first.judged < 20 and first.budget_skipped == 0
        assert 0.008 + spent() <= 0.02 + 1e-12
        items = run(job.load(run(job._page(SINCE_MS, int(NOW * 1000), (-1, "")))))
        largest = max(job.first.estimate_usd(extract_values(job.rubric, t, m, 8000)) for t, m in items)
        assert 0.02 - 0.008 - spent() < largest  # it stopped only when the next call could not fit
        clock.t += 86400  # the next period: a fresh budget
        second = run(backfill(store, server, clock, reserve=0.5, chunk_size=4, budget=budget).run(SINCE_MS, int(NOW * 1000)))
        assert second.already == first.judged and second.judged > 0 and spent() <= 0.02 + 1e-12
    paid = [c["trace_id"] for c in ledger(store) if c["purpose"] == "backfill"]
    assert len(paid) == len(set(paid)) == first.judged + second.judged  # nobody paid twice
    assert table_count(store, "judge_backlog") == 0  # deferrals are re-selected, not queued


def table_count(store: ClickHouseStore, table: str) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{table}")[1][0][0])


# ---- the command ---------------------------------------------------------------------------------
SEED = """
import sys
from stream.store import ClickHouseStore
from tests.stream.test_backfill import seed
s = ClickHouseStore(sys.argv[1], "tracejudge"); s.migrate(); seed(s, 20); s.close()
"""


def test_backfill_command_with_progress_and_resume(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEJUDGE_", "FAKE_"))}
    env = {**clean, **KEY_ENV, "TRACEJUDGE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "160", "PYTHONPATH": str(repo)}
    dsn = f"chdb://{tmp_path / 'data' / 'clickhouse'}"
    subprocess.run([sys.executable, "-c", SEED, dsn], cwd=repo, env=env, check=True, timeout=120)

    def tracejudge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stream", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)  # fmt: skip

    since = "2027-01-14T00:00:00"  # NOW - 1 day is 2027-01-14T08:00Z; traces completed before NOW
    with FakeProviderServer() as server:
        server.default = honest()
        judging = tmp_path / "judging.yaml"
        judging.write_text(yaml.safe_dump(config(server)))
        no_judge = tracejudge("backfill", "--judge", "nope", "--since", since, "--judging", str(judging))
        assert no_judge.returncode == 2 and "not configured" in no_judge.stderr
        no_key = subprocess.run([sys.executable, "-m", "stream", "backfill", "--judge", "task_completion", "--since", since,
                                 "--judging", str(judging)], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                                env={k: v for k, v in env.items() if k not in KEY_ENV})  # fmt: skip
        assert no_key.returncode == 2 and "FAKE_OPENAI_KEY" in no_key.stderr
        bad_time = tracejudge("backfill", "--judge", "task_completion", "--since", "yesterday", "--judging", str(judging))
        assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
        first = tracejudge("backfill", "--judge", "task_completion", "--since", since, "--until", "2027-01-15T08:00:00Z",
                           "--judging", str(judging), "--limit", "8")  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        assert "20 sampled traces" in first.stdout and "0 already judged" in first.stdout
        assert "judged 8" in first.stdout and "remaining 12" in first.stdout and "--limit" in first.stdout
        second = tracejudge("backfill", "--judge", "task_completion", "--since", since, "--until", "2027-01-15T08:00:00Z",
                            "--judging", str(judging))  # fmt: skip
        assert second.returncode == 0, second.stdout + second.stderr
        assert "8 already judged" in second.stdout and "judged 12" in second.stdout and "remaining 0" in second.stdout
        assert "20/20" in second.stdout  # the progress bar, resumed at 8
        assert len(server.requests) == 20
    q = tracejudge("sql", "--format", "json", "SELECT count() AS n, uniqExact(trace_id) AS u, "
                   "(SELECT count() FROM tracejudge.judge_calls WHERE purpose = 'backfill') AS calls "
                   "FROM tracejudge.verdicts FINAL")  # fmt: skip
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == {"n": 20, "u": 20, "calls": 20}
