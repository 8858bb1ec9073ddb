"""Budget book: the degradation ladder, per-judge vs global shares, rebalances between books,
period rollover, topic growth, and the hard-limit property under many concurrent reservations."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.budget import BudgetBook, Level, Reservation
from judges.config import BudgetSpec

DAY = 86400.0
EPS = 1e-9


@dataclass
class Clock:
    """A settable clock in unix seconds."""

    now: float = 10 * DAY + 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(**kw: object) -> BudgetSpec:
    return BudgetSpec.model_validate(kw)


# ---- periods ------------------------------------------------------------------------------------
def test_period_is_floor_of_clock_over_period_s_and_period_start_is_aligned() -> None:
    clock = Clock(now=7200.5)
    book = BudgetBook(spec(period_s=3600), 1, clock)
    assert book.period() == 2
    assert book.period_start() == 7200.0
    assert book.period_start(5) == 18000.0
    clock.now = 10799.999
    assert book.period() == 2
    clock.now = 10800.0
    assert book.period() == 3 and book.period_start() == 10800.0


# ---- the ladder ---------------------------------------------------------------------------------
def test_ladder_climbs_in_order_as_spend_grows() -> None:
    book = BudgetBook(spec(global_usd=100, stop_success_at=0.5, cheap_only_at=0.8), 1, Clock())
    seen = []
    for _ in range(11):
        seen.append(book.level(0, "j"))
        book.record(0, "j", 10.0)
    assert seen == [Level.NORMAL] * 5 + [Level.NO_SUCCESS] * 3 + [Level.CHEAP_ONLY] * 2 + [Level.DEFER]
    assert book.spent() == pytest.approx(110.0)
    assert book.level(0, "j") == Level.DEFER  # stays deferred beyond the share


def test_ladder_thresholds_are_inclusive() -> None:
    book = BudgetBook(spec(global_usd=10, stop_success_at=0.3, cheap_only_at=0.6), 1, Clock())
    book.record(0, "j", 2.9999)
    assert book.level(0, "j") == Level.NORMAL
    book.record(0, "j", 0.0001)
    assert book.level(0, "j") == Level.NO_SUCCESS
    book.record(0, "j", 2.9999)
    assert book.level(0, "j") == Level.NO_SUCCESS
    book.record(0, "j", 0.0001)
    assert book.level(0, "j") == Level.CHEAP_ONLY
    book.record(0, "j", 3.9999)
    assert book.level(0, "j") == Level.CHEAP_ONLY
    book.record(0, "j", 0.0001)
    assert book.level(0, "j") == Level.DEFER


@given(st.lists(st.floats(min_value=0.0, max_value=30.0, allow_nan=False), max_size=30),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))  # fmt: skip
def test_ladder_is_monotone_and_matches_the_fraction(amounts: list[float], a: float, b: float) -> None:
    stop, cheap = min(a, b), max(a, b)
    book = BudgetBook(spec(global_usd=100, stop_success_at=stop, cheap_only_at=cheap), 1, Clock())
    previous = Level.NORMAL
    for usd in amounts:
        book.record(0, "j", usd)
        level = book.level(0, "j")
        fraction = book.spent(0) / 100
        expected = (Level.DEFER if fraction >= 1 else Level.CHEAP_ONLY if fraction >= cheap
                    else Level.NO_SUCCESS if fraction >= stop else Level.NORMAL)  # fmt: skip
        assert level == expected
        assert level >= previous
        previous = level


def test_reservations_in_flight_count_toward_the_level() -> None:
    book = BudgetBook(spec(global_usd=100), 1, Clock())
    r = book.try_reserve(0, "j", 60.0)
    assert r is not None
    assert book.in_flight(0) == 60.0 and book.spent(0) == 0.0
    assert book.level(0, "j") == Level.NO_SUCCESS
    book.settle(r, 10.0)
    assert book.in_flight(0) == 0.0 and book.spent(0) == 10.0
    assert book.level(0, "j") == Level.NORMAL


def test_unlimited_budget_is_always_normal() -> None:
    book = BudgetBook(spec(), 4, Clock())
    assert book.share() is None and book.share("j") is None
    book.record(0, "j", 1e9)
    assert book.level(0, "j") == Level.NORMAL
    assert book.try_reserve(0, "j", 1e9) is not None


def test_a_zero_limit_defers_and_refuses_even_free_calls() -> None:
    book = BudgetBook(spec(global_usd=0), 2, Clock())
    assert book.share() == 0.0
    assert book.level(0, "j") == Level.DEFER
    assert book.try_reserve(0, "j", 0.0) is None
    judge_only = BudgetBook(spec(per_judge_usd={"a": 0}), 2, Clock())
    assert judge_only.level(0, "a") == Level.DEFER
    assert judge_only.try_reserve(0, "a", 0.0) is None
    assert judge_only.level(0, "b") == Level.NORMAL
    assert judge_only.try_reserve(0, "b", 5.0) is not None


# ---- per-judge vs global ------------------------------------------------------------------------
def test_judge_budget_limits_only_that_judge_and_global_budget_limits_all() -> None:
    book = BudgetBook(spec(global_usd=100, per_judge_usd={"a": 20}), 1, Clock())
    assert book.share() == 100.0 and book.share("a") == 20.0 and book.share("b") is None
    book.record(0, "a", 20.0)
    assert book.level(0, "a") == Level.DEFER
    assert book.try_reserve(0, "a", 0.5) is None
    assert book.level(0, "b") == Level.NORMAL  # global fraction 0.2
    rb = book.try_reserve(0, "b", 30.0)
    assert rb is not None
    assert book.level(0, "b") == Level.NO_SUCCESS  # 50 of 100 spent or reserved
    book.settle(rb, 30.0)
    book.record(0, "b", 30.0)
    assert book.level(0, "c") == Level.CHEAP_ONLY  # an unconfigured judge follows the global share
    book.record(0, "b", 20.0)
    assert book.level(0, "b") == Level.DEFER and book.level(0, "c") == Level.DEFER
    assert book.try_reserve(0, "c", 0.0) is None
    assert book.spent(0, "a") == 20.0 and book.spent(0, "b") == 80.0 and book.spent(0) == 100.0


def test_judge_level_is_the_worst_of_its_own_and_the_global_fraction() -> None:
    book = BudgetBook(spec(global_usd=100, per_judge_usd={"a": 50}), 1, Clock())
    book.record(0, "a", 30.0)  # judge fraction 0.6 -> NO_SUCCESS, global 0.3
    assert book.level(0, "a") == Level.NO_SUCCESS
    assert book.level(0, "b") == Level.NORMAL
    book.record(0, "b", 55.0)  # global 0.85 -> CHEAP_ONLY for everyone
    assert book.level(0, "a") == Level.CHEAP_ONLY
    assert book.level(0, "b") == Level.CHEAP_ONLY


def test_try_reserve_refuses_exactly_what_does_not_fit() -> None:
    book = BudgetBook(spec(global_usd=40, per_judge_usd={"a": 8}), 4, Clock())  # shares 10 and 2
    book.record(0, "b", 9.0)
    assert book.try_reserve(0, "b", 1.5) is None
    r = book.try_reserve(0, "b", 1.0)  # exactly fills the share
    assert r is not None
    assert (r.partition, r.judge, r.period, r.amount_usd) == (0, "b", book.period(), 1.0)
    assert book.level(0, "b") == Level.DEFER
    assert book.try_reserve(0, "b", 0.0) is None
    book.record(1, "a", 1.5)
    assert book.try_reserve(1, "a", 0.6) is None  # judge share 2 exceeded, global share has room
    assert book.try_reserve(1, "a", 0.5) is not None


def test_settle_releases_once_and_rejects_a_second_settle() -> None:
    book = BudgetBook(spec(global_usd=10), 1, Clock())
    r = book.try_reserve(0, "j", 3.0)
    assert r is not None
    book.settle(r, 2.0)
    with pytest.raises(ValueError, match="not in flight"):
        book.settle(r, 2.0)
    assert book.spent() == 2.0 and book.in_flight() == 0.0
    with pytest.raises(ValueError, match="not in flight"):
        book.settle(Reservation(0, "j", book.period(), 1.0), 1.0)


def test_record_counts_spend_without_a_reservation() -> None:
    book = BudgetBook(spec(global_usd=10), 1, Clock())
    book.record(0, "j", 9.5)
    assert book.spent(0, "j") == 9.5 and book.in_flight() == 0.0
    assert book.try_reserve(0, "j", 1.0) is None


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


# ---- the hard-limit property --------------------------------------------------------------------
Scoped = dict[tuple[int, str | None], float]  # (partition, judge or None for the global budget) -> USD


def _simulate(seed: int, underestimate: bool) -> tuple[Scoped, Scoped, Scoped]:
    """Many calls in flight at once over several partitions and judges. Returns, per (partition,
    scope), the final spend, the share, and the overruns of calls in flight at the scope's last
    successful reservation (the bound of the excess)."""
    rng = random.Random(seed)
    n = rng.randint(1, 5)
    judges = ["a", "b", "c"]
    per_judge = {"a": rng.uniform(5, 40), "b": rng.uniform(5, 40)}
    book = BudgetBook(spec(global_usd=rng.uniform(20, 100), per_judge_usd=per_judge), n, Clock())
    open_: list[tuple[Reservation, float]] = []
    bound: dict[tuple[int, str | None], float] = {}
    checked_fit = 0
    for _ in range(600):
        if open_ and (rng.random() < 0.45 or len(open_) >= 40):
            r, actual = open_.pop(rng.randrange(len(open_)))
            book.settle(r, actual)
            continue
        p, j = rng.randrange(n), rng.choice(judges)
        est = rng.uniform(0.0, 3.0)
        actual = est * (rng.uniform(0.5, 2.5) if underestimate else rng.uniform(0.0, 1.0))
        r = book.try_reserve(p, j, est)
        if r is None:
            continue
        open_.append((r, actual))
        for share, scope in ((book.share(), None), (book.share(j), j)):
            if share is None:
                continue
            mine = [(x, act) for x, act in open_ if x.partition == p and scope in (None, x.judge)]
            used = book.spent(p, scope) + math.fsum(x.amount_usd for x, _ in mine)
            assert used <= share + EPS  # a successful reservation never overcommits
            checked_fit += 1
            bound[(p, scope)] = math.fsum(max(0.0, act - x.amount_usd) for x, act in mine)
    for r, actual in open_:
        book.settle(r, actual)
    assert book.in_flight() == 0.0 and checked_fit > 0
    spent: Scoped = {}
    shares: Scoped = {}
    for p in range(n):
        for scope, share in ((None, book.share()), ("a", book.share("a")), ("b", book.share("b"))):
            assert share is not None
            spent[(p, scope)] = book.spent(p, scope)
            shares[(p, scope)] = share
            bound.setdefault((p, scope), 0.0)
    return spent, shares, bound


@pytest.mark.parametrize("seed", range(25))
def test_spend_never_exceeds_the_limit_when_estimates_bound_costs(seed: int) -> None:
    spent, shares, _ = _simulate(seed, underestimate=False)
    for key, usd in spent.items():
        assert usd <= shares[key] + EPS, key
    n = 1 + max(p for p, _ in spent)
    for scope in (None, "a", "b"):
        limit = shares[(0, scope)] * n
        assert math.fsum(spent[(p, scope)] for p in range(n)) <= limit + EPS


@pytest.mark.parametrize("seed", range(25))
def test_underestimates_overrun_by_at_most_the_calls_in_flight(seed: int) -> None:
    spent, shares, bound = _simulate(seed, underestimate=True)
    n = 1 + max(p for p, _ in spent)
    for key, usd in spent.items():
        assert usd <= shares[key] + bound[key] + EPS, key
    for scope in (None, "a", "b"):
        limit = shares[(0, scope)] * n
        total = math.fsum(spent[(p, scope)] for p in range(n))
        assert total <= limit + math.fsum(bound[(p, scope)] for p in range(n)) + EPS


def test_underestimates_do_overrun_in_the_simulation() -> None:
    """The bound above is not vacuous: with underestimates the share is really exceeded."""
    excess = 0.0
    for seed in range(25):
        spent, shares, bound = _simulate(seed, underestimate=True)
        excess = max(excess, *(spent[k] - shares[k] for k in spent))
        assert any(v > 0 for v in bound.values())
    assert excess > 0.1


# ---- period rollover ----------------------------------------------------------------------------
def test_rollover_starts_the_new_period_from_zero() -> None:
    clock = Clock(now=10 * DAY + 100.0)
    book = BudgetBook(spec(global_usd=10), 1, clock)
    book.record(0, "j", 10.0)
    old = book.try_reserve(0, "j", 0.0)
    assert old is None and book.level(0, "j") == Level.DEFER
    clock.now = 11 * DAY
    assert book.period() == 11
    assert book.spent() == 0.0 and book.level(0, "j") == Level.NORMAL
    assert book.try_reserve(0, "j", 10.0) is not None


def test_reservation_from_the_old_period_settles_into_the_old_period() -> None:
    clock = Clock(now=10 * DAY + 100.0)
    book = BudgetBook(spec(global_usd=10), 1, clock)
    r = book.try_reserve(0, "j", 6.0)
    assert r is not None and r.period == 10
    assert book.level(0, "j") == Level.NO_SUCCESS
    clock.advance(DAY)
    assert book.in_flight() == 0.0 and book.level(0, "j") == Level.NORMAL  # not counted in period 11
    book.settle(r, 9.0)
    assert book.spent() == 0.0 and book.level(0, "j") == Level.NORMAL
    clock.advance(-DAY)  # looking back at period 10: the spend landed there
    assert book.spent() == 9.0 and book.level(0, "j") == Level.CHEAP_ONLY


def test_old_periods_are_forgotten() -> None:
    clock = Clock(now=10 * DAY)
    book = BudgetBook(spec(global_usd=10), 1, clock)
    book.record(0, "j", 1.0)
    clock.advance(3 * DAY)
    book.spent()
    clock.advance(-3 * DAY)
    assert book.spent() == 0.0


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


# ---- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, -1])
def test_partitions_total_must_be_positive(n: int) -> None:
    with pytest.raises(ValueError, match="partitions_total"):
        BudgetBook(spec(global_usd=1), n, Clock())
    book = BudgetBook(spec(global_usd=1), 1, Clock())
    with pytest.raises(ValueError, match="partitions_total"):
        book.set_partitions_total(n)


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf])
def test_amounts_must_be_finite_and_non_negative(bad: float) -> None:
    book = BudgetBook(spec(global_usd=10), 1, Clock())
    with pytest.raises(ValueError, match="estimate_usd"):
        book.try_reserve(0, "j", bad)
    r = book.try_reserve(0, "j", 1.0)
    assert r is not None
    with pytest.raises(ValueError, match="actual_usd"):
        book.settle(r, bad)
    assert book.in_flight() == 1.0  # a rejected settle leaves the reservation in flight
    with pytest.raises(ValueError, match="usd"):
        book.record(0, "j", bad)
    with pytest.raises(ValueError):
        book.load(0, {"j": bad}, book.period())
    assert book.spent() == 0.0


def test_negative_partition_and_negative_judge_limit_are_rejected() -> None:
    book = BudgetBook(spec(global_usd=10), 1, Clock())
    with pytest.raises(ValueError, match="partition"):
        book.level(-1, "j")
    with pytest.raises(ValueError, match="partition"):
        book.try_reserve(-1, "j", 1.0)
    with pytest.raises(ValueError, match="per_judge_usd"):
        BudgetBook(spec(per_judge_usd={"j": -1.0}), 1, Clock())


# ---- snapshot -----------------------------------------------------------------------------------
def test_snapshot_is_json_and_reports_spend_in_flight_and_levels() -> None:
    clock = Clock(now=3 * DAY + 1.0)
    book = BudgetBook(spec(global_usd=100, per_judge_usd={"a": 20}), 2, clock)
    book.load(0, {"a": 10.0}, book.period())
    r = book.try_reserve(1, "b", 30.0)
    assert r is not None
    snap = book.snapshot()
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap
    assert snap["period"] == 3 and snap["period_start"] == 3 * DAY and snap["partitions_total"] == 2
    assert snap["share"] == {"global": 50.0, "per_judge": {"a": 10.0}}
    assert snap["spent"] == 10.0 and snap["in_flight"] == 30.0
    p0, p1 = snap["partitions"]["0"], snap["partitions"]["1"]
    assert p0["spent"] == 10.0 and p0["in_flight"] == 0.0 and p0["spent_by_judge"] == {"a": 10.0}
    assert p0["levels"] == {"a": "DEFER", "b": "NORMAL"} and p0["global_level"] == "NORMAL"
    assert p1["in_flight"] == 30.0 and p1["levels"] == {"a": "NO_SUCCESS", "b": "NO_SUCCESS"}
    assert json.dumps(BudgetBook(spec(global_usd=math.inf), 1, clock).snapshot(), allow_nan=False)
