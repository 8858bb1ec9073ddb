"""The demo's judging: which provider the demo's worker judges with (the user's judging_file, OpenAI
when ``OPENAI_API_KEY`` is set, else the SIMULATED local provider), waiting for the judge agent to
catch up, and the Judges part of the summary (verdicts, escalations, spend, pass-rate estimate)."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from stream.config import Settings
from stream.demo.fleet import FleetStats
from stream.demo.judging_config import demo_judging_config, judging_mode
from stream.demo.sim_provider import (
    SIM_API_KEY,
    SIM_API_KEY_ENV,
    SimulatedProvider,
)

if TYPE_CHECKING:
    from stream.demo.run import WorkerProcess


@dataclass
class DemoJudging:
    """How the demo's worker judges: ``mode`` openai | simulated | custom (the user's judging_file)."""

    mode: str
    path: Path
    sim: SimulatedProvider | None = None
    judges: tuple[str, ...] = ()
    budget_usd: float | None = None
    period_s: float = 86400.0


def _setup_judging(settings: Settings, data_dir: Path, env: dict[str, str], stack: ExitStack,
                   console: Console) -> DemoJudging:  # fmt: skip
    """Point the worker at a judging file (``env``): the user's own ``judging_file`` if set, else a
    demo config for OpenAI (OPENAI_API_KEY set) or for a local SIMULATED provider started here."""
    from judges.config import JudgingConfigError, load_judging_config

    if settings.judging_file is not None:
        path, mode, sim = settings.judging_file.resolve(), "custom", None
        console.print(f"judges: configured by judging_file {escape(str(path))}")
    else:
        sim = None
        if judging_mode() == "simulated":
            sim = stack.enter_context(SimulatedProvider(latency_s=0.05))
            env[SIM_API_KEY_ENV] = SIM_API_KEY
        path, mode = demo_judging_config(data_dir / "demo-judging.yaml", sim.url if sim else None)
        if sim is not None:
            console.print(f"judges: [bold yellow]SIMULATED[/bold yellow] local provider at {escape(sim.url)} "
                          "(no OPENAI_API_KEY set) — rule-based stand-in, not a model")  # fmt: skip
        else:
            console.print("judges: OpenAI (OPENAI_API_KEY is set) — real calls, capped by the demo budget")
    env["TRACEJUDGE_JUDGING_FILE"] = str(path)
    try:
        cfg = load_judging_config(path)
    except JudgingConfigError as exc:  # the worker will refuse it too, with the same message
        console.print(f"[red]judging config invalid: {escape(str(exc))}[/red]")
        return DemoJudging(mode, path, sim)
    return DemoJudging(mode, path, sim, tuple(cfg.rubrics()), cfg.budget.global_usd, cfg.budget.period_s)



# ---- judges: wait for the judging agent, then summarize verdicts, spend and the estimate -----------

_JUDGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _try_sql(worker: WorkerProcess, query: str) -> list[list[Any]] | None:
    """Rows, or None when the query fails (e.g. the judging tables do not exist yet)."""
    try:
        return worker.sql(query)
    except (RuntimeError, httpx.HTTPError, ValueError, KeyError):
        return None


def _judging_status(worker: WorkerProcess) -> dict[str, Any] | None:
    try:
        judging = worker.status().get("judging")
    except (httpx.HTTPError, ValueError):
        return None
    return judging if isinstance(judging, dict) else None


def _wait_for_judging(worker: WorkerProcess, started_ms: int, db: str, console: Console, n_judges: int,
                      timeout: float = 180.0, stall: float = 20.0) -> None:  # fmt: skip
    """Until every sampled trace of this run has a verdict of each judge (or nothing moves for
    ``stall`` seconds): the judging agent works behind the trace pipeline."""
    if _judging_status(worker) is None:
        return  # no judging agent in this worker: nothing to wait for
    since = f"fromUnixTimestamp64Milli({started_ms})"
    sampled_q = f"SELECT sum(sampled) FROM {db}.traces FINAL WHERE completed_at >= {since}"
    judged_q = (
        f"SELECT count(), sum(n) FROM (SELECT trace_id, uniqExact(judge) AS n FROM {db}.verdicts FINAL "
        f"WHERE trace_id IN (SELECT trace_id FROM {db}.traces FINAL WHERE completed_at >= {since} AND sampled = 1) "
        f"GROUP BY trace_id HAVING n >= {max(1, n_judges)})"
    )  # fmt: skip
    rows = _try_sql(worker, sampled_q)
    sampled = int(rows[0][0] or 0) if rows else 0
    if not sampled:
        return
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("traces judged", total=sampled)
        while time.monotonic() < deadline:
            rows = _try_sql(worker, judged_q)
            if rows is None:
                return  # verdicts table missing: the summary says so
            done = int(rows[0][0] or 0)
            progress.update(task, completed=done)
            if done >= sampled:
                return
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > stall:
                break
            time.sleep(0.5)
    console.print(f"judging still in progress ({last}/{sampled} sampled traces judged); summarizing what is stored")


def _fmt_usd(x: Any) -> str:
    return f"${float(x or 0.0):.4f}"


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}%"


def _judges_summary(worker: WorkerProcess, stats: FleetStats, started_ms: int, db: str, console: Console,
                    judging: DemoJudging) -> None:  # fmt: skip
    since = f"fromUnixTimestamp64Milli({started_ms})"
    in_run = f"trace_id IN (SELECT trace_id FROM {db}.traces FINAL WHERE completed_at >= {since})"
    label = {"simulated": "SIMULATED local provider (rule-based, not a model)", "openai": "OpenAI",
             "custom": f"judging_file {judging.path}"}.get(judging.mode, judging.mode)  # fmt: skip
    console.print(f"\n[bold]Judges[/bold] — {escape(label)}; judges: {escape(', '.join(judging.judges) or '?')}")
    status = _judging_status(worker)
    if status and status.get("paused"):
        for provider, message in status["paused"].items():
            console.print(f"[yellow]provider {escape(str(provider))} paused:[/yellow] {escape(str(message))[:200]}")
    by_label = _try_sql(
        worker,
        f"SELECT judge, status, ifNull(label, ''), count(), round(avg(score), 2), sum(escalated), sum(cache_hit) "
        f"FROM {db}.verdicts FINAL WHERE {in_run} GROUP BY judge, status, label ORDER BY judge, status, label",
    )  # fmt: skip
    if not by_label:
        why = "the worker runs no judging agent" if status is None else f"see {worker.log_path}"
        console.print(f"no verdicts yet ({escape(why)})")
        return
    verdicts = Table("judge", "status", "label", "verdicts", "avg score", "escalated", "cache hits",
                     title="Verdicts (this run, FINAL)")  # fmt: skip
    for judge, st, lab, n, score, esc, hits in by_label:
        verdicts.add_row(Text(str(judge)), Text(str(st)), Text(str(lab) or "—"), str(n),
                         "—" if score is None else f"{float(score):.2f}", str(esc), str(hits))  # fmt: skip
    console.print(verdicts)
    totals = _try_sql(
        worker,
        f"SELECT count(), sum(escalated), sum(cache_hit), countIf(status = 'budget_skipped'), "
        f"countIf(status = 'error'), countIf(status = 'unscored') FROM {db}.verdicts FINAL WHERE {in_run}",
    )  # fmt: skip
    reasons = _try_sql(
        worker,
        f"SELECT escalation, count() FROM {db}.verdicts FINAL WHERE {in_run} AND escalated = 1 "
        "GROUP BY escalation ORDER BY count() DESC",
    )  # fmt: skip
    if totals:
        n, esc, hits, skipped, errors, unscored = (int(x or 0) for x in totals[0])
        why = ", ".join(f"{r or '?'} {c}" for r, c in reasons or [])
        console.print(
            f"verdicts {n}: escalations {esc}{f' ({escape(why)})' if why else ''}, cache hits {hits}, "
            f"budget_skipped {skipped}, errors {errors}, unscored {unscored}"
        )
    _judge_spend(worker, started_ms, db, console, judging)
    _judge_estimates(worker, stats, since, in_run, db, console, judging)
    examples = _try_sql(
        worker,
        f"SELECT trace_id, judge, tier, round(score, 2), explanation FROM {db}.verdicts FINAL "
        f"WHERE {in_run} AND status = 'ok' AND label != 'pass' ORDER BY judged_at DESC LIMIT 5",
    )  # fmt: skip
    if examples:
        table = Table("judge", "tier", "score", "explanation", title="Latest failing verdicts")
        table.columns.insert(0, Column("trace id", no_wrap=True, min_width=32))
        for trace_id, judge, tier, score, explanation in examples:
            table.add_row(Text(str(trace_id)), Text(str(judge)), Text(str(tier)), str(score), Text(str(explanation)[:120]))
        console.print(table)
    if judging.sim is not None:
        s = judging.sim.stats
        console.print(
            f"simulated provider: {s['requests']} answers ({s['label:pass']} pass, {s['label:fail']} fail, "
            f"{s['uncertain']} deliberately unsure on the cheap model), {s['rate_limited']} rate-limited — "
            "fixed rules, not an LLM"
        )


def _judge_spend(worker: WorkerProcess, started_ms: int, db: str, console: Console, judging: DemoJudging) -> None:
    since = f"fromUnixTimestamp64Milli({started_ms})"
    rows = _try_sql(
        worker,
        f"SELECT judge, tier, model, any(model_reported), count(), countIf(status != 'ok'), sum(input_tokens), "
        f"sum(output_tokens), sum(cost_usd) FROM {db}.judge_calls FINAL WHERE ts >= {since} "
        "GROUP BY judge, tier, model ORDER BY judge, tier",
    )  # fmt: skip
    if not rows:
        console.print("judge spend: no judge calls recorded in this run")
        return
    spend = Table("judge", "tier", "model (reported)", "calls", "failed", "tokens in", "tokens out", "USD",
                  title="Judge spend (this run, judge_calls)")  # fmt: skip
    tot = [0, 0, 0, 0, 0.0]
    for judge, tier, model, reported, calls, failed, tin, tout, usd in rows:
        shown = f"{model} ({reported})" if reported and reported != model else str(model)
        spend.add_row(Text(str(judge)), Text(str(tier)), Text(shown), str(calls), str(failed), str(tin), str(tout),
                      _fmt_usd(usd))  # fmt: skip
        for i, v in enumerate((calls, failed, tin, tout, usd)):
            tot[i] += v or 0
    spend.add_row("total", "", "", str(tot[0]), str(tot[1]), str(tot[2]), str(tot[3]), _fmt_usd(tot[4]), style="bold")
    console.print(spend)
    if judging.budget_usd is not None:
        period = int(time.time() // judging.period_s)
        spent = _try_sql(worker, f"SELECT sum(cost_usd) FROM {db}.judge_calls FINAL WHERE period = {period}")
        if spent:
            used = float(spent[0][0] or 0.0)
            share = 100 * used / judging.budget_usd if judging.budget_usd else 100.0
            console.print(f"budget: {_fmt_usd(used)} spent this period (all runs) of {_fmt_usd(judging.budget_usd)} "
                          f"per {judging.period_s / 3600:g} h ({share:.0f}%)")  # fmt: skip


def _judge_estimates(worker: WorkerProcess, stats: FleetStats, since: str, in_run: str, db: str,
                     console: Console, judging: DemoJudging) -> None:  # fmt: skip
    """The pass rate over ALL traffic of this run per judge, from its ok verdicts weighted by the
    recorded inclusion probabilities (post-stratified, MOVER-Wilson 95 % CI), next to the naive rate."""
    from stream.estimate_cli import estimate_from_labels

    def query(q: str) -> tuple[list[str], list[Any]]:
        return [], worker.sql(q)

    table = Table("judge", "judged", "pass rate, all traffic (95% CI)", "naive rate of judged",
                  title="Pass rate over all traffic of this run, estimated from verdicts")  # fmt: skip
    for judge in judging.judges:
        if not _JUDGE_NAME.match(judge):
            continue
        rows = _try_sql(
            worker,
            f"SELECT trace_id, label, rubric_hash FROM {db}.verdicts FINAL "
            f"WHERE judge = '{judge}' AND status = 'ok' AND {in_run}",
        )  # fmt: skip
        if not rows:
            continue
        newest = Counter(str(h) for _, _, h in rows).most_common(1)[0][0]  # one judge version
        labels = {str(t): str(lab) == "pass" for t, lab, h in rows if str(h) == newest}
        try:
            est, naive, _missing = estimate_from_labels(
                query, db, labels, "poststratified", where=f"completed_at >= {since}"
            )
        except (RuntimeError, ValueError, httpx.HTTPError) as exc:
            console.print(f"estimate for {escape(judge)} failed: {escape(str(exc))[:200]}")
            continue
        ci = f"{_pct(est.rate)} [{_pct(est.ci_low)}, {_pct(est.ci_high)}]"
        table.add_row(Text(judge), str(est.n_judged), ci, _pct(naive))
    if not table.rows:
        console.print("pass-rate estimate: no ok verdicts yet")
        return
    console.print(table)
    if stats.traces:
        healthy = stats.traces_by_scenario.get("healthy", 0) / stats.traces
        console.print(
            f"fleet ground truth: {_pct(healthy)} of the {stats.traces} traces sent were healthy. The naive rate "
            "counts only judged traces, which are mostly suspected failures (sampled at 1.0, successes at 0.02)."
        )
