"""Budget book across partitions: each partition's own share, ownership of partitions (load,
drop, late settles after revocation), rebalances of partitions between books that must never
exceed the global limit, and topic growth (a partition count change takes effect next period)."""

from __future__ import annotations

import random

import pytest

from judges.budget import BudgetBook, Level
from tests.judges.budget_support import DAY, EPS, Clock, spec


# ---- partitions, ownership, rebalance -----------------------------------------------------------
def test_each_partition_has_its_own_share() -> None:
    book = BudgetBook(spec(global_usd=100), 4, Clock())
    assert book.share() == 25.0
    book.record(0, "j", 25.0)
    book.record(1, "j", 5.0)
    assert book.level(0, "j") == Level.DEFER
    assert book.level(1, "j") == Level.NORMAL
    assert book.try_reserve(1, "j", 20.0) is not None
    assert book.try_reserve(1, "j", 0.1) is None
    assert book.spent() == 30.0 and book.spent(0) == 25.0 and book.spent(2) == 0.0
    assert book.in_flight() == 20.0 and book.in_flight(1) == 20.0 and book.in_flight(0) == 0.0


def test_unknown_partitions_are_tracked_with_zero_spend() -> None:
    book = BudgetBook(spec(global_usd=100), 4, Clock())
    assert not book.owns(3)
    assert book.spent(3) == 0.0 and not book.owns(3)  # queries do not create
    assert book.level(3, "j") == Level.NORMAL and book.owns(3)
    assert book.try_reserve(2, "j", 1.0) is not None and book.owns(2)
    assert book.owned() == [2, 3]


def test_load_replaces_the_known_spend_and_keeps_reservations() -> None:
    clock = Clock()
    book = BudgetBook(spec(global_usd=100), 2, clock)
    period = book.period()
    book.load(0, {"a": 10.0, "b": 5.0}, period)
    assert book.owns(0) and book.spent(0) == 15.0
    r = book.try_reserve(0, "a", 4.0)
    assert r is not None
    book.load(0, {"a": 30.0}, period)
    assert book.spent(0) == 30.0 and book.spent(0, "b") == 0.0 and book.in_flight(0) == 4.0
    assert book.level(0, "a") == Level.NO_SUCCESS  # (30 + 4) / 50
    book.load(0, {"a": 50.0}, period + 1)  # a later period does not count yet
    assert book.spent(0) == 30.0
    clock.advance(DAY)
    assert book.spent(0) == 50.0 and book.level(0, "a") == Level.DEFER


def test_drop_forgets_the_partition_and_ignores_its_late_settles() -> None:
    book = BudgetBook(spec(global_usd=100), 2, Clock())
    book.load(1, {"j": 40.0}, book.period())
    r = book.try_reserve(1, "j", 5.0)
    assert r is not None
    book.drop(1)
    assert not book.owns(1) and book.spent() == 0.0 and book.in_flight() == 0.0
    book.settle(r, 5.0)  # the call finished after revocation: no error, no resurrection
    assert not book.owns(1) and book.spent() == 0.0
    with pytest.raises(ValueError):
        book.settle(r, 5.0)
    book.load(1, {"j": 45.0}, book.period())  # re-assigned: the ledger now holds that call
    assert book.spent(1) == 45.0
    book.drop(7)  # dropping an unknown partition is harmless
    assert book.owned() == [1]


def _judge(book: BudgetBook, ledger: dict[int, float], partition: int, estimate: float, actual: float) -> bool:
    """One judge call as the runtime makes it: reserve, call, settle, write the ledger row."""
    r = book.try_reserve(partition, "j", estimate)
    if r is None:
        return False
    book.settle(r, actual)
    ledger[partition] = ledger.get(partition, 0.0) + actual
    return True


