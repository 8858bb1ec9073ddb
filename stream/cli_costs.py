"""``tracejudge costs``: judge spend for finance, budget burn, and the agents' own LLM spend.

Registered on the ``tracejudge`` app by the import at the end of :mod:`stream.cli`. The numbers
come from :mod:`stream.costs` over :func:`stream.cli.run_sql` (the running worker's read-only API
when it holds the embedded store, else the store itself, or the ClickHouse server).

Output formats:

* ``table`` (default): rich tables; every text cell is a ``Text`` (never read as markup) with
  control characters shown as ``\\xNN``;
* ``csv``: the grouped rows (csv module quoting). Text cells that a spreadsheet would run as a
  formula (starting with ``= + - @``, tab or CR) are prefixed with ``'``. With ``--judging`` the
  budget table follows after one empty line, with its own header;
* ``json``: one document with the rows, the total, and the budget (or the unpriced models).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stream.cli import ConfigOpt, _settings, app, console, err, run_sql
from stream.costs import (
    AGENT_DIMS,
    ALL_JUDGES,
    DEFAULT_AGENT_BY,
    DEFAULT_JUDGE_BY,
    JUDGE_DIMS,
    AgentSpendReport,
    BudgetReport,
    CostsError,
    JudgeSpendRow,
    Window,
    agent_spend,
    budget_report,
    judge_spend,
    parse_by,
    parse_instant,
    total_judge_spend,
)

JUDGE_METRICS = ("calls", "failed_calls", "input_tokens", "output_tokens", "cost_usd", "charged_usd")
AGENT_METRICS = ("llm_calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_models", "unpriced_calls",
                 "unpriced_input_tokens", "unpriced_output_tokens", "calls_without_usage")  # fmt: skip
BUDGET_COLUMNS = ("judge", "limit_usd", "spent_usd", "pct_of_limit", "uncharged_usd", "month_to_date_usd",
                  "projected_month_usd", "month_limit_usd", "projected_pct_of_month_limit")  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---- records (one plain dict per output row; shared by csv and json) --------------------------
def _num(value: Any) -> Any:
    """Floats rounded to 1e-10 (sums of binary fractions print as 0.0012144, not 0.0012143999999999998)."""
    return round(value, 10) if isinstance(value, float) else value


def judge_records(by: Sequence[str], rows: Sequence[JudgeSpendRow]) -> list[dict[str, Any]]:
    return [dict(zip(by, r.key, strict=True)) | {m: _num(getattr(r, m)) for m in JUDGE_METRICS} for r in rows]


def agent_records(report: AgentSpendReport) -> list[dict[str, Any]]:
    out = []
    for r in report.rows:
        rec: dict[str, Any] = dict(zip(report.by, r.key, strict=True))
        rec.update({m: _num(getattr(r, m)) for m in AGENT_METRICS})
        rec["unpriced_models"] = list(r.unpriced_models)
        out.append(rec)
    return out


def budget_records(report: BudgetReport) -> list[dict[str, Any]]:
    return [{c: _num(getattr(line, c)) for c in BUDGET_COLUMNS} for line in report.lines]


def budget_meta(report: BudgetReport) -> dict[str, Any]:
    return {
        "as_of": report.now.isoformat(), "period_s": report.period_s, "period": report.period,
        "period_start": report.period_start.isoformat(), "period_end": report.period_end.isoformat(),
        "month_start": report.month_start.isoformat(), "days_in_month": report.days_in_month,
        "elapsed_days": report.elapsed_days,
        "projection": "month_to_date_usd / elapsed_days * days_in_month (UTC calendar month)",
    }  # fmt: skip


# ---- writers ---------------------------------------------------------------------------------------
def _csv_cell(value: Any, text_column: bool) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):  # unpriced models; "" = the span named no model
        value = ";".join(v or "(no model)" for v in value)
    if text_column and isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # a spreadsheet would run it as a formula
    return value


def write_csv(out: TextIO, columns: Sequence[str], records: Sequence[dict[str, Any]], text_columns: set[str]) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for rec in records:
        w.writerow([_csv_cell(rec.get(c), c in text_columns) for c in columns])


def _cell(value: Any) -> Text:
    """Untrusted text for a rich table: never markup, control characters made visible."""
    text = "(none)" if value == "" else str(value)
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.4f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def print_judge_table(con: Console, by: Sequence[str], rows: Sequence[JudgeSpendRow], title: str) -> None:
    table = Table(title=escape(title))
    for c in (*by, "calls", "failed", "tokens in", "tokens out", "USD", "charged USD"):
        table.add_column(c, justify="left" if c in by else "right")
    for r in rows:
        table.add_row(*(_cell(v) for v in r.key), str(r.calls), str(r.failed_calls), f"{r.input_tokens:,}",
                      f"{r.output_tokens:,}", _usd(r.cost_usd), _usd(r.charged_usd))  # fmt: skip
    t = total_judge_spend(rows)
    table.add_row("total", *([""] * (len(by) - 1)), str(t.calls), str(t.failed_calls), f"{t.input_tokens:,}",
                  f"{t.output_tokens:,}", _usd(t.cost_usd), _usd(t.charged_usd), style="bold")  # fmt: skip
    con.print(table)


def print_budget_table(con: Console, report: BudgetReport) -> None:
    p0, p1 = report.period_start.strftime("%Y-%m-%d %H:%M"), report.period_end.strftime("%Y-%m-%d %H:%M")
    table = Table(title=f"Budget period {p0} – {p1} UTC (period_s {report.period_s:g}); "
                        f"month {report.month_start:%Y-%m}: {report.elapsed_days:.2f} of {report.days_in_month} days")  # fmt: skip
    for c in ("judge", "budget / period", "spent (charged)", "% of budget", "not charged", "month to date",
              "projected month-end", "month budget", "projected % of month"):  # fmt: skip
        table.add_column(c, justify="left" if c == "judge" else "right")
    for ln in report.lines:
        name = "ALL (global)" if ln.judge == ALL_JUDGES else ln.judge
        table.add_row(_cell(name), "—" if ln.limit_usd is None else _usd(ln.limit_usd), _usd(ln.spent_usd),
                      _pct(ln.pct_of_limit), _usd(ln.uncharged_usd), _usd(ln.month_to_date_usd),
                      _usd(ln.projected_month_usd), "—" if ln.month_limit_usd is None else _usd(ln.month_limit_usd),
                      _pct(ln.projected_pct_of_month_limit), style="bold" if ln.judge == ALL_JUDGES else None)  # fmt: skip
    con.print(table)
    con.print("projected month-end = month-to-date / elapsed days × days in month (linear, UTC calendar month)")


def print_agent_table(con: Console, report: AgentSpendReport, title: str) -> None:
    table = Table(title=escape(title))
    for c in (*report.by, "LLM calls", "tokens in", "tokens out", "USD (priced part)", "unpriced tokens", "calls w/o usage"):
        table.add_column(c, justify="left" if c in report.by else "right")
    for r in (*report.rows, report.total):
        unpriced = "" if r.fully_priced else f"{r.unpriced_input_tokens + r.unpriced_output_tokens:,}"
        # no call of the row recorded tokens: a price times zero tokens is not a known cost
        usd = "unknown" if r.llm_calls and r.calls_without_usage == r.llm_calls else _usd(r.cost_usd)
        cells = [_cell(v) for v in r.key] if r.key else ["total", *([""] * (len(report.by) - 1))]
        table.add_row(*cells, str(r.llm_calls), f"{r.input_tokens:,}", f"{r.output_tokens:,}", usd, unpriced,
                      str(r.calls_without_usage or ""), style=None if r.key else "bold")  # fmt: skip
    con.print(table)
    if report.unpriced:
        con.print("Unpriced models: no price in the table, so their cost is UNKNOWN (not zero); add them with --prices")
        miss = Table()
        for c in ("model", "LLM calls", "tokens in", "tokens out"):
            miss.add_column(c, justify="left" if c == "model" else "right")
        for u in report.unpriced:
            miss.add_row(_cell(u.model or "(no model)"), str(u.llm_calls), f"{u.input_tokens:,}", f"{u.output_tokens:,}")
        con.print(miss)
    if report.total.calls_without_usage:
        con.print(f"{report.total.calls_without_usage} LLM calls recorded no token usage: their cost is unknown")
    con.print(f"prices as of {escape(report.prices_as_of)}; estimates at list prices (no cache discounts)")


# ---- the command ---------------------------------------------------------------------------------
def _window(since: str | None, until: str | None) -> Window:
    return Window(parse_instant(since, "--since") if since else None, parse_instant(until, "--until") if until else None)


def _range_text(window: Window) -> str:
    since = window.since.isoformat() if window.since else "the beginning"
    return f"{since} to {window.until.isoformat() if window.until else 'now'}"


@app.command()
def costs(
    by: Optional[str] = typer.Option(None, "--by", help=f"group by, comma-separated. Judges: {', '.join(JUDGE_DIMS)} "
                                     f"(default {','.join(DEFAULT_JUDGE_BY)}). --agents: {', '.join(AGENT_DIMS)} "
                                     f"(default {','.join(DEFAULT_AGENT_BY)})"),  # fmt: skip
    since: Optional[str] = typer.Option(None, "--since", help="from this ISO date or date-time (UTC unless an offset is given)"),
    until: Optional[str] = typer.Option(None, "--until", help="up to (excluding) this ISO date or date-time"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    judging: Optional[Path] = typer.Option(None, "--judging", help="judging YAML: add budget burn vs its budgets and the projected month-end spend"),
    agents: bool = typer.Option(False, "--agents", help="the monitored agents' OWN LLM spend (priced by the price table) instead of judge spend"),
    prices: Optional[Path] = typer.Option(None, "--prices", help="price table YAML (same format as stream/prices.yaml) overriding the built-in one"),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="clock for the budget period and projection (default: now)"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Judge spend grouped for finance, with budget burn and a month-end projection (--judging);
    or, with --agents, the monitored agents' own LLM spend. The two are never added together."""
    from judges.config import JudgingConfigError, load_judging_config
    from stream.prices import PriceError, load_prices

    settings = _settings(config)
    if fmt not in ("table", "csv", "json"):
        err.print("[red]--format: choose table, csv or json[/red]")
        raise typer.Exit(2)
    query = lambda q: run_sql(settings, q)  # noqa: E731
    db = settings.clickhouse_database
    try:
        window = _window(since, until)
        now = parse_instant(as_of, "--as-of") if as_of else datetime.now(UTC)
        if agents:
            if judging is not None:
                raise CostsError("--judging applies to judge spend; budgets do not cover the agents' own spend")
            report = agent_spend(query, db, parse_by(by, AGENT_DIMS, DEFAULT_AGENT_BY), load_prices(prices), window)
            _emit_agents(report, fmt, window)
            return
        if prices is not None:
            raise CostsError("--prices applies to --agents (judge calls are priced by the judging config when made)")
        dims = parse_by(by, JUDGE_DIMS, DEFAULT_JUDGE_BY)
        budget = budget_report(query, db, load_judging_config(judging).budget, now) if judging is not None else None
        _emit_judges(dims, judge_spend(query, db, dims, window), budget, fmt, window)
    except (CostsError, PriceError, JudgingConfigError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except PermissionError as exc:
        err.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except Exception as exc:  # the store or the worker API failed
        err.print(f"[red]query failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _emit_judges(by: Sequence[str], rows: list[JudgeSpendRow], budget: BudgetReport | None, fmt: str, window: Window) -> None:
    if fmt == "csv":
        write_csv(sys.stdout, (*by, *JUDGE_METRICS), judge_records(by, rows), set(by))
        if budget is not None:
            sys.stdout.write("\n")
            write_csv(sys.stdout, BUDGET_COLUMNS, budget_records(budget), {"judge"})
    elif fmt == "json":
        total = {m: getattr(total_judge_spend(rows), m) for m in JUDGE_METRICS}
        doc = {"report": "judge_spend", "by": list(by), "since": window.since and window.since.isoformat(),
               "until": window.until and window.until.isoformat(), "rows": judge_records(by, rows), "total": total,
               "budget": None if budget is None else budget_meta(budget) | {"lines": budget_records(budget)}}  # fmt: skip
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        print_judge_table(console, by, rows, f"Judge spend (judge_calls), {_range_text(window)}")
        if budget is not None:
            print_budget_table(console, budget)


def _emit_agents(report: AgentSpendReport, fmt: str, window: Window) -> None:
    if fmt == "csv":
        write_csv(sys.stdout, (*report.by, *AGENT_METRICS), agent_records(report), set(report.by) | {"unpriced_models"})
    elif fmt == "json":
        total = {m: getattr(report.total, m) for m in AGENT_METRICS} | {"unpriced_models": list(report.total.unpriced_models)}
        doc = {"report": "agent_llm_spend", "by": list(report.by), "since": window.since and window.since.isoformat(),
               "until": window.until and window.until.isoformat(), "prices_as_of": report.prices_as_of,
               "rows": agent_records(report), "total": total,
               "unpriced_models": [u.__dict__ for u in report.unpriced]}  # fmt: skip
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        print_agent_table(console, report, f"Agents' own LLM spend (spans), {_range_text(window)}")
