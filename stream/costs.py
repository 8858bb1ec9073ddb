"""Finance: judge spend, budget burn with a month-end projection, and the agents' own LLM spend.

Plain functions over a *query callable* (``sql -> (columns, rows)``): ``ClickHouseStore.query``
in tests, :func:`stream.cli.run_sql` in the CLI (which goes through the worker's read-only API
when a worker holds the embedded store). They read the views of ``schemas/sql/0006_finance.sql``.
``run_sql`` takes no query parameters, so every value put into SQL here is generated from a
validated Python value (an identifier checked against a pattern, an ``int``, or a timestamp
formatted by ``strftime``); nothing the user types reaches the SQL text.

Two reports, never mixed:

* **judge spend** (:func:`judge_spend`): the ``judge_calls`` ledger grouped by any of
  ``day, judge, model, agent, team, tier, purpose, service, provider``; with a judging config,
  :func:`budget_report` adds this budget period's charged spend against the global and per-judge
  budgets and a projected month-end spend;
* **agents' own LLM spend** (:func:`agent_spend`): tokens of the monitored agents' LLM spans,
  priced in Python with :mod:`stream.prices`. Models without a price are reported as unpriced
  (with their tokens), never as zero.

Month-end projection (:func:`project_month_end`), UTC calendar month, clock injected::

    elapsed_days = (now - first day of the month 00:00 UTC) / 86400     (fractional)
    daily_avg    = month_to_date_spend / elapsed_days
    projected    = daily_avg * days_in_month

i.e. a straight line through the month-to-date spend, extended to the end of the month. Using
fractional days means a partial day counts for what has elapsed of it, so the projection does not
jump at midnight. Month-to-date spend counts every judge call (charged or not) with ``ts < now``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from judges.config import BudgetSpec
from stream.prices import PriceTable

Query = Callable[[str], tuple[list[str], list[Any]]]

#: ``--by`` dimension -> column of ``judge_calls_attributed``
JUDGE_DIMS: dict[str, str] = {
    "day": "day", "judge": "judge", "model": "model", "agent": "agent_name", "team": "team",
    "tier": "tier", "purpose": "purpose", "service": "service_name", "provider": "provider",
}  # fmt: skip
#: ``--by`` dimension -> column of ``agent_llm_calls``
AGENT_DIMS: dict[str, str] = {
    "day": "day", "service": "service_name", "agent": "agent_name", "team": "team",
    "provider": "provider", "model": "model",
}  # fmt: skip
DEFAULT_JUDGE_BY = ("day", "judge", "model")
DEFAULT_AGENT_BY = ("day", "service", "agent", "model")
ALL_JUDGES = "*"  # the global budget's line in a BudgetReport

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CostsError(ValueError):
    """Invalid arguments (the message says which and why)."""


# ---- arguments ----------------------------------------------------------------------------------
def parse_by(text: str | None, dims: dict[str, str], default: Sequence[str]) -> tuple[str, ...]:
    """``"day,judge,model"`` -> ``("day", "judge", "model")``, each a known dimension, no repeats."""
    if text is None:
        return tuple(default)
    parts = [p.strip().lower() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise CostsError(f"--by: empty dimension in {text[:80]!r}; choose from {', '.join(dims)}")
    unknown = [p for p in parts if p not in dims]
    if unknown:
        raise CostsError(f"--by: unknown dimension {unknown[0][:40]!r}; choose from {', '.join(dims)}")
    if len(set(parts)) != len(parts):
        raise CostsError(f"--by: a dimension is repeated in {text[:80]!r}")
    return tuple(parts)


def parse_instant(text: str, option: str = "--since") -> datetime:
    """An ISO date (``2026-03-01`` = 00:00 UTC) or date-time (``2026-03-01T12:00:00+02:00``;
    without an offset it is UTC), as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CostsError(f"{option}: not an ISO date or date-time: {text[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _ts(value: datetime) -> str:
    """A ClickHouse DateTime64(6, 'UTC') literal generated from a datetime (never from user text)."""
    return f"toDateTime64('{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}', 6, 'UTC')"


def _db(db: str) -> str:
    if not _IDENT.match(db):
        raise CostsError(f"invalid database name {db[:64]!r}")
    return db


@dataclass(frozen=True)
class Window:
    """A half-open time range ``[since, until)``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise CostsError("--since must be before --until")

    def where(self, column: str) -> str:
        conds = []
        if self.since is not None:
            conds.append(f"{column} >= {_ts(self.since)}")
        if self.until is not None:
            conds.append(f"{column} < {_ts(self.until)}")
        return " AND ".join(conds) or "1"


def _group_sql(view: str, db: str, by: Sequence[str], dims: dict[str, str], metrics: str, window: Window) -> str:
    keys = ", ".join(f"toString(a.{dims[d]}) AS k{i}" for i, d in enumerate(by))
    order = ", ".join(f"k{i}" for i in range(len(by)))
    return (f"SELECT {keys}, {metrics} FROM {_db(db)}.{view} AS a WHERE {window.where('a.ts')} "
            f"GROUP BY {order} ORDER BY {order}")  # fmt: skip


# ---- judge spend ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeSpendRow:
    key: tuple[str, ...]  # values of the --by dimensions, in order
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    charged_usd: float  # paid from the budget shares (live, backlog, flake)


def judge_spend(query: Query, db: str, by: Sequence[str], window: Window = Window()) -> list[JudgeSpendRow]:
    """Judge calls grouped by ``by`` (dimensions of :data:`JUDGE_DIMS`), ordered by them."""
    if not by:
        raise CostsError("--by: give at least one dimension")
    metrics = ("count() AS n_calls, countIf(a.status != 'ok') AS n_failed, sum(a.input_tokens) AS t_in, "
               "sum(a.output_tokens) AS t_out, sum(a.cost_usd) AS usd, sumIf(a.cost_usd, a.charged = 1) AS usd_charged")  # fmt: skip
    _, rows = query(_group_sql("judge_calls_attributed", db, by, JUDGE_DIMS, metrics, window))
    n = len(by)
    return [JudgeSpendRow(tuple(str(v) for v in r[:n]), int(r[n]), int(r[n + 1]), int(r[n + 2]), int(r[n + 3]),
                          float(r[n + 4]), float(r[n + 5])) for r in rows]  # fmt: skip


def total_judge_spend(rows: Iterable[JudgeSpendRow]) -> JudgeSpendRow:
    rows = list(rows)
    return JudgeSpendRow((), sum(r.calls for r in rows), sum(r.failed_calls for r in rows),
                         sum(r.input_tokens for r in rows), sum(r.output_tokens for r in rows),
                         sum(r.cost_usd for r in rows), sum(r.charged_usd for r in rows))  # fmt: skip


# ---- budget burn and projection ------------------------------------------------------------------
def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def project_month_end(month_to_date_usd: float, now: datetime) -> tuple[float, float, int]:
    """``(projected month-end USD, elapsed days, days in month)``: the month-to-date daily average
    (over fractional elapsed days) times the days of the month. At the very start of the month
    (nothing elapsed) the projection is the month-to-date spend itself."""
    now = now.astimezone(UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    elapsed = (now - month_start(now)).total_seconds() / 86400
    if elapsed <= 0:
        return month_to_date_usd, 0.0, days
    return month_to_date_usd / elapsed * days, elapsed, days


@dataclass(frozen=True)
class BudgetLine:
    judge: str  # ALL_JUDGES for the global budget
    limit_usd: float | None  # per period; None = no budget configured
    spent_usd: float  # charged to the budget shares in the current period
    uncharged_usd: float  # current period, outside the shares (calibration, drift)
    pct_of_limit: float | None  # 100 * spent / limit; None without a (non-zero) limit
    month_to_date_usd: float  # all calls this calendar month, up to now
    projected_month_usd: float
    month_limit_usd: float | None  # the per-period limit scaled to this month's length
    projected_pct_of_month_limit: float | None


@dataclass(frozen=True)
class BudgetReport:
    now: datetime
    period_s: float
    period: int  # floor(unix seconds / period_s), as on the ledger
    period_start: datetime
    period_end: datetime
    month_start: datetime
    days_in_month: int
    elapsed_days: float
    lines: list[BudgetLine] = field(default_factory=list)


def _pct(value: float, limit: float | None) -> float | None:
    return None if not limit else 100.0 * value / limit


def budget_report(query: Query, db: str, budget: BudgetSpec, now: datetime) -> BudgetReport:
    """Spend of the current budget period against the configured budgets, and the month-end
    projection, as of ``now`` (aware datetime). Lines: the global budget (``judge = "*"``), then
    every judge that has a budget or spent anything this period or month, by name."""
    db = _db(db)
    now = now.astimezone(UTC)
    period = int(now.timestamp() // budget.period_s)
    p_start = datetime.fromtimestamp(period * budget.period_s, UTC)
    m_start = month_start(now)
    _, prow = query(
        f"SELECT judge, sumIf(cost_usd, kafka_partition >= 0) AS charged, sumIf(cost_usd, kafka_partition < 0) AS other "
        f"FROM {db}.judge_calls FINAL WHERE period = {period:d} GROUP BY judge"
    )  # fmt: skip
    _, mrow = query(
        f"SELECT judge, sum(cost_usd) AS usd FROM {db}.judge_calls FINAL "
        f"WHERE ts >= {_ts(m_start)} AND ts < {_ts(now)} GROUP BY judge"
    )  # fmt: skip
    charged = {str(j): float(c) for j, c, _ in prow}
    other = {str(j): float(o) for j, _, o in prow}
    mtd = {str(j): float(u) for j, u in mrow}
    _, elapsed, days = project_month_end(0.0, now)
    month_factor = days * 86400 / budget.period_s

    def line(judge: str, limit: float | None, spent: float, unch: float, month: float) -> BudgetLine:
        projected, _, _ = project_month_end(month, now)
        month_limit = None if limit is None else limit * month_factor
        return BudgetLine(judge, limit, spent, unch, _pct(spent, limit), month, projected, month_limit,
                          _pct(projected, month_limit))  # fmt: skip

    lines = [line(ALL_JUDGES, budget.global_usd, sum(charged.values()), sum(other.values()), sum(mtd.values()))]
    for judge in sorted(set(budget.per_judge_usd) | set(charged) | set(other) | set(mtd)):
        lines.append(line(judge, budget.per_judge_usd.get(judge), charged.get(judge, 0.0), other.get(judge, 0.0),
                          mtd.get(judge, 0.0)))  # fmt: skip
    return BudgetReport(now, budget.period_s, period, p_start, p_start + timedelta(seconds=budget.period_s), m_start,
                        days, elapsed, lines)  # fmt: skip


# ---- agents' own LLM spend ---------------------------------------------------------------------
@dataclass(frozen=True)
class AgentSpendRow:
    key: tuple[str, ...]
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # the priced part; None when no call of the row is priced
    unpriced_models: tuple[str, ...] = ()
    unpriced_calls: int = 0
    unpriced_input_tokens: int = 0
    unpriced_output_tokens: int = 0
    calls_without_usage: int = 0  # LLM spans that recorded no tokens: their cost is unknown too

    @property
    def fully_priced(self) -> bool:
        return not self.unpriced_models


@dataclass(frozen=True)
class UnpricedModel:
    model: str  # "" = the span named no model
    llm_calls: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class AgentSpendReport:
    by: tuple[str, ...]
    rows: list[AgentSpendRow]
    total: AgentSpendRow
    unpriced: list[UnpricedModel]  # every model without a price, with its usage
    prices_as_of: str


def _merge(key: tuple[str, ...], parts: list[tuple[str, int, int, int, int, float | None]]) -> AgentSpendRow:
    """One output row from its per-model parts ``(model, calls, in, out, no_usage, cost|None)``."""
    priced = [p for p in parts if p[5] is not None]
    unpriced = [p for p in parts if p[5] is None]
    return AgentSpendRow(
        key, sum(p[1] for p in parts), sum(p[2] for p in parts), sum(p[3] for p in parts),
        sum(p[5] for p in priced) if priced else None,  # type: ignore[misc]
        tuple(sorted({p[0] for p in unpriced})), sum(p[1] for p in unpriced), sum(p[2] for p in unpriced),
        sum(p[3] for p in unpriced), sum(p[4] for p in parts),
    )  # fmt: skip


def agent_spend(query: Query, db: str, by: Sequence[str], prices: PriceTable, window: Window = Window()) -> AgentSpendReport:
    """The monitored agents' LLM usage grouped by ``by`` (dimensions of :data:`AGENT_DIMS`) and priced
    per model. Rows are ordered by ``by``; the model is always queried (to price each part) and
    summed away when it is not one of the dimensions."""
    if not by:
        raise CostsError("--by: give at least one dimension")
    dims = tuple(by) + (() if "model" in by else ("model",))
    metrics = ("count() AS n_calls, sum(a.input_tokens) AS t_in, sum(a.output_tokens) AS t_out, "
               "countIf(a.input_tokens = 0 AND a.output_tokens = 0) AS n_no_usage")  # fmt: skip
    _, rows = query(_group_sql("agent_llm_calls", db, dims, AGENT_DIMS, metrics, window))
    n, m = len(dims), dims.index("model")
    keep = [i for i, d in enumerate(dims) if d in by]
    grouped: dict[tuple[str, ...], list[tuple[str, int, int, int, int, float | None]]] = {}
    unpriced: dict[str, list[int]] = {}
    for r in rows:
        values = tuple(str(v) for v in r[:n])
        model, calls, t_in, t_out, no_usage = values[m], int(r[n]), int(r[n + 1]), int(r[n + 2]), int(r[n + 3])
        cost = prices.cost(model, t_in, t_out)
        if cost is None:
            u = unpriced.setdefault(model, [0, 0, 0])
            u[0], u[1], u[2] = u[0] + calls, u[1] + t_in, u[2] + t_out
        grouped.setdefault(tuple(values[i] for i in keep), []).append((model, calls, t_in, t_out, no_usage, cost))
    out = [_merge(k, parts) for k, parts in grouped.items()]  # insertion order = ORDER BY of the query
    total = _merge((), [p for parts in grouped.values() for p in parts])
    missing = [UnpricedModel(model, c, i, o) for model, (c, i, o) in sorted(unpriced.items())]
    return AgentSpendReport(tuple(by), out, total, missing, prices.as_of)
