"""Budget book, one book on its own: periods and period rollover, the degradation ladder (levels
by spent-plus-reserved fraction), per-judge vs global shares, reserving and settling calls,
input validation, and the JSON snapshot. Partitions and rebalances between books are in
test_budget_partitions.py, the hard-limit property under concurrent reservations in
test_budget_hard_limit.py."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.budget import BudgetBook, Level, Reservation
from tests.judges.budget_support import DAY, Clock, spec


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