def test_rebalance_between_books_never_exceeds_the_global_limit() -> None:
    clock = Clock()
    limit, n = 100.0, 4
    a, b = BudgetBook(spec(global_usd=limit), n, clock), BudgetBook(spec(global_usd=limit), n, clock)
    ledger: dict[int, float] = {}
    owner = {0: a, 1: a, 2: b, 3: b}
    for p, book in owner.items():
        book.load(p, {}, book.period())
    rng = random.Random(7)
    for step in range(2000):
        if step == 700:  # partition 1 moves from A to B: B loads what the ledger holds for it
            a.drop(1)
            b.load(1, {"j": ledger.get(1, 0.0)}, b.period())
            owner[1] = b
        if step == 1400:  # and partition 3 moves from B to A
            b.drop(3)
            a.load(3, {"j": ledger.get(3, 0.0)}, a.period())
            owner[3] = a
        p = rng.randrange(n)
        est = rng.uniform(0.01, 2.0)
        _judge(owner[p], ledger, p, est, est * rng.uniform(0.2, 1.0))
        assert sum(ledger.values()) <= limit + EPS
        assert a.spent() + b.spent() <= limit + EPS
    assert all(ledger[p] <= limit / n + EPS for p in range(n))
    assert sum(ledger.values()) > 0.95 * limit  # the budget was actually exhausted
    assert a.owned() == [0, 3] and b.owned() == [1, 2]


def test_rebalance_without_loading_the_ledger_would_overspend() -> None:
    """The counterfactual: the new owner must load the ledger, or the partition's share is spent twice."""
    clock = Clock()
    a, b = BudgetBook(spec(global_usd=100), 2, clock), BudgetBook(spec(global_usd=100), 2, clock)
    ledger: dict[int, float] = {}
    while _judge(a, ledger, 0, 1.0, 1.0):
        pass
    assert ledger[0] == pytest.approx(50.0)
    a.drop(0)
    while _judge(b, ledger, 0, 1.0, 1.0):  # b.load(0, ...) forgotten
        pass
    assert ledger[0] == pytest.approx(100.0) and ledger[0] > b.share() + EPS  # type: ignore[operator]
    b.drop(0)
    c = BudgetBook(spec(global_usd=100), 2, clock)
    c.load(0, {"j": ledger[0]}, c.period())
    assert not _judge(c, ledger, 0, 0.01, 0.01)


# ---- topic growth -------------------------------------------------------------------------------
def test_partition_count_change_takes_effect_next_period_and_keeps_the_limit() -> None:
    clock = Clock(now=10 * DAY + 5.0)
    book = BudgetBook(spec(global_usd=100), 2, clock)
    book.record(0, "j", 50.0)
    book.record(1, "j", 50.0)
    book.set_partitions_total(4)
    assert book.partitions_total() == 2 and book.share() == 50.0
    assert book.snapshot()["partitions_total_next"] == 4
    assert book.level(3, "j") == Level.DEFER  # the new partitions get nothing this period
    assert book.try_reserve(2, "j", 0.01) is None
    assert book.spent() == 100.0
    clock.advance(DAY)
    assert book.partitions_total() == 4 and book.share() == 25.0
    assert book.level(3, "j") == Level.NORMAL
    assert book.try_reserve(3, "j", 25.0) is not None
    assert book.try_reserve(3, "j", 0.01) is None
    assert book.snapshot()["partitions_total_next"] is None


def test_partition_count_change_can_be_revised_within_the_period() -> None:
    clock = Clock()
    book = BudgetBook(spec(global_usd=120), 2, clock)
    book.set_partitions_total(4)
    book.set_partitions_total(3)
    clock.advance(DAY)
    assert book.partitions_total() == 3 and book.share() == 40.0
    book.set_partitions_total(6)
    book.set_partitions_total(3)  # back to the current count: nothing pending
    clock.advance(DAY)
    assert book.share() == 40.0


def test_partition_beyond_the_count_gets_no_share() -> None:
    book = BudgetBook(spec(global_usd=100, per_judge_usd={"a": 10}), 2, Clock())
    assert book.level(2, "b") == Level.DEFER
    assert book.try_reserve(5, "b", 0.0) is None
    unlimited = BudgetBook(spec(), 2, Clock())
    assert unlimited.level(9, "b") == Level.NORMAL
