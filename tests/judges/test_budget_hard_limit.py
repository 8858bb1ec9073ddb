"""Budget book's hard-limit property: a randomized simulation of many concurrent reservations over
several partitions and judges shows spend never exceeds a share when estimates bound costs, and
that underestimates overrun by at most the calls in flight (and really do overrun)."""

from __future__ import annotations

import math
import random

import pytest

from judges.budget import BudgetBook, Reservation
from tests.judges.budget_support import EPS, Clock, spec


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
