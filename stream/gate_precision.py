"""Per-gate precision from the judges' verdicts: of the traces a gate failed that a judge labelled,
how many the judge found failing.

Every suspected failure goes to a judge, so the share of traces the gates flag bounds judge spend
from below (``bench/economics.py``: with 5.5 % of successes falsely flagged, spend is ~9 % of
judging everything; with 1 %, ~5 %). A gate whose flagged traces the judge mostly passes costs
judge calls without catching failures: tighten it (thresholds, patterns, ``required_action``
conditions) or drop it. ``tracejudge gates --judge NAME`` prints this table for one judge version
(default: the newest). ``alone`` counts the judged traces this gate was the only one to fail:
dropping the gate would stop judging exactly those.

Precision here is agreement with the judge, not with the truth: a judge's errors show up in it.
The interval is Wilson's at 95 %.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.estimate import wilson
from stream.estimate_cli import LabelError, newest_rubric_hash, valid_judge, valid_rubric_hash

Query = Callable[[str], tuple[list[str], list[Any]]]
Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class GatePrecision:
    gate: str
    flagged: int  # traces the gate failed
    judged: int  # of those, with an ok verdict of the judge version
    failing: int  # of those, labelled anything but the pass label
    alone: int  # judged traces no other gate failed

    @property
    def precision(self) -> float | None:
        return self.failing / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.precision or 0.0, self.judged, Z95)


def gate_precision(query: Query, db: str, judge: str, rubric_hash: str | None = None,
                   pass_label: str = "pass") -> tuple[str, list[GatePrecision]]:  # fmt: skip
    """(rubric hash, one row per gate that failed some trace), most flagged first."""
    valid_judge(judge)
    rubric_hash = valid_rubric_hash(rubric_hash) if rubric_hash is not None else newest_rubric_hash(query, db, judge)
    if "'" in pass_label or "\\" in pass_label:
        raise LabelError(f"not a label: {pass_label[:64]!r}")
    # judge, hash and label validated: nothing to escape. One row per (trace, gate) in gate_results
    # (ReplacingMergeTree: FINAL); a trace with no ok verdict of this version is flagged, not judged.
    _, rows = query(
        f"""
        SELECT g.gate, count() AS flagged, countIf(v.ok) AS judged, countIf(v.ok AND v.failing) AS failing,
               countIf(v.ok AND n.fails = 1) AS alone
        FROM (SELECT trace_id, gate FROM {db}.gate_results FINAL WHERE outcome = 'fail') AS g
        LEFT JOIN (SELECT trace_id, status = 'ok' AS ok, ifNull(label, '') != '{pass_label}' AS failing
                   FROM {db}.verdicts FINAL WHERE judge = '{judge}' AND rubric_hash = '{rubric_hash}') AS v
            ON g.trace_id = v.trace_id
        LEFT JOIN (SELECT trace_id, count() AS fails FROM {db}.gate_results FINAL WHERE outcome = 'fail'
                   GROUP BY trace_id) AS n
            ON g.trace_id = n.trace_id
        GROUP BY g.gate
        ORDER BY flagged DESC, g.gate
        """
    )
    return rubric_hash, [GatePrecision(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]
