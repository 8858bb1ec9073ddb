"""``tracejudge policy-diff CANDIDATE``: re-decide stored traces with the current policy and a
candidate, and show what would change (see :mod:`stream.policy_diff`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stream.cli import ConfigOpt, _logging, _settings, app, console, err
from stream.cli_backfill import parse_time

DAY_MS = 86_400_000


@app.command("policy-diff")
def policy_diff_command(
    candidate: Path = typer.Argument(..., help="the candidate policy YAML"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="the policy to compare with (default: the settings' "
                                          "policy_file, else the built-in default)"),  # fmt: skip
    since: Optional[str] = typer.Option(None, "--since", help="traces completed at or after this ISO time (default: 7 days ago)"),
    until: Optional[str] = typer.Option(None, "--until", help="... and before this ISO time (default: now)"),
    limit: int = typer.Option(20_000, "--limit", min=1, help="re-decide at most the N newest traces of the window"),
    judge: Optional[str] = typer.Option(None, "--judge", help="label the changes with this judge's verdicts (newest version; "
                                        "default: the only judge with verdicts)"),  # fmt: skip
    rubric_hash: Optional[str] = typer.Option(None, "--rubric-hash", help="a specific judge version"),
    pass_label: str = typer.Option("pass", "--pass-label", help="the judge's label for a passing trace"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """What a policy change would do: re-decide stored traces with both policies; changes in judge calls and recall."""
    from stream.estimate_cli import LabelError, only_judge
    from stream.policy import PolicyError, load_policy
    from stream.policy_diff import NOT_JUDGED, policy_diff
    from stream.store import ClickHouseStore, StoreLockedError

    settings = _settings(config)
    _logging("warning" if settings.log_level == "info" else settings.log_level)
    now_ms = int(time.time() * 1000)
    since_ms = parse_time(since, "--since") if since else now_ms - 7 * DAY_MS
    until_ms = parse_time(until, "--until") if until else now_ms
    try:
        base = load_policy(policy or settings.policy_file)
        cand = load_policy(candidate)
        store = ClickHouseStore.from_settings(settings)
    except PolicyError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except StoreLockedError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]\nStop the worker that holds the embedded store, or run against a "
                  "ClickHouse server.")  # fmt: skip
        raise typer.Exit(2) from None
    unlabeled = None
    try:
        if judge is None:
            try:
                judge = only_judge(store.query, store.database)
            except LabelError as exc:  # none, or several to choose from: the counts go unlabeled
                unlabeled = str(exc)
        with console.status("re-deciding stored traces...") as status:
            d = policy_diff(store, base, cand, since_ms, until_ms, limit, judge, rubric_hash, pass_label,
                            settings.action_join_window, lambda n: status.update(f"re-decided {n:,} traces..."))  # fmt: skip
    except (LabelError, ValueError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    finally:
        store.close()
    if not d.traces:
        console.print("no stored traces in the window")
        raise typer.Exit(0)

    def share(n: int) -> str:
        return f"{n:,} ({n / d.traces:.1%})"

    table = Table(title=f"{d.traces:,} stored traces re-decided: current policy {d.base.version[:12]} → "
                        f"candidate {d.candidate.version[:12]}")  # fmt: skip
    for col in ("", "current", "candidate", "change"):
        table.add_column(col, justify="right" if col else "left")
    for what, b, c in (("suspected failures", d.base.suspected, d.candidate.suspected),
                       ("sampled for judging (judge calls)", d.base.sampled, d.candidate.sampled)):  # fmt: skip
        table.add_row(what, share(b), share(c), f"{c - b:+,}" + (f" ({(c - b) / b:+.1%})" if b else ""))
    console.print(table)
    judged = f"verdicts of {escape(judge)} {d.rubric_hash[:12]}" if judge and d.rubric_hash else "no judge given (--judge)"
    for title, counts in (("no longer suspected", d.dropped), ("newly suspected", d.added)):
        parts = ", ".join(f"{k} {counts[k]:,}" for k in ("fail", "pass", NOT_JUDGED) if counts[k])
        console.print(f"{title}: {sum(counts.values()):,}" + (f" — by {judged}: {parts}" if parts else ""))
    if unlabeled:
        console.print(f"(not labeled by verdicts: {escape(unlabeled)})")
    if d.dropped["fail"]:
        console.print(f"[yellow]{d.dropped['fail']:,} judged failing would no longer go to a judge at 1.0 "
                      f"(recall given up), e.g. {', '.join(d.dropped_failing)}[/yellow]")  # fmt: skip
    if d.added_examples:
        console.print(f"newly suspected, e.g. {', '.join(d.added_examples)}")
    reasons = Table(title="traces failing each gate / negative signal type")
    for col in ("reason", "current", "candidate"):
        reasons.add_column(col)
    for r in sorted(set(d.base.reasons) | set(d.candidate.reasons), key=lambda r: (-d.base.reasons[r], r)):
        reasons.add_row(Text(r), f"{d.base.reasons[r]:,}", f"{d.candidate.reasons[r]:,}")
    console.print(reasons)
    console.print(f"the current policy decides {d.stored_differs:,} of these traces differently from the stored "
                  "decision (the policy changed since, or spans came after it)")  # fmt: skip
