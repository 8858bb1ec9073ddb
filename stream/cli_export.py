"""``tracejudge export-cases``: failing traces as offline eval cases (see :mod:`stream.export_cases`).

Registered on the shared typer app by the import at the end of :mod:`stream.cli`. Queries go
through :func:`stream.cli.run_sql`, so the export works while a worker holds the embedded store
(through its read-only API) and against a ClickHouse server alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from stream.cli import ConfigOpt, _settings, app, console, err, run_sql


@app.command("export-cases")
def export_cases_command(
    since: str = typer.Option(..., "--since", help="ISO date/time (UTC without an offset): verdicts judged (gate-only failures: traces completed) at or after it"),
    until: str = typer.Option(..., "--until", help="ISO date/time: ... before it (exclusive)"),
    judge: Optional[str] = typer.Option(None, "--judge", help="only this judge's verdicts (and no gate-only cases)"),
    label: str = typer.Option("fail", "--label", help="verdict label to export"),
    out: Path = typer.Option(Path("eval-cases"), "--out", help="dataset directory (created; cumulative)"),
    fmt: str = typer.Option("yaml", "--format", help="yaml (one file per case) | jsonl (cases.jsonl per set)"),
    owner: Optional[str] = typer.Option(None, "--owner", help="owner recorded on new cases"),
    rules: Optional[Path] = typer.Option(None, "--rules", help="YAML: ordered [{set, when: {...}}] rules; default: all to backlog"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Write judged failures (and gate-only failures) as eval cases: input, observed output, grader, evidence."""
    from stream.case_rules import load_rules
    from stream.export_cases import ExportError, ExportOptions, export_cases

    settings = _settings(config)
    try:
        options = ExportOptions(
            since=since, until=until, judge=judge, label=label, fmt=fmt,  # type: ignore[arg-type]
            owner=owner, rules=load_rules(rules) if rules is not None else [],
        )  # fmt: skip
        report = export_cases(lambda q: run_sql(settings, q), settings.clickhouse_database, out, options)
    except (ExportError, OSError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except Exception as exc:  # the store: unreachable, held without an API, a failed query
        err.print(f"[red]query failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    sets = ", ".join(f"{s} {n}" for s, n in report.per_set.items())
    console.print(
        f"{report.selected} selected: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.moved)} moved, {report.unchanged} unchanged, {len(report.removed)} removed"
    )
    if report.skipped_no_trace:
        console.print(f"skipped {len(report.skipped_no_trace)}: no trace row or no spans stored for their traces")
    console.print(f"dataset {escape(str(out))}: {report.total} cases ({sets}); version {report.dataset_version[:12]}")
    if not report.changed:
        console.print("nothing changed: CHANGELOG.md not appended")
