"""`tracejudge gates`: per-gate precision from gate results joined with one judge version's verdicts, in real ClickHouse."""

from __future__ import annotations

import pytest

from stream.estimate_cli import LabelError
from stream.gate_precision import gate_precision
from stream.store import ClickHouseStore

NEW, OLD = "b" * 64, "a" * 64
GATE_COLS = ["trace_id", "gate", "gate_type", "outcome", "completed_at"]
VERDICT_COLS = ["trace_id", "judge", "rubric_hash", "status", "label", "judged_at", "version"]


def _tid(i: int) -> str:
    return f"{i:032x}"


def test_precision_per_gate_against_the_newest_judge_version(store: ClickHouseStore) -> None:
    gates, verdicts = [], []
    # tool_errors fails traces 0-9: 0-5 judged fail, 6-7 judged pass, 8 unscored, 9 never judged
    for i in range(10):
        gates.append([_tid(i), "tool_errors", "tool_errors", "fail", 1000])
    for i in range(6):
        verdicts.append([_tid(i), "task_completion", NEW, "ok", "fail", 2000, 1])
    verdicts += [[_tid(6), "task_completion", NEW, "ok", "pass", 2000, 1], [_tid(7), "task_completion", NEW, "ok", "pass", 2000, 1],
                 [_tid(8), "task_completion", NEW, "unscored", None, 2000, 1]]  # fmt: skip
    # slow_trace also fails traces 4-5 (both judged fail) and 20 (judged pass); an "error" outcome is not a flag
    gates += [[_tid(4), "slow_trace", "latency", "fail", 1000], [_tid(5), "slow_trace", "latency", "fail", 1000],
              [_tid(20), "slow_trace", "latency", "fail", 1000], [_tid(21), "slow_trace", "latency", "error", 1000]]  # fmt: skip
    verdicts.append([_tid(20), "task_completion", NEW, "ok", "pass", 2000, 1])
    # an older judge version said the opposite everywhere, and another judge exists: neither counts
    verdicts += [[_tid(i), "task_completion", OLD, "ok", "pass", 1000, 1] for i in range(6)]
    verdicts += [[_tid(i), "groundedness", NEW, "ok", "fail", 3000, 1] for i in range(6, 8)]
    store.insert("gate_results", gates, GATE_COLS)
    store.insert("verdicts", verdicts, VERDICT_COLS)

    version, rows = gate_precision(store.query, store.database, "task_completion")
    assert version == NEW
    by_gate = {r.gate: r for r in rows}
    assert [r.gate for r in rows] == ["tool_errors", "slow_trace"]  # most flagged first
    te, st = by_gate["tool_errors"], by_gate["slow_trace"]
    assert (te.flagged, te.judged, te.failing, te.alone) == (10, 8, 6, 6)  # 4-5 also failed slow_trace
    assert te.precision == pytest.approx(0.75)
    low, high = te.interval
    assert 0.3 < low < 0.75 < high < 1.0
    assert (st.flagged, st.judged, st.failing, st.alone) == (3, 3, 2, 1)

    _, old = gate_precision(store.query, store.database, "task_completion", OLD)
    assert {r.gate: (r.judged, r.failing) for r in old} == {"tool_errors": (6, 0), "slow_trace": (2, 0)}


@pytest.mark.parametrize(
    "kwargs",
    [{"judge": "x'; DROP TABLE verdicts --"}, {"judge": "task_completion", "rubric_hash": "' OR 1=1 --"},
     {"judge": "task_completion", "rubric_hash": NEW, "pass_label": "pass' OR '1"}],
    ids=["judge", "hash", "label"],
)  # fmt: skip
def test_names_that_could_break_the_query_are_refused(store: ClickHouseStore, kwargs: dict) -> None:
    with pytest.raises(LabelError):
        gate_precision(store.query, store.database, **kwargs)


def test_a_judge_without_verdicts_is_an_error(store: ClickHouseStore) -> None:
    with pytest.raises(LabelError, match="no verdicts"):
        gate_precision(store.query, store.database, "task_completion")
