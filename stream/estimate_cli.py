"""``tracejudge estimate``: the pass rate over ALL traffic from labeled samples.

Labels come from the ``verdicts`` table (``--judge``: ok verdicts of one judge version) or from a
JSONL file of ``{"trace_id": ..., "passed": true|false}`` (from judges, or from
humans labeling the sampled traces). Each label is joined with its trace's recorded decision
(inclusion probability ``p`` and sampling stratum), and the population of every stratum is counted
in ``traces`` — so the estimate is inverse-probability weighted (post-stratified by default), not
the naive rate of a failure-biased sample, which is printed next to it for contrast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.estimate import Estimate, Judged, Method, estimate_pass_rate, naive_rate

Query = Callable[[str], tuple[list[str], list[Any]]]


class LabelError(ValueError):
    pass


def read_labels(path: Path) -> dict[str, bool]:
    labels: dict[str, bool] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            tid, passed = str(doc["trace_id"]).lower(), doc["passed"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LabelError(f"{path}:{n}: expected {{\"trace_id\": ..., \"passed\": true|false}}: {exc}") from None
        if not isinstance(passed, bool):
            raise LabelError(f"{path}:{n}: passed must be true or false")
        labels[tid] = passed
    return labels


_JUDGE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def valid_judge(judge: str) -> None:
    """A judge name safe to put in SQL (it is a config identifier), else LabelError."""
    if not _JUDGE.match(judge):
        raise LabelError(f"not a judge name: {judge[:64]!r}")


def valid_rubric_hash(rubric_hash: str) -> str:
    """A rubric hash (64 hex) safe to put in SQL, else LabelError."""
    if not _HASH.match(rubric_hash):
        raise LabelError(f"not a rubric hash: {rubric_hash[:80]!r}")
    return rubric_hash


def newest_rubric_hash(query: Query, db: str, judge: str) -> str:
    """The rubric hash of the judge's most recent verdicts (its version now)."""
    valid_judge(judge)
    _, rows = query(
        f"SELECT rubric_hash FROM {db}.verdicts FINAL WHERE judge = '{judge}' "
        "GROUP BY rubric_hash ORDER BY max(judged_at) DESC LIMIT 1"
    )
    if not rows:
        raise LabelError(f"no verdicts of judge {judge!r}")
    return valid_rubric_hash(str(rows[0][0]))


def only_judge(query: Query, db: str) -> str:
    """The judge when exactly one has verdicts (what ``--judge`` defaults to), else a LabelError that
    names the judges to choose from."""
    _, rows = query(f"SELECT judge, count() FROM {db}.verdicts FINAL GROUP BY judge ORDER BY judge")
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows:
        raise LabelError("no verdicts yet: nothing to label the traces with")
    names = ", ".join(f"{j} ({n:,} verdicts)" for j, n in rows)
    raise LabelError(f"several judges have verdicts, give --judge: {names}")


def labels_from_verdicts(
    query: Query, db: str, judge: str, rubric_hash: str | None = None, pass_label: str = "pass"
) -> tuple[dict[str, bool], str, dict[str, int]]:
    """Labels from the ``verdicts`` table: ok verdicts of one judge version (default: the newest),
    passed = label == ``pass_label``. Returns (labels, rubric hash, verdict counts by status)."""
    valid_judge(judge)
    rubric_hash = valid_rubric_hash(rubric_hash) if rubric_hash is not None else newest_rubric_hash(query, db, judge)
    _, rows = query(
        f"SELECT trace_id, status, label FROM {db}.verdicts FINAL "
        f"WHERE judge = '{judge}' AND rubric_hash = '{rubric_hash}'"
    )  # judge and hash validated above: nothing to escape
    labels = {str(t): str(lab) == pass_label for t, status, lab in rows if status == "ok"}
    statuses: dict[str, int] = {}
    for _, status, _ in rows:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return labels, rubric_hash, statuses


def _id_list(ids: list[str]) -> str:
    for t in ids:
        if len(t) != 32 or any(c not in "0123456789abcdef" for c in t):
            raise LabelError(f"not a 32-hex trace id: {t[:64]!r}")
    return ", ".join(f"'{t}'" for t in ids)  # validated hex only: nothing to escape


def estimate_from_labels(
    query: Query, db: str, labels: dict[str, bool], method: Method = "poststratified", where: str = ""
) -> tuple[Estimate, float, int]:
    """(estimate, naive rate, labels that are not of a sampled trace). A label of a trace the
    sampler did not keep is left out: its trace was not drawn with its recorded ``p`` (a failure
    found through a support ticket, say), and counting it as a sample member biases the estimate
    and narrows the interval around the wrong value."""
    _, pop_rows = query(
        f"SELECT sample_stratum, count() FROM {db}.traces FINAL WHERE sample_stratum != '' "
        f"{'AND ' + where if where else ''} GROUP BY sample_stratum"
    )
    population = {str(k): int(v) for k, v in pop_rows}
    samples: list[Judged] = []
    ids = sorted(labels)
    for i in range(0, len(ids), 5000):
        chunk = ids[i : i + 5000]
        _, rows = query(
            f"SELECT trace_id, inclusion_p, sample_stratum FROM {db}.traces FINAL "
            f"WHERE trace_id IN ({_id_list(chunk)}) AND sampled = 1 AND sample_stratum != '' AND inclusion_p > 0"
        )
        samples += [Judged(labels[tid], float(p), str(stratum)) for tid, p, stratum in rows]
    missing = len(labels) - len(samples)
    return estimate_pass_rate(samples, method=method, population=population), naive_rate(samples), missing
