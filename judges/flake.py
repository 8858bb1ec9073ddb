"""Flake detection: judge a small, deterministic share of traces twice and quarantine a judge
version that disagrees with itself too often.

Selection hashes (judge, trace id), so every worker, replay and restart picks the same traces.
Quarantine is derived from the counts of (judge, rubric_hash) pairs: a version is quarantined while
it has at least ``min_pairs`` pairs and a disagreement rate above ``max_disagreement``. The counts
live in ``judge_rejudges``; a worker reloads them at start (:meth:`FlakeTracker.load`), so the state
after a restart is the state before it. A version can leave quarantine if later pairs bring its
rate back to the threshold or below.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from judges.config import FlakeSpec

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class FlakeStats:
    pairs: int
    disagreements: int
    rate: float | None  # None before the first pair
    quarantined: bool


def selection_point(trace_id: str, judge: str) -> float:
    """A uniform number in [0, 1) determined by (judge, trace id)."""
    digest = hashlib.blake2b(f"{judge}\x00{trace_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class FlakeTracker:
    def __init__(self, spec: FlakeSpec) -> None:
        self.spec = spec
        self._counts: dict[tuple[str, str], list[int]] = {}  # (judge, rubric_hash) -> [pairs, disagreements]

    def selected(self, trace_id: str, judge: str) -> bool:
        """Whether this trace is judged a second time by this judge (share ``spec.fraction``)."""
        return self.spec.fraction > 0.0 and selection_point(trace_id, judge) < self.spec.fraction

    def load(self, judge: str, rubric_hash: str, pairs: int, disagreements: int) -> None:
        """Set the counts of a judge version (from stored re-judges), replacing what was held."""
        if pairs < 0 or not 0 <= disagreements <= pairs:
            raise ValueError(f"invalid flake counts: pairs={pairs} disagreements={disagreements}")
        self._counts[(judge, rubric_hash)] = [pairs, disagreements]

    def _quarantined(self, pairs: int, disagreements: int) -> bool:
        return pairs >= self.spec.min_pairs and disagreements / pairs > self.spec.max_disagreement

    def add(self, judge: str, rubric_hash: str, first_label: str, second_label: str) -> bool:
        """Record one pair; True exactly when this pair makes the version newly quarantined."""
        counts = self._counts.setdefault((judge, rubric_hash), [0, 0])
        before = self._quarantined(*counts)
        counts[0] += 1
        counts[1] += int(first_label != second_label)
        return not before and self._quarantined(*counts)

    def quarantined(self, judge: str, rubric_hash: str) -> bool:
        counts = self._counts.get((judge, rubric_hash))
        return counts is not None and self._quarantined(*counts)

    def stats(self, judge: str, rubric_hash: str) -> FlakeStats:
        pairs, disagreements = self._counts.get((judge, rubric_hash), (0, 0))
        return FlakeStats(pairs, disagreements, disagreements / pairs if pairs else None,
                          pairs > 0 and self._quarantined(pairs, disagreements))  # fmt: skip
