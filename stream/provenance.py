"""Where stored rows came from: the deduplication tokens of inserts, derived from their source
messages, and the source offsets a log line names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from stream.dlq import InMessage


def token(prefix: str, parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return f"{prefix}:{h.hexdigest()[:32]}"


def message_token(prefix: str, msgs: Iterable[InMessage]) -> str:
    """The deduplication token of an insert made from ``msgs``.

    A replay of the same messages (a retry, a rebalance, a restart before the commit) gives the same
    token, so ClickHouse drops the repeated insert. Offsets alone do not identify a message: after a
    topic is recreated, or a memory-only broker restarts, new messages reuse old offsets, and their
    inserts would be dropped as duplicates of old ones for as long as the table's deduplication
    window remembers them. The record's timestamp and size, which a replay reads back unchanged, tell
    them apart."""
    return token(prefix, (f"{m.topic}/{m.partition}/{m.offset}/{m.timestamp_ms}/{len(m.value or b'')}" for m in msgs))


def sources(items: Sequence[tuple[InMessage, Any]]) -> str:
    """Where the messages of ``items`` came from, for log lines: ``topic[partition]@first-last, …``
    (a failing insert names the offsets an operator would look at)."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m, _ in items:
        r = ranges.setdefault((m.topic, m.partition), [m.offset, m.offset])
        r[0], r[1] = min(r[0], m.offset), max(r[1], m.offset)
    return ", ".join(f"{t}[{p}]@{a}" + (f"-{b}" if b != a else "") for (t, p), (a, b) in sorted(ranges.items()))
