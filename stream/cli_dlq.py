"""``tracejudge dlq show`` / ``tracejudge dlq replay``: what a dead-letter topic holds, and its
messages sent back once what dead-lettered them is fixed (:mod:`stream.dlq_replay`). Registered on
the shared typer app by the import at the end of :mod:`stream.cli`."""

from __future__ import annotations

import asyncio
import heapq
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from aiokafka.errors import KafkaError
from rich.table import Table
from rich.text import Text

from stream.cli import ConfigOpt, _settings, app, console, err
from stream.cli_backfill import parse_time
from stream.config import Settings
from stream.dlq_replay import DeadLetter, Replayed, replay, replay_log, replayed, scan
from stream.kafka_auth import client_options

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect a dead-letter topic and replay its messages.")
app.add_typer(dlq_app, name="dlq")

TopicOpt = typer.Option(None, "--topic", help="dead-letter topic (default: dlq_topic, e.g. otlp_spans.dlq)")
SinceOpt = typer.Option(None, "--since", help="only dead letters written at or after this ISO time (UTC if no zone)")


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        err.print("[red]TRACEJUDGE_KAFKA_BOOTSTRAP is not set (or kafka_bootstrap in the config file).[/red]")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


def _why(exc: Exception, settings: Settings) -> str:
    if isinstance(exc, KafkaError):
        return f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"
    return str(exc)


def _source(d: DeadLetter) -> str:
    src = d.source
    if src is None:
        return "?"
    topic, part, first, last = src
    return f"{topic}[{part}]@{first}" + (f"-{last}" if last != first else "")


def _ranges(offsets: list[tuple[str, int, int]]) -> str:
    """``t[p]@1-3, t[p]@7`` for the offsets (t, p, 1), (t, p, 2), (t, p, 3), (t, p, 7)."""
    runs: list[list[Any]] = []
    for t, p, o in sorted(offsets):
        if runs and runs[-1][:2] == [t, p] and runs[-1][3] == o - 1:
            runs[-1][3] = o
        else:
            runs.append([t, p, o, o])
    return ", ".join(f"{t}[{p}]@{a}" + (f"-{b}" if b != a else "") for t, p, a, b in runs)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(d: DeadLetter, r: Replayed | None) -> str:
    return json.dumps({
        "dlq_partition": d.partition, "dlq_offset": d.offset, "timestamp_ms": d.timestamp_ms, "reason": d.reason,
        "detail": d.detail, "source": _source(d), "value_bytes": len(d.value or b""), "value_omitted": d.omitted_bytes,
        "key": (d.key or b"").decode("utf-8", "replace"),
        "replayed": None if r is None else {"at": _when(r.at_ms), "to": r.to, "messages": r.messages},
    })  # fmt: skip


