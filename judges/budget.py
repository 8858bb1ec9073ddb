"""Hard per-period USD budgets for the LLM judges, enforced without a central lock.

Every partition of the ``traces.to_judge`` topic owns an equal share of each budget::

    share = limit / partitions_total          (the global budget and each per-judge budget)

A worker only judges traces of the partitions it owns (Kafka assigns each partition to exactly
one consumer of the group), so as long as each owner keeps its partitions within their shares,
the sum over all workers never exceeds the limit: no worker has to ask any other.

When a partition is assigned, the caller loads what it has already spent in the current period
from the ClickHouse ledger (:meth:`BudgetBook.load`); when it is revoked the book forgets it
(:meth:`BudgetBook.drop`). Before each judge call the caller reserves the call's estimated cost
(:meth:`BudgetBook.try_reserve`, which refuses a call that does not fit); afterwards it settles
the reservation with the actual cost (:meth:`BudgetBook.settle`).

Degradation ladder (:class:`Level`), per partition and judge, on the fraction of the share that
is spent or reserved (the worst of the global budget and the judge's own budget, if any):
``NORMAL`` → ``NO_SUCCESS`` at ``stop_success_at`` → ``CHEAP_ONLY`` at ``cheap_only_at`` →
``DEFER`` at 1.0. At ``DEFER`` :meth:`~BudgetBook.try_reserve` refuses every call, even one with
a zero estimate. No limit configured means ``NORMAL`` forever; a limit of 0 means ``DEFER``.

Correctness property (tested in ``tests/judges/test_budget_hard_limit.py``)::

    total spend over all partitions  <=  limit + sum of in-flight overruns

For each partition and limit, a successful reservation keeps ``spent + reserved <= share``
(it is refused otherwise), and settling replaces the reserved estimate by the actual cost. Let
*t* be the partition's last successful reservation: then its final spend is at most
``share + Σ max(0, actual - estimate)`` over the calls in flight at *t*. So when estimates
upper-bound actual costs, spend never exceeds the limit; with underestimates the excess is
bounded by the overruns of calls in flight at once (at most ``max_in_flight`` calls). Spend that
bypasses reservations (:meth:`~BudgetBook.record`) and calls still in flight when a partition
changes owner (not yet in the ledger the new owner loads) count as overruns too.

Periods are UTC-aligned: ``period = floor(unix_seconds / period_s)``. Spend is kept per period,
so when the clock enters a new period every partition starts from zero; a reservation taken in
the old period settles into the old period (the ledger row of such a call should carry
``reservation.period``), which no longer affects the current level.

Topic growth: a new ``partitions_total`` (:meth:`~BudgetBook.set_partitions_total`) takes effect
at the start of the next period. Until then the old shares stand and partitions beyond the old
count get a share of 0 (``DEFER``): giving the new partitions a share mid-period while the old
ones may already have spent theirs could exceed the limit. A partition index at or beyond the
effective count is likewise given a share of 0. All workers should be told the same count.

The book is plain in-memory state for one worker's event loop: no I/O, not thread-safe.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from judges.config import BudgetSpec


class Level(IntEnum):
    """How far a partition's share is used up; higher is more restrictive."""

    NORMAL = 0  #: judge everything sampled
    NO_SUCCESS = 1  #: stop judging success samples (budget_skipped)
    CHEAP_ONLY = 2  #: no escalation beyond the cheapest tier
    DEFER = 3  #: failures deferred to the backlog; nothing is called


@dataclass(frozen=True)
class Reservation:
    """An estimated cost held for one judge call in flight; settle it exactly once.

    ``token`` identifies the reservation within the book that issued it (so a double settle is
    detected); it is not part of the budget arithmetic.
    """

    partition: int
    judge: str
    period: int
    amount_usd: float
    token: int = field(default=0, repr=False)


@dataclass
class _Partition:
    """What one owned partition has spent (per period and judge) and holds in flight."""

    spent: dict[int, dict[str, float]] = field(default_factory=dict)
    open: dict[int, Reservation] = field(default_factory=dict)

    def spent_in(self, period: int, judge: str | None = None) -> float:
        by_judge = self.spent.get(period, {})
        if judge is not None:
            return by_judge.get(judge, 0.0)
        return math.fsum(by_judge.values())

    def reserved_in(self, period: int, judge: str | None = None) -> float:
        return math.fsum(
            r.amount_usd for r in self.open.values() if r.period == period and (judge is None or r.judge == judge)
        )

    def used(self, period: int, judge: str | None = None) -> float:
        return self.spent_in(period, judge) + self.reserved_in(period, judge)

    def add(self, period: int, judge: str, usd: float) -> None:
        by_judge = self.spent.setdefault(period, {})
        by_judge[judge] = by_judge.get(judge, 0.0) + usd


