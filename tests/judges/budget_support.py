"""Shared helpers for the budget book tests (test_budget_*.py): a settable clock, a BudgetSpec
builder, and the constants DAY and EPS."""

from __future__ import annotations

from dataclasses import dataclass

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