@dlq_app.command("show")
def show(
    topic: Optional[str] = TopicOpt,
    reason: Optional[list[str]] = typer.Option(None, "--reason", help="only these reasons (repeatable)"),
    last: int = typer.Option(20, "--last", help="how many of the newest dead letters (by record time) to list"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per dead letter (no values), every one"),
    since: Optional[str] = SinceOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Count a dead-letter topic's records by reason and list the newest, with their source offsets."""
    settings = _settings(config)
    since_ms = parse_time(since, "--since") if since else None
    name = topic or settings.dlq_topic
    by_reason: Counter[str] = Counter()
    omitted: Counter[str] = Counter()
    size: Counter[str] = Counter()
    again: Counter[str] = Counter()
    newest: list[tuple[int, int, int, DeadLetter]] = []  # min-heap by (timestamp, partition, offset)
    done: dict[tuple[int, int], Replayed] = {}

    async def read() -> None:
        done.update(await replayed(_bootstrap(settings), name, client_options(settings)))
        async for d in scan(_bootstrap(settings), name, client_options(settings)):
            if (reason and d.reason not in reason) or (since_ms is not None and (d.timestamp_ms or 0) < since_ms):
                continue
            if as_json:
                console.out(_as_json(d, done.get((d.partition, d.offset))), highlight=False)
                continue
            by_reason[d.reason] += 1
            again[d.reason] += (d.partition, d.offset) in done
            omitted[d.reason] += d.omitted_bytes is not None
            size[d.reason] += len(d.value or b"")
            item = (d.timestamp_ms or 0, d.partition, d.offset, DeadLetter(d.partition, d.offset, d.timestamp_ms,
                                                                            d.key, None, d.headers))
            if len(newest) < last:
                heapq.heappush(newest, item)
            elif last > 0 and item[:3] > newest[0][:3]:
                heapq.heapreplace(newest, item)

    try:
        asyncio.run(read())
    except (LookupError, KafkaError) as exc:
        err.print(Text(_why(exc, settings), style="red"))
        raise typer.Exit(1) from None
    if as_json:
        return
    console.print(Text(f"{name}: {sum(by_reason.values())} dead letters" + (f" since {since}" if since else "")))
    if not by_reason:
        return
    summary = Table()
    for col in ("reason", "dead letters", "replayed", "sent without the message", "bytes of messages"):
        summary.add_column(col, justify="left" if col == "reason" else "right")
    for r, n in by_reason.most_common():
        summary.add_row(Text(r), f"{n:,}", f"{again[r]:,}", f"{omitted[r]:,}", f"{size[r]:,}")
    console.print(summary)
    if newest:
        listing = Table(title=f"newest {len(newest)}")
        for col in ("dlq offset", "reason", "source", "replayed", "detail"):
            listing.add_column(col)
        for *_, d in sorted(newest, key=lambda item: item[:3]):
            note = f" (message left out, {d.omitted_bytes:,} bytes)" if d.omitted_bytes is not None else ""
            r = done.get((d.partition, d.offset))
            listing.add_row(f"{d.partition}@{d.offset}", Text(d.reason), Text(_source(d)),
                            Text("" if r is None else _when(r.at_ms)), Text(d.detail[:300] + note))  # fmt: skip
        console.print(listing)


@dlq_app.command("replay")
def replay_cmd(
    reason: list[str] = typer.Option(..., "--reason", help="replay the dead letters with this reason (repeatable)"),
    topic: Optional[str] = TopicOpt,
    to: Optional[str] = typer.Option(None, "--to", help="send here instead of each message's source topic"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be sent, send nothing"),
    since: Optional[str] = SinceOpt,
    again: bool = typer.Option(False, "--again", help="send dead letters replayed before too"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Send the messages of dead letters with the given reasons back to their source topic (or --to).

    Dead letters that carry no message (reason unrecovered_offsets, or one sent without it because it was too large) are read from their source offsets. Exit code 1 if some offsets are gone. Each dead letter replayed is recorded in <topic>.replayed; later replays skip it unless --again."""
    settings = _settings(config)
    name = topic or settings.dlq_topic
    since_ms = parse_time(since, "--since") if since else None

    def sent(d: DeadLetter, dest: str, n: int) -> None:
        verb = "would send" if dry_run else "sent"
        console.print(Text(f"{verb} {n} message(s) of {d.reason} {_source(d)} (dlq {d.partition}@{d.offset}) to {dest}"))

    try:
        result = asyncio.run(replay(_bootstrap(settings), name, reason, to, dry_run, sent, since_ms, again,
                                    client_options(settings)))
    except (LookupError, KafkaError) as exc:
        err.print(Text(_why(exc, settings), style="red"))
        raise typer.Exit(1) from None
    verb = "would send" if dry_run else "sent"
    console.print(Text(f"{result.dead_letters} dead letters with reason {', '.join(reason)} in {name}: "
                       f"{verb} {result.sent} message(s)"))  # fmt: skip
    if result.already:
        d, r = result.already[-1]
        console.print(Text(f"{len(result.already)} of them replayed before, not sent again (--again sends them; "
                           f"recorded in {replay_log(name)}, e.g. dlq {d.partition}@{d.offset} at {_when(r.at_ms)} "
                           f"to {r.to})"))  # fmt: skip
    for d in result.unreplayable:
        err.print(Text(f"dlq {d.partition}@{d.offset}: no source topic or offsets in its headers; not replayed", style="red"))
    if result.missing:
        err.print(Text(f"{len(result.missing)} source offsets are no longer on the broker (retention?): "
                       f"{_ranges(result.missing)}", style="red"))  # fmt: skip
    if result.missing or result.unreplayable:
        raise typer.Exit(1)
