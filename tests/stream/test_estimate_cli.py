"""`tracejudge estimate`: labels joined with recorded decisions in real ClickHouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.estimate_cli import LabelError, estimate_from_labels, read_labels
from stream.store import ClickHouseStore

COLS = ["trace_id", "sample_class", "sample_stratum", "inclusion_p", "sampled", "start_time", "end_time", "first_seen", "last_seen", "completed_at"]


def test_weighted_estimate_from_labels(store: ClickHouseStore, tmp_path: Path) -> None:
    # 100 suspected failures (all judged: 40 pass) and 900 successes (p = 0.1: 90 judged, all pass)
    rows, labels = [], {}
    for i in range(1000):
        tid = f"{i:032x}"
        failure = i < 100
        p = 1.0 if failure else 0.1
        sampled = failure or i % 10 == 0
        stratum = "suspected_failure" if failure else "success:base"
        rows.append([tid, stratum.split(":")[0], stratum, p, int(sampled), 1, 2, 0, 0, 0])
        if sampled:
            labels[tid] = (i % 10 < 4) if failure else True
    store.insert("traces", rows, COLS)
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps({"trace_id": t, "passed": v}) for t, v in labels.items()) + "\n")
    est, naive, missing = estimate_from_labels(store.query, store.database, read_labels(path))
    assert missing == 0 and est.n_judged == 190 and est.n_population == 1000
    assert est.rate == pytest.approx((40 + 900) / 1000)  # truth: 94 %; the sample alone says 68 %
    assert naive == pytest.approx((40 + 90) / 190)
    assert est.ci_low < est.rate <= est.ci_high <= 1.0  # every judged success passed: no room above
    # labels of traces the sampler did not keep (failures found through support tickets, say): not
    # sample members; they biased the estimate to 0.9254 [0.9006, 0.9429] in a review's simulation
    extra = {f"{i:032x}": False for i in range(101, 121) if i % 10}
    est2, _, missing2 = estimate_from_labels(store.query, store.database, {**read_labels(path), **extra})
    assert missing2 == len(extra) == 18 and (est2.rate, est2.n_judged) == (est.rate, 190)


@pytest.mark.parametrize(
    "line",
    ['{"trace_id": "x"}', '{"passed": true}', '{"trace_id": "a", "passed": "yes"}', "nope"],
    ids=["no-passed", "no-id", "string-bool", "not-json"],
)
def test_bad_label_lines_name_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"trace_id": "%s", "passed": true}\n%s\n' % ("a" * 32, line))
    with pytest.raises(LabelError, match=":2:"):
        read_labels(path)


def test_estimate_from_verdicts_uses_one_judge_version(store: ClickHouseStore) -> None:
    from stream.estimate_cli import labels_from_verdicts

    rows, verdicts = [], []
    old, new = "a" * 64, "b" * 64
    for i in range(200):
        tid = f"{i:032x}"
        failure = i < 20
        p = 1.0 if failure else 0.1
        sampled = failure or i % 10 == 0
        stratum = "suspected_failure" if failure else "success:base"
        rows.append([tid, stratum.split(":")[0], stratum, p, int(sampled), 1, 2, 0, 0, 0])
        if sampled:
            status = "budget_skipped" if i == 19 else "ok"
            label = None if status != "ok" else ("fail" if failure and i % 2 == 0 else "pass")
            verdicts.append([tid, "task_completion", new, status, label, i])
            verdicts.append([tid, "task_completion", old, "ok", "fail", 0])  # an older version: ignored
    store.insert("traces", rows, COLS)
    store.insert("verdicts", verdicts, ["trace_id", "judge", "rubric_hash", "status", "label", "judged_at"])
    labels, version, statuses = labels_from_verdicts(store.query, store.database, "task_completion")
    assert version == new and statuses == {"ok": 37, "budget_skipped": 1}
    est, naive, missing = estimate_from_labels(store.query, store.database, labels)
    assert missing == 0 and est.n_judged == 37
    # failures stratum: 9 pass of 19 judged; success stratum: all 18 judged pass
    assert est.rate == pytest.approx((20 * 9 / 19 + 180) / 200)
    with pytest.raises(LabelError):
        labels_from_verdicts(store.query, store.database, "x'; DROP TABLE t --")


def test_the_judge_defaults_to_the_only_one_with_verdicts(store: ClickHouseStore) -> None:
    from stream.estimate_cli import only_judge

    cols = ["trace_id", "judge", "rubric_hash", "status", "label", "judged_at"]
    with pytest.raises(LabelError, match="no verdicts yet"):
        only_judge(store.query, store.database)
    store.insert("verdicts", [[f"{i:032x}", "task_completion", "a" * 64, "ok", "pass", i] for i in range(3)], cols)
    assert only_judge(store.query, store.database) == "task_completion"
    store.insert("verdicts", [[f"{i:032x}", "groundedness", "b" * 64, "ok", "fail", i] for i in range(2)], cols)
    with pytest.raises(LabelError, match=r"give --judge: groundedness \(2 verdicts\), task_completion \(3 verdicts\)"):
        only_judge(store.query, store.database)