def _check_usd(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative USD amount, got {value!r}")
    return value


def _check_partitions_total(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions_total must be an integer >= 1, got {n!r}")
    return n


def _check_partition(partition: int) -> int:
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be an integer >= 0, got {partition!r}")
    return partition


def _json_usd(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


class BudgetBook:
    """Spend, reservations and degradation levels of the partitions this worker owns.

    ``clock`` returns unix seconds (injected for tests); it only decides the current period.
    """

    def __init__(self, spec: BudgetSpec, partitions_total: int, clock: Callable[[], float] = time.time) -> None:
        for judge, limit in spec.per_judge_usd.items():
            _check_usd(limit, f"per_judge_usd[{judge!r}]")
        self.spec = spec
        self.clock = clock
        self._base_total = _check_partitions_total(partitions_total)
        self._total_changes: list[tuple[int, int]] = []  # (first period, partitions_total), sorted
        self._parts: dict[int, _Partition] = {}
        self._orphans: set[int] = set()  # tokens of reservations whose partition was dropped
        self._tokens = itertools.count(1)
        self._judges: set[str] = set(spec.per_judge_usd)
        self._seen_period = self.period()

    # ---- periods and partition count -------------------------------------------------------
    def period(self) -> int:
        """The current period number: ``floor(clock() / spec.period_s)``."""
        return math.floor(self.clock() / self.spec.period_s)

    def period_start(self, period: int | None = None) -> float:
        """Unix seconds at which ``period`` (default: the current one) starts."""
        return (self.period() if period is None else period) * self.spec.period_s

    def partitions_total(self, period: int | None = None) -> int:
        """The partition count the shares of ``period`` (default: the current one) divide by."""
        period = self._now() if period is None else period
        total = self._base_total
        for first, n in self._total_changes:
            if period >= first:
                total = n
        return total

    def set_partitions_total(self, n: int) -> None:
        """Divide the budgets by ``n`` partitions from the next period on (e.g. after the topic
        grew). In the current period the old shares stand, and partitions ``>=`` the old count
        get nothing, so the limit holds across the change."""
        _check_partitions_total(n)
        current = self._now()
        self._total_changes = [(first, m) for first, m in self._total_changes if first <= current]
        if n != self.partitions_total(current):
            self._total_changes.append((current + 1, n))

    # ---- ownership ---------------------------------------------------------------------------
    def load(self, partition: int, spent_by_judge: Mapping[str, float], period: int) -> None:
        """Set the spend the ledger holds for ``partition`` in ``period`` (judge -> USD), replacing
        what the book knew for that partition and period; reservations in flight are kept."""
        _check_partition(partition)
        loaded = {judge: _check_usd(usd, f"spend of {judge!r}") for judge, usd in spent_by_judge.items()}
        self._now()
        self._part(partition).spent[period] = loaded
        self._judges.update(loaded)

    def drop(self, partition: int) -> None:
        """Forget a revoked partition: its spend and reservations. Settling one of its
        reservations later is a no-op (the call's cost reaches the ledger the next owner loads)."""
        part = self._parts.pop(partition, None)
        if part is not None:
            self._orphans.update(part.open)

    def owns(self, partition: int) -> bool:
        """Whether the partition is loaded (or was used since, which auto-creates it)."""
        return partition in self._parts

    def owned(self) -> list[int]:
        """The partitions the book currently tracks, sorted."""
        return sorted(self._parts)

    # ---- decisions ---------------------------------------------------------------------------
    def level(self, partition: int, judge: str) -> Level:
        """The ladder level of ``judge`` on ``partition``: the worst over the global budget and the
        judge's own budget (if configured). An unknown partition is tracked with zero spend."""
        _check_partition(partition)
        period = self._now()
        self._judges.add(judge)
        return self._level(self._part(partition), partition, judge, period)

    def try_reserve(self, partition: int, judge: str, estimate_usd: float) -> Reservation | None:
        """Hold ``estimate_usd`` for a call, or return ``None`` if it does not fit: when
        ``spent + reserved + estimate`` would exceed the share of the global or the judge budget,
        or the level is already ``DEFER``."""
        _check_partition(partition)
        estimate = _check_usd(estimate_usd, "estimate_usd")
        period = self._now()
        part = self._part(partition)
        self._judges.add(judge)
        for share, scope in self._limits(partition, judge, period):
            used = part.used(period, scope)
            if used >= share or used + estimate > share:
                return None
        reservation = Reservation(partition, judge, period, estimate, next(self._tokens))
        part.open[reservation.token] = reservation
        return reservation

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release ``reservation`` and add ``actual_usd`` to the spend of its partition, judge and
        period (the old period if the clock has rolled over since it was taken).

        Raises ``ValueError`` for a reservation that is not in flight (settled twice, or not
        issued by this book); one whose partition was dropped meanwhile is ignored."""
        actual = _check_usd(actual_usd, "actual_usd")
        part = self._parts.get(reservation.partition)
        if part is not None and part.open.get(reservation.token) == reservation:
            del part.open[reservation.token]
            part.add(reservation.period, reservation.judge, actual)
            return
        if reservation.token in self._orphans:
            self._orphans.discard(reservation.token)
            return
        raise ValueError(f"reservation {reservation!r} is not in flight (settled twice?)")

    def record(self, partition: int, judge: str, usd: float) -> None:
        """Add spend made without a reservation (e.g. a call already paid) to the current period."""
        _check_partition(partition)
        amount = _check_usd(usd, "usd")
        period = self._now()
        self._judges.add(judge)
        self._part(partition).add(period, judge, amount)

    # ---- reporting ---------------------------------------------------------------------------
    def spent(self, partition: int | None = None, judge: str | None = None) -> float:
        """USD spent in the current period by one partition (``None``: all tracked partitions)
        and one judge (``None``: all judges); reservations in flight are not included."""
        period = self._now()
        return math.fsum(p.spent_in(period, judge) for p in self._select(partition))

    def in_flight(self, partition: int | None = None) -> float:
        """USD reserved by calls in flight that were reserved in the current period."""
        period = self._now()
        return math.fsum(p.reserved_in(period) for p in self._select(partition))

    def share(self, judge: str | None = None) -> float | None:
        """A partition's share of the global budget (``judge`` None) or of the judge's budget in
        the current period; ``None`` when that budget is unlimited."""
        limit = self.spec.global_usd if judge is None else self.spec.per_judge_usd.get(judge)
        return None if limit is None else limit / self.partitions_total()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for a status endpoint: period, shares, and per tracked partition the
        spend, the amount in flight and the level of every judge known to the book."""
        period = self._now()
        judges = sorted(self._judges)
        partitions: dict[str, Any] = {}
        for p in sorted(self._parts):
            part = self._parts[p]
            partitions[str(p)] = {
                "spent": part.spent_in(period),
                "in_flight": part.reserved_in(period),
                "spent_by_judge": dict(sorted(part.spent.get(period, {}).items())),
                "global_level": self._level(part, p, None, period).name,
                "levels": {j: self._level(part, p, j, period).name for j in judges},
            }
        nxt = self.partitions_total(period + 1)
        return {
            "period": period,
            "period_start": self.period_start(period),
            "period_s": self.spec.period_s,
            "partitions_total": self.partitions_total(period),
            "partitions_total_next": nxt if nxt != self.partitions_total(period) else None,
            "share": {
                "global": _json_usd(self.share()),
                "per_judge": {j: _json_usd(self.share(j)) for j in sorted(self.spec.per_judge_usd)},
            },
            "spent": self.spent(),
            "in_flight": self.in_flight(),
            "partitions": partitions,
        }

    # ---- internals ---------------------------------------------------------------------------
    def _now(self) -> int:
        """The current period; on entering a new one, forget spend older than the previous one."""
        period = self.period()
        if period != self._seen_period:
            self._seen_period = period
            for part in self._parts.values():
                for old in [q for q in part.spent if q < period - 1]:
                    del part.spent[old]
            base = self.partitions_total(period - 1)
            later = [(first, n) for first, n in self._total_changes if first > period - 1]
            self._base_total, self._total_changes = base, later
        return period

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        return part

    def _select(self, partition: int | None) -> Iterable[_Partition]:
        if partition is None:
            return self._parts.values()
        part = self._parts.get(partition)
        return [] if part is None else [part]

    def _limits(self, partition: int, judge: str | None, period: int) -> list[tuple[float, str | None]]:
        """(share, judge scope) of each budget that applies: global (scope None), then the judge's."""
        total = self.partitions_total(period)
        limits: list[tuple[float | None, str | None]] = [(self.spec.global_usd, None)]
        if judge is not None:
            limits.append((self.spec.per_judge_usd.get(judge), judge))
        return [(0.0 if partition >= total else limit / total, scope) for limit, scope in limits if limit is not None]

    def _level(self, part: _Partition, partition: int, judge: str | None, period: int) -> Level:
        worst = Level.NORMAL
        for share, scope in self._limits(partition, judge, period):
            used = part.used(period, scope)
            if used >= share:
                return Level.DEFER
            fraction = used / share
            if fraction >= self.spec.cheap_only_at:
                worst = max(worst, Level.CHEAP_ONLY)
            elif fraction >= self.spec.stop_success_at:
                worst = max(worst, Level.NO_SUCCESS)
        return worst
