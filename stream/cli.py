"""The ``tracejudge`` command line."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stream.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Judge LLM-agent traces from a Kafka stream.")
console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (env TRACEJUDGE_CONFIG)")


def _settings(config: Optional[Path], **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def worker(config: Optional[Path] = ConfigOpt) -> None:
    """Run the stream processor (Kafka -> assembled traces -> ClickHouse)."""
    from stream.worker import run_worker

    settings = _settings(config)
    if not settings.kafka_bootstrap:
        err.print("[red]TRACEJUDGE_KAFKA_BOOTSTRAP is not set (or kafka_bootstrap in the config file).[/red]")
        raise typer.Exit(2)
    _logging(settings.log_level)
    from judges.config import JudgingConfigError
    from stream.policy import PolicyError
    from stream.store import UnsupportedClickHouseError

    try:
        run_worker(settings)
    except (PolicyError, JudgingConfigError, UnsupportedClickHouseError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


@app.command()
def demo(
    config: Optional[Path] = ConfigOpt,
    traces: int = typer.Option(600, help="traces the simulated fleet sends"),
    rate: float = typer.Option(100.0, help="traces per second"),
    decision_wait: float = typer.Option(3.0, help="seconds of quiet after the root span before a trace completes"),
) -> None:
    """Run the whole pipeline locally: broker, simulated agent fleet, worker, summary."""
    from stream.demo.run import run_demo

    settings = _settings(config, decision_wait=decision_wait)
    if config is not None:  # the worker child process reads the same file
        os.environ["TRACEJUDGE_CONFIG"] = str(config.resolve())
    raise typer.Exit(run_demo(settings, traces=traces, rate=rate, console=console))


@app.command()
def sql(
    query: str = typer.Argument(..., help="a read-only query, e.g. \"SELECT count() FROM tracejudge.traces FINAL\""),
    config: Optional[Path] = ConfigOpt,
    fmt: str = typer.Option("table", "--format", help="table | json | tsv"),
) -> None:
    """Run a read-only query against the configured ClickHouse (via the worker when it holds the store)."""
    settings = _settings(config)
    try:
        columns, rows = run_sql(settings, query, user=True)
    except PermissionError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:
        err.print(f"[red]query failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_rows(columns, rows, fmt)


@app.command()
def estimate(
    judge: Optional[str] = typer.Option(None, "--judge", help="labels from this judge's verdicts (newest rubric version; default: the only judge with verdicts)"),
    rubric_hash: Optional[str] = typer.Option(None, "--rubric-hash", help="a specific judge version"),
    labels: Optional[Path] = typer.Option(None, "--labels", help='JSONL: {"trace_id": "...", "passed": true|false} per labeled trace'),
    method: str = typer.Option("poststratified", help="poststratified | hajek | ht"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Pass rate over ALL traffic from judged samples, weighted by the recorded inclusion probabilities."""
    from stream.estimate_cli import LabelError, estimate_from_labels, labels_from_verdicts, only_judge, read_labels

    settings = _settings(config)
    if judge is not None and labels is not None:
        err.print("[red]give one of --judge or --labels, not both[/red]")
        raise typer.Exit(2)
    query = lambda q: run_sql(settings, q)  # noqa: E731
    try:
        if labels is None:
            judge = judge or only_judge(query, settings.clickhouse_database)
            found, version, statuses = labels_from_verdicts(query, settings.clickhouse_database, judge, rubric_hash)
            console.print(f"judge {escape(judge)} version {version[:12]}: verdicts by status {statuses}")
        else:
            found = read_labels(labels)
        result, naive, missing = estimate_from_labels(query, settings.clickhouse_database, found, method)  # type: ignore[arg-type]
    except (LabelError, ValueError, OSError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"Pass rate over all traffic ({result.method}, 95 % CI)")
    for col in ("stratum", "judged", "population", "pass rate", "CI low", "CI high"):
        table.add_column(col)
    def row(name: str, e: Any, pop: Any) -> None:
        table.add_row(Text(name), str(e.n_judged), str(pop if pop is not None else ""), f"{e.rate:.4f}", f"{e.ci_low:.4f}", f"{e.ci_high:.4f}")
    for name, e in sorted(result.per_stratum.items()):
        row(name, e, e.n_population)
    row("ALL", result, result.n_population)
    console.print(table)
    console.print(f"naive (unweighted) rate of the labeled sample: {naive:.4f}; labels left out (no decided trace, or "
                  f"one the sampler did not keep): {missing}")  # fmt: skip


