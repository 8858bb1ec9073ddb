"""``tracejudge policy-diff CANDIDATE``: what a policy change would do, measured on stored traces.

Every suspected failure goes to a judge, so a policy's false positives are its judge spend (README,
judge economics), and gate precision is the lever. Before a changed policy is deployed (a tighter
gate, ``ignore_recovered: identical_retry``, a signal dropped), this re-decides the newest stored
traces with both the current policy and the candidate — the same rebuilt traces
(:mod:`stream.stored_traces`), the same product events joined as the worker joins them — and counts:

* suspected failures and sampled (judge-bound) traces under each policy: the change in judge calls;
* the traces the candidate no longer suspects, by the stored verdict of a judge: ``fail`` ones are
  failures it would stop sending to a judge at 1.0 (recall given up), ``pass`` ones false positives
  it removes, ``not judged`` ones had no verdict of that judge version;
* the traces it newly suspects, by the same verdicts;
* per gate and per negative signal type, the traces it fails under each policy.

Product events join as they did when the trace was decided: an event stored as late (it came after
the decisions of the traces it is linked to, or of any trace completed before it was stored) could
not change those decisions and is left out for them (:meth:`EventJoiner.signals_for`, ``as_decided``).

Both policies run on the same traces, so every difference is the policies' own. The current
policy's decisions may differ from the stored ones (the policy changed since, spans that came after
the decision): counted as ``stored_differs``, for context. Read-only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.model import Trace
from stream.decide import TraceDecider, TraceDecision
from stream.estimate_cli import newest_rubric_hash, valid_judge, valid_rubric_hash
from stream.events import EventJoiner
from stream.policy import Policy
from stream.store import ClickHouseStore
from stream.stored_traces import TRACE_ROW_SELECT, load_traces

CHUNK = 500  # traces rebuilt per round of queries
EXAMPLES = 10  # trace ids listed per kind of change
NOT_JUDGED = "not judged"


@dataclass
class Side:
    """One policy's decisions over the traces."""

    version: str
    suspected: int = 0
    sampled: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # "gate:<name>" / "signal:<type>" -> traces


@dataclass
class PolicyDiff:
    traces: int
    base: Side
    candidate: Side
    judge: str | None
    rubric_hash: str | None
    dropped: Counter[str] = field(default_factory=Counter)  # no longer suspected, by verdict: fail / pass / not judged
    added: Counter[str] = field(default_factory=Counter)  # newly suspected, by verdict
    dropped_failing: list[str] = field(default_factory=list)  # trace ids: judged failing, no longer suspected
    added_examples: list[str] = field(default_factory=list)
    stored_differs: int = 0  # the current policy's class differs from the stored one


def _reasons(d: TraceDecision) -> list[str]:
    negative = sorted({s.type for s in d.signals if s.polarity == "negative"})
    return [f"gate:{g}" for g in d.failed_gates] + [f"signal:{t}" for t in negative]


def _suspected(d: TraceDecision) -> bool:
    return d.decision.sample_class == "suspected_failure"


def policy_diff(store: ClickHouseStore, base: Policy, candidate: Policy, since_ms: int, until_ms: int, limit: int,
                judge: str | None = None, rubric_hash: str | None = None, pass_label: str = "pass",
                join_window_s: float = 600.0, progress: Callable[[int], None] | None = None) -> PolicyDiff:  # fmt: skip
    """Re-decide the newest ``limit`` traces completed in ``[since_ms, until_ms)`` with ``base`` and
    ``candidate``; verdicts of ``judge`` (its newest version unless ``rubric_hash``) label the
    changes. Sync: runs its queries through ``store``."""
    db = store.database
    if judge is not None:
        valid_judge(judge)
        rubric_hash = valid_rubric_hash(rubric_hash) if rubric_hash else newest_rubric_hash(store.query, db, judge)
    _, rows = store.query(
        f"SELECT {TRACE_ROW_SELECT} FROM {db}.traces FINAL WHERE completed_at >= fromUnixTimestamp64Milli({{s:Int64}}) "
        "AND completed_at < fromUnixTimestamp64Milli({u:Int64}) ORDER BY c DESC, trace_id LIMIT {n:UInt32}",
        {"s": since_ms, "u": until_ms, "n": limit},
    )
    deciders = (TraceDecider(base), TraceDecider(candidate))
    joiners = tuple(EventJoiner(store, "", p.action_signals, join_window_s) for p in (base, candidate))
    out = PolicyDiff(0, Side(base.version), Side(candidate.version), judge, rubric_hash)
    for i in range(0, len(rows), CHUNK):
        loaded = load_traces(store, rows[i : i + CHUNK])
        labels = _labels(store, [t.trace_id for t, _ in loaded], judge, rubric_hash, pass_label)
        _compare(out, loaded, deciders, joiners, labels)
        if progress is not None:
            progress(out.traces)
    return out


def _labels(store: ClickHouseStore, ids: Sequence[str], judge: str | None, rubric_hash: str | None,
            pass_label: str) -> dict[str, str]:  # fmt: skip
    """trace id -> "fail" / "pass" for the traces with an ok verdict of the judge version."""
    if judge is None or not ids:
        return {}
    _, rows = store.query(
        f"SELECT trace_id, label FROM {store.database}.verdicts FINAL WHERE judge = {{j:String}} "
        "AND rubric_hash = {h:String} AND status = 'ok' AND trace_id IN {ids:Array(String)}",
        {"j": judge, "h": rubric_hash, "ids": list(ids)},
    )
    return {str(tid): "pass" if label == pass_label else "fail" for tid, label in rows}


def _compare(out: PolicyDiff, loaded: list[tuple[Trace, dict[str, Any]]], deciders: tuple[TraceDecider, ...],
             joiners: tuple[EventJoiner, ...], labels: dict[str, str]) -> None:  # fmt: skip
    traces = [t for t, _ in loaded]
    actions = [j.signals_for(traces, as_decided=True) for j in joiners]
    for trace, meta in loaded:
        tid = trace.trace_id
        b, c = (d.decide(trace, a.get(tid, ())) for d, a in zip(deciders, actions, strict=True))
        out.traces += 1
        for side, d in ((out.base, b), (out.candidate, c)):
            side.suspected += _suspected(d)
            side.sampled += d.decision.sampled
            side.reasons.update(_reasons(d))
        out.stored_differs += b.decision.sample_class != meta["decision"]["class"]
        label = labels.get(tid, NOT_JUDGED)
        if _suspected(b) and not _suspected(c):
            out.dropped[label] += 1
            if label == "fail" and len(out.dropped_failing) < EXAMPLES:
                out.dropped_failing.append(tid)
        elif _suspected(c) and not _suspected(b):
            out.added[label] += 1
            if len(out.added_examples) < EXAMPLES:
                out.added_examples.append(tid)
