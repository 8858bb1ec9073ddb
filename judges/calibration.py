"""How well a judge agrees with human labels: agreement metrics, golden sets, golden runs.

A *golden set* is a JSONL file of human-labeled traces, one case per line::

    {"id": "refund-ok-1", "label": "pass", "envelope": {...}}

where ``envelope`` is the ``traces.to_judge`` message (what :func:`stream.judge_envelope.encode`
produces) as a JSON object, so a case is judged exactly as the live worker would judge it.
:func:`golden_line` writes such a line.

Metrics (:func:`agreement`) are computed over the *scored* pairs only: a case whose judge verdict is
not ``ok`` (unscored, error, budget skipped) has no judge label and is counted in ``n`` but not in
``n_scored``. A metric that is undefined (no scored pairs, no human positives for TPR, no human
negatives for TNR) is ``None``, never NaN.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from judges.verdict import Verdict
from schemas.model import Trace
from stream import judge_envelope

Judge = Callable[[Trace, Mapping[str, Any]], Awaitable[Verdict]]


class GoldenError(ValueError):
    """A golden file that cannot be used; the message names ``file:line``."""


# ---- agreement ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Agreement of judge labels with human labels.

    * ``accuracy``: share of scored pairs where the judge label equals the human label;
    * ``tpr``: of the scored pairs whose human label is ``positive`` (default ``fail``: a real
      failure), the share the judge also labeled ``positive`` (failures caught);
    * ``tnr``: of the scored pairs whose human label is anything else, the share the judge did
      *not* label ``positive`` (multi-class labels are collapsed to positive / not positive);
    * ``kappa``: Cohen's kappa over all labels (multi-class), ``(po - pe) / (1 - pe)``; when
      ``pe == 1`` (both raters used one and the same label throughout) it is 1.0 if ``po == 1``
      else 0.0.

    ``confusion[human][judge]`` counts the scored pairs; ``unscored[human]`` the pairs without a
    judge label.
    """

    n: int
    n_scored: int
    accuracy: float | None
    tpr: float | None
    tnr: float | None
    kappa: float | None
    confusion: dict[str, dict[str, int]]
    unscored: dict[str, int] = field(default_factory=dict)
    positive: str = "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "n_scored": self.n_scored, "accuracy": self.accuracy, "tpr": self.tpr,
            "tnr": self.tnr, "kappa": self.kappa, "confusion": self.confusion, "unscored": self.unscored,
            "positive": self.positive,
        }  # fmt: skip


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (rater a, rater b) label pairs, exact (fractions), any number of labels."""
    n = len(pairs)
    if n == 0:
        return None
    po = Fraction(sum(a == b for a, b in pairs), n)
    rows, cols = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum((Fraction(rows[k], n) * Fraction(cols[k], n) for k in rows.keys() | cols.keys()), Fraction(0))
    if pe == 1:
        return 1.0 if po == 1 else 0.0
    return float((po - pe) / (1 - pe))


def agreement(pairs: Iterable[tuple[str, str | None]], positive: str = "fail") -> Agreement:
    """Agreement of ``(human label, judge label or None)`` pairs (None: the judge gave no ok verdict)."""
    all_pairs = list(pairs)
    scored = [(h, j) for h, j in all_pairs if j is not None]
    confusion: dict[str, dict[str, int]] = {}
    for h, j in scored:
        row = confusion.setdefault(h, {})
        row[j] = row.get(j, 0) + 1
    unscored = dict(Counter(h for h, j in all_pairs if j is None))
    pos = [(h, j) for h, j in scored if h == positive]
    neg = [(h, j) for h, j in scored if h != positive]
    return Agreement(
        n=len(all_pairs),
        n_scored=len(scored),
        accuracy=_ratio(sum(h == j for h, j in scored), len(scored)),
        tpr=_ratio(sum(j == positive for _, j in pos), len(pos)),
        tnr=_ratio(sum(j != positive for _, j in neg), len(neg)),
        kappa=cohen_kappa(scored),  # type: ignore[arg-type]
        confusion={h: dict(sorted(r.items())) for h, r in sorted(confusion.items())},
        unscored=dict(sorted(unscored.items())),
        positive=positive,
    )


def tier_disagreement(verdicts_a: Sequence[Verdict], verdicts_b: Sequence[Verdict]) -> float | None:
    """Of the cases where both tiers produced an ok verdict, the share whose labels differ
    (``None`` when there is no such case). The sequences are aligned case by case."""
    if len(verdicts_a) != len(verdicts_b):
        raise ValueError(f"verdict lists differ in length: {len(verdicts_a)} != {len(verdicts_b)}")
    both = [(a.label, b.label) for a, b in zip(verdicts_a, verdicts_b, strict=True)
            if a.status == "ok" and b.status == "ok"]  # fmt: skip
    return _ratio(sum(a != b for a, b in both), len(both))


# ---- golden sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenCase:
    case_id: str
    trace: Trace
    meta: dict[str, Any]
    label: str


def _canonical(case_id: str, label: str, envelope: Any) -> str:
    """``{"id", "label", "envelope"}`` in that order (readable), the envelope with sorted keys."""
    dump = lambda o: json.dumps(o, ensure_ascii=False, sort_keys=True, separators=(",", ":"))  # noqa: E731
    return f'{{"id":{dump(case_id)},"label":{dump(label)},"envelope":{dump(envelope)}}}'


def golden_line(case_id: str, label: str, trace: Trace, meta: Mapping[str, Any]) -> str:
    """One golden-file line (canonical JSON, no newline) for a human-labeled trace."""
    envelope = json.loads(judge_envelope.encode(trace, dict(meta)))
    return _canonical(case_id, label, envelope)


def golden_hash(cases: Iterable[GoldenCase]) -> str:
    """sha256 of the set's canonical lines sorted by case id: independent of the file's key order,
    whitespace and line order; any change to a case, label or trace changes it."""
    lines = sorted((c.case_id, golden_line(c.case_id, c.label, c.trace, c.meta)) for c in cases)
    h = hashlib.sha256()
    for _, line in lines:
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def parse_golden_line(line: str, where: str = "<golden>") -> GoldenCase:
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise GoldenError(f"{where}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise GoldenError(f"{where}: expected an object with id, label and envelope")
    missing = [k for k in ("id", "label", "envelope") if k not in doc]
    if missing:
        raise GoldenError(f"{where}: missing {missing}")
    case_id, label, envelope = doc["id"], doc["label"], doc["envelope"]
    if not isinstance(case_id, str | int) or isinstance(case_id, bool) or not str(case_id).strip():
        raise GoldenError(f"{where}: id must be a non-empty string")
    if not isinstance(label, str) or not label.strip():
        raise GoldenError(f"{where}: label must be a non-empty string")
    if not isinstance(envelope, dict):
        raise GoldenError(f"{where}: envelope must be the to_judge message as a JSON object")
    try:
        trace, meta = judge_envelope.decode(json.dumps(envelope).encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any malformed envelope: name the line
        raise GoldenError(f"{where}: envelope is not a valid {judge_envelope.FORMAT} message: "
                          f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    return GoldenCase(str(case_id), trace, meta, label)


def load_golden(path: str | Path) -> list[GoldenCase]:
    """Read a golden JSONL file (blank lines skipped); raise :class:`GoldenError` naming
    ``file:line`` for a bad line or a duplicate id, or if the file holds no case."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenError(f"{path}: cannot read: {exc}") from None
    cases: list[GoldenCase] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        case = parse_golden_line(line, f"{path}:{n}")
        if case.case_id in seen:
            raise GoldenError(f"{path}:{n}: duplicate id {case.case_id!r} (first on line {seen[case.case_id]})")
        seen[case.case_id] = n
        cases.append(case)
    if not cases:
        raise GoldenError(f"{path}: no cases")
    return cases


# ---- running a golden set ----------------------------------------------------------------------


async def run_golden(
    judge: Judge, cases: Sequence[GoldenCase], concurrency: int = 8, positive: str = "fail"
) -> tuple[Agreement, list[Verdict]]:
    """Judge every case (at most ``concurrency`` at a time); the agreement with the human labels
    and the verdicts in case order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    sem = asyncio.Semaphore(concurrency)

    async def one(case: GoldenCase) -> Verdict:
        async with sem:
            return await judge(case.trace, case.meta)

    verdicts = list(await asyncio.gather(*(one(c) for c in cases)))
    pairs = [(c.label, v.label if v.status == "ok" else None) for c, v in zip(cases, verdicts, strict=True)]
    return agreement(pairs, positive), verdicts