@app.command()
def gates(
    judge: Optional[str] = typer.Option(None, "--judge", help="precision against this judge's verdicts (newest rubric version; default: the only judge with verdicts)"),
    rubric_hash: Optional[str] = typer.Option(None, "--rubric-hash", help="a specific judge version"),
    pass_label: str = typer.Option("pass", "--pass-label", help="the judge's label for a passing trace"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Per-gate precision: of the traces each gate failed that the judge labelled, how many failed."""
    from stream.estimate_cli import LabelError, only_judge
    from stream.gate_precision import gate_precision

    settings = _settings(config)
    query = lambda q: run_sql(settings, q)  # noqa: E731
    try:
        judge = judge or only_judge(query, settings.clickhouse_database)
        version, rows = gate_precision(query, settings.clickhouse_database, judge,
                                       rubric_hash, pass_label)  # fmt: skip
    except (LabelError, ValueError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"Gate precision against judge {escape(judge)} version {version[:12]} (95 % CI)")
    for col in ("gate", "flagged", "judged", "judged failing", "precision", "CI", "judged, only this gate"):
        table.add_column(col)
    for g in rows:
        low, high = g.interval
        precision = f"{g.precision:.3f}" if g.precision is not None else "-"
        table.add_row(Text(g.gate), str(g.flagged), str(g.judged), str(g.failing), precision,
                      f"{low:.3f}-{high:.3f}" if g.judged else "-", str(g.alone))  # fmt: skip
    console.print(table)


@app.command()
def migrate(config: Optional[Path] = ConfigOpt) -> None:
    """Create or update the ClickHouse tables (a worker does it at start; on a cluster without ON CLUSTER
    DDL, run it against every server)."""
    from stream.store import ClickHouseStore

    settings = _settings(config)
    try:
        store = ClickHouseStore.from_settings(settings)
        try:
            done = store.migrate()
        finally:
            store.close()
    except Exception as exc:  # unreachable server, a held embedded store, a refused statement
        err.print(f"[red]migrate: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    where = f"cluster {settings.clickhouse_cluster}" if settings.clickhouse_cluster else "one server"
    console.print(f"{settings.clickhouse_database} ({where}): "
                  f"{'applied ' + ', '.join(done) if done else 'up to date'}", soft_wrap=True)  # fmt: skip


def run_sql(settings: Settings, query: str, user: bool = False) -> tuple[list[str], list[Any]]:
    """``(columns, rows)`` of a read-only ``query`` (stream/user_sql.py), through the running
    worker's API when it holds the embedded store. ``user``: a person's query, run within the
    user limits, a cut result said on stderr; otherwise one of tracejudge's own (costs, export,
    estimate), which a limit must never cut silently: through the API, a cut one is an error."""
    from stream import user_sql
    from stream.store import ClickHouseStore, StoreLockedError
    from stream.worker import read_worker_file

    user_sql.check(query)
    info = read_worker_file(settings) if settings.embedded else None
    if info is None:
        try:
            store = ClickHouseStore.from_settings(settings)
        except StoreLockedError:
            raise RuntimeError("the embedded store is held by a process that serves no API (is a worker starting?)") from None
        try:
            if not user:  # our own query, on our own connection: no limits to cut it
                return store.query(query, settings={"readonly": 1})
            got = store.read_only_query(query)
            columns, rows, cut = got.columns, got.rows, got.cut
        finally:
            store.close()
    else:
        resp = httpx.post(f"{info['url']}/api/sql", json={"query": query}, timeout=60)
        body = resp.json()
        if resp.status_code == 403:
            raise PermissionError(body.get("error"))
        if resp.status_code != 200:
            raise RuntimeError(body.get("error", resp.text))
        columns, rows, cut = body["columns"], body["rows"], body.get("cut")
    if cut and not user:
        raise RuntimeError(f"{cut}, through the running worker's API: narrow the query (e.g. a shorter window), "
                           "or run it with the worker stopped")  # fmt: skip
    if cut:
        err.print(f"[yellow]note:[/yellow] {cut}", soft_wrap=True)
    return columns, rows


def print_rows(columns: list[str], rows: list[Any], fmt: str = "table") -> None:
    if fmt == "json":
        for r in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, r, strict=True)), default=str, ensure_ascii=False) + "\n")
    elif fmt == "tsv":  # escaped as ClickHouse's TSV is: a value's tab or newline cannot forge a cell or row
        sys.stdout.write("\t".join(_tsv(c) for c in columns) + "\n")
        for r in rows:
            sys.stdout.write("\t".join(_tsv(v) for v in r) + "\n")
    else:
        table = Table()
        for c in columns:
            table.add_column(_visible(c))
        for r in rows:
            table.add_row(*(_visible(v) for v in r))
        console.print(table)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _visible(value: Any) -> Text:
    """Untrusted text for the terminal: never markup (Text), control characters shown as escapes
    (an escape sequence in a span name could recolour the terminal or plant a hyperlink)."""
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)))


def _tsv(value: Any) -> str:
    return str(value).translate(_TSV_ESCAPES)


def main() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    try:
        app()
    except DatabaseError as exc:  # what ClickHouse said, in one line, not a traceback
        said = " ".join(str(exc).split())[:500]
        hint = ""
        if "UNKNOWN_DATABASE" in said or "UNKNOWN_TABLE" in said:
            hint = "\nNo tracejudge tables here yet: start a worker, or run `tracejudge migrate` (check the store settings)."
        err.print(f"[red]ClickHouse: {escape(said)}[/red]{hint}")
        raise SystemExit(2) from None


@app.command()
def calibrate(
    judge: str = typer.Option(..., "--judge", help="the rubric (judge) to calibrate"),
    golden: Path = typer.Option(..., "--golden", help='JSONL of human-labeled traces: {"id", "label", "envelope"} per line'),
    judging: Optional[Path] = typer.Option(None, "--judging", help="judging YAML (default: judging_file of the settings)"),
    tier: Optional[list[str]] = typer.Option(None, "--tier", help="only these tiers (repeatable; default: every configured tier)"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Measure a judge against human labels per model tier; store and print agreement (accuracy, TPR, TNR, kappa)."""
    from stream.calibrate_cli import run_cli

    settings = _settings(config)
    raise typer.Exit(run_cli(settings, judge, golden, judging, tier or None, console, err))
from stream import cli_export  # noqa: E402,F401 - registers commands
from stream import cli_backfill  # noqa: E402,F401 - registers commands
from stream import cli_costs  # noqa: E402,F401 - registers commands
from stream import cli_dashboard  # noqa: E402,F401 - registers commands
from stream import cli_store_server  # noqa: E402,F401 - registers commands
from stream import cli_check  # noqa: E402,F401 - registers commands
from stream import cli_dlq  # noqa: E402,F401 - registers commands
from stream import cli_policy_diff  # noqa: E402,F401 - registers commands
