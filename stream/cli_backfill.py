"""``tracejudge backfill``: re-judge stored traces with a judge's current rubric version
(see :mod:`stream.backfill` for what is selected, how it resumes and how the budget is shared)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stream.cli import ConfigOpt, _logging, _settings, app, console, err


def parse_time(value: str, what: str) -> int:
    """ISO 8601 (``2025-06-01``, ``2025-06-01T12:00:00+02:00``; no zone = UTC) -> unix ms."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{what}: not an ISO 8601 date/time: {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


@app.command()
def backfill(
    judge: str = typer.Option(..., "--judge", help="the judge (rubric) to run with its current version"),
    since: str = typer.Option(..., "--since", help="traces completed at or after this ISO time (UTC if no zone)"),
    until: Optional[str] = typer.Option(None, "--until", help="... and before this ISO time (default: now)"),
    judging: Optional[Path] = typer.Option(None, "--judging", help="judging YAML (default: judging_file of the settings)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="judge at most N traces in this run (re-run to continue)"),
    reserve: float = typer.Option(0.5, "--reserve", min=0.0, max=1.0,
                                  help="share of the global / judge budget left to live traffic this period"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Re-judge stored traces (e.g. after a rubric change); resumable, never pays twice per trace and version."""
    from judges.config import JudgingConfigError, load_judging_config
    from stream.backfill import Backfill, BackfillError, BackfillResult
    from stream.store import ClickHouseStore, StoreLockedError

    settings = _settings(config)
    _logging("warning" if settings.log_level == "info" else settings.log_level)
    path = judging or settings.judging_file
    if path is None:
        err.print("[red]no judging config: pass --judging FILE or set judging_file (TRACEJUDGE_JUDGING_FILE)[/red]")
        raise typer.Exit(2)
    since_ms = parse_time(since, "--since")
    until_ms = parse_time(until, "--until") if until else None
    try:
        cfg = load_judging_config(path)
        store = ClickHouseStore.from_settings(settings)
    except JudgingConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except StoreLockedError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]\nA backfill writes verdicts: stop the worker that holds the "
                  "embedded store, or run against a ClickHouse server.")  # fmt: skip
        raise typer.Exit(2) from None

    async def main() -> BackfillResult:
        job = Backfill(store, cfg, judge, reserve=reserve, topic=settings.judge_topic)
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console)  # fmt: skip
        task: list[TaskID] = []

        def info(r: BackfillResult) -> str:
            return f"${r.cost_usd:.4f} · cache {r.cache_hits} · errors {r.errors} · skipped {r.not_applicable + r.missing_spans}"

        def on_start(r: BackfillResult) -> None:
            console.print(f"judge [bold]{escape(judge)}[/bold] version {r.rubric_hash[:12]}: {r.total} sampled traces "
                          f"in the window, {r.already} already judged by this version")  # fmt: skip
            task.append(bar.add_task(f"backfill {escape(judge)}", total=r.total, completed=r.already, info=info(r)))

        def progress(n: int, r: BackfillResult) -> None:
            bar.update(task[0], advance=n, info=info(r))

        try:
            await store.run(store.migrate)
            with bar:
                return await job.run(since_ms, until_ms, limit=limit, progress=progress, on_start=on_start)
        finally:
            await job.aclose()

    try:
        result = asyncio.run(main())
    except BackfillError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: what was judged is stored; run the same command again to continue[/yellow]")
        raise typer.Exit(130) from None
    finally:
        store.close()
    console.print(f"judged {result.judged} ({result.cache_hits} from the verdict cache), errors {result.errors}, "
                  f"budget-skipped {result.budget_skipped}, not applicable {result.not_applicable}, "
                  f"without spans {result.missing_spans}; spent ${result.cost_usd:.4f}; remaining {result.remaining}")  # fmt: skip
    if result.stopped == "limit":
        console.print("stopped at --limit: run the same command again to continue")
    elif result.stopped in ("budget", "paused"):
        why = "the budget cap for backfills is reached this period" if result.stopped == "budget" else "the judge's provider is paused"
        err.print(f"[yellow]stopped: {why}; run the same command again later to continue[/yellow]")
        raise typer.Exit(3)
    elif result.errors:
        err.print("[yellow]some traces got error verdicts: run the same command again to retry them[/yellow]")
        raise typer.Exit(1)
