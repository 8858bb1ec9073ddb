"""Rows ClickHouse refuses: find them by splitting the insert, store the others.

A value ClickHouse will not take (a ``CHECK`` constraint it violates, a number out of its column's
range, a row the client cannot serialize) fails its insert on every retry. Retried as an outage
is, it would hold its partition for good. :func:`insert_isolating` tells the two apart
(:func:`is_refusal`): an outage is retried until ClickHouse is back, as before; a refusal splits
the insert, again and again, until the refused rows stand alone. The other rows are stored (each
part with its own deduplication token, derived from the insert's), and the caller gets the refused
rows back to dead-letter their source messages.

Where to split: a violated constraint names the first row that violates it ("is violated at row
N", counted from 1 over the part inserted). The rows before it are stored, the row is tried
alone, and the rows after it are tried a few expected gaps between refused rows at a time (twice
the rows per refused row seen so far; a quarter of the part after a part whose first row is
refused, so that in a run of refused rows the parts shrink to one row; doubling while parts are
stored); a refused part names its next refused row, and so on — about 3 inserts per refused row
spread out, ~1 in a run, each row sent ~2–4 times. (Trying
all the rows after it at once would save a few inserts but send them again for every refused
row.) The row is only taken as refused when it is refused alone, so a wrong hint costs inserts,
never a good row; once a named row is stored alone, row numbers are ignored for the rest of the
insert, so a server that counts rows differently cannot make the split store one row per insert.
Other refusals (a type mismatch, a value the client cannot serialize) say no row: the part is cut
in halves, about 2 inserts per refused row per level.

In a copy (``copy``, :class:`stream.table_copy.NullCopy`; the worker's span and product-event
inserts): the split runs against a ``Null`` copy of the table, which checks each part as the table
would and keeps nothing, and then the rows it took are stored in one insert (its token derived
from the insert's and the rows left out). So the table gets two inserts (the whole, refused; the
rest) whatever the refusals, not a part per piece of the split, and the split's inserts cost no part,
merge or deduplication entry. Where the table named a violated ``CHECK`` constraint, the copy is
first asked for every row that breaks one, in one query (``Copy.violations``,
:mod:`stream.constraint_check`): those are refused and the others go to the table in one insert, so
an insert with many refused rows costs a few statements, not inserts per refused row (were the
query to miss a row, the table refuses the rest and it is split again, in a new copy). If the copy
cannot be used (not created, gone, an outage) the split
runs on the table itself, as above; if the table refuses rows its copy took (changed meanwhile),
those are split on the table.

A schema or server problem (a column whose type no longer fits what the worker writes, say)
refuses every row; bad data leaves most rows good. So when ``probe_parts`` parts have been refused
and none stored, ``PROBES`` single rows spread over the insert are tried alone: if every one is
refused too, the whole insert is retried until it succeeds, as an outage is, with an ERROR line
saying why (the split stops there: about 25 inserts). Otherwise the split goes on.

An insert too small for that (every row refused, fewer than ``probe_parts`` parts tried) asks
:class:`KnownGood` instead: the last rows ClickHouse took for the table, one per stored insert,
are inserted again, each alone, into a throwaway ``Null`` copy of the table (its columns and
constraints as they are now; nothing is kept). If it refuses every one of them too, the table no
longer takes what the worker writes: the insert is retried until it succeeds, as above, instead
of dead-lettering every message of a quiet stream. With no such rows yet (a worker that has
stored nothing since it started), the ``CHECK`` constraints the refusal names are evaluated over
recent rows the table already holds (up to 100, stored or started in the last day): if every one
breaks them, the constraint is newer than the data and the insert is retried the same way. For
a refusal that names no ``CHECK`` constraint (a column's type changed), or a table with no recent
row, a row the worker builds from fixed content (:mod:`stream.reference_rows`) is asked about
instead, the same way. Otherwise (a recent row meets the constraints, the reference row taken) the
rows are dead-lettered, as bad data would be.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from stream.constraint_check import violated_names
from stream.table_copy import Copy

log = logging.getLogger(__name__)

#: ClickHouse error codes about the inserted values themselves (errorCodeToName): retrying the
#: same rows cannot succeed. Not here: missing tables or columns, memory, too many parts, reads
#: cut short (32, 33) — those are the server's state or the transfer, and are retried.
REFUSAL_CODES = {
    6: "CANNOT_PARSE_TEXT", 25: "CANNOT_PARSE_ESCAPE_SEQUENCE", 26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", 38: "CANNOT_PARSE_DATE", 41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH", 69: "ARGUMENT_OUT_OF_BOUND", 70: "CANNOT_CONVERT_TYPE", 72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA", 128: "TOO_LARGE_ARRAY_SIZE", 131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH", 321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", 376: "CANNOT_PARSE_UUID", 407: "DECIMAL_OVERFLOW",
    441: "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", 467: "CANNOT_PARSE_BOOL", 469: "VIOLATED_CONSTRAINT",
    675: "CANNOT_PARSE_IPV4", 676: "CANNOT_PARSE_IPV6",
}  # fmt: skip
# "Code: 469. DB::Exception: ..." (chDB) or "Received ClickHouse exception, code: 469, ..." (HTTP)
_CODE = re.compile(r"\bcode: (\d+)", re.I)
# what clickhouse-connect raises, unwrapped, when it cannot serialize a value for its column
_SERIALIZATION_ERRORS = (TypeError, ValueError, AttributeError, OverflowError, struct.error)
# "Constraint `c` for table db.t (uuid) is violated at row 57. Expression: ...": the first row (from 1,
# over the whole insert) that violates it; the rows before it meet every constraint checked so far
_VIOLATED_AT_ROW = re.compile(r"\bis violated at row (\d+)\b")

PROBE_PARTS = 16
PROBES = 8
INSERT_REJECTED = "insert_rejected"  # the dead-letter reason of a message with refused rows


def is_refusal(exc: BaseException) -> bool:
    """True when ``exc`` says ClickHouse (or the client, serializing) refuses the rows themselves."""
    if isinstance(exc, OperationalError):  # connection refused, reset, timed out
        return False
    if isinstance(exc, DataError):  # the client's own check, e.g. None in a non-Nullable column
        return True
    if isinstance(exc, DatabaseError):
        m = _CODE.search(str(exc))
        return m is not None and int(m.group(1)) in REFUSAL_CODES
    return isinstance(exc, _SERIALIZATION_ERRORS)


@dataclass(frozen=True, slots=True)
class Refused:
    index: int  # of the row in the insert
    error: str  # what ClickHouse (or the client) said


Write = Callable[[Sequence[Sequence[Any]], str], Awaitable[None]]
# the caller's retry (it counts and logs the attempts): runs the operation until it succeeds,
# waiting out outages, and raises a :class:`Refusal` at once
Retry = Callable[[Callable[[], Awaitable[None]], str], Awaitable[None]]


class KnownGood:
    """The last rows ClickHouse took for one table (one per stored insert), to ask it again when it
    refuses every row of an insert (see the module docstring)."""

    def __init__(
        self, probe: Callable[[Sequence[Any]], Awaitable[list[Exception | None]]], keep: int = PROBES,
        stored: Callable[[Sequence[str]], Awaitable[bool | None]] | None = None,
        reference: Callable[[], Sequence[Any]] | None = None,
    ) -> None:  # fmt: skip
        """``probe``: insert each row alone into a copy of the table that keeps nothing; what each
        raised. ``stored``: with no row known yet, whether recent rows the table already holds break
        the named ``CHECK`` constraints too (:func:`stream.constraint_check.stored_rows_violate`).
        ``reference``: with no row known yet and a refusal that names no ``CHECK`` constraint, rows
        the worker builds from fixed content (:mod:`stream.reference_rows`), probed instead."""
        self._probe = probe
        self._stored = stored
        self._reference = reference
        self._rows: deque[Any] = deque(maxlen=keep)
        self.evidence = ""  # what the last True of :meth:`refused_now` rests on, for the log

    def took(self, part: Sequence[Any]) -> None:
        self._rows.append(part[-1])

    async def refused_now(self, error: str = "") -> bool:
        """True when ClickHouse now refuses each known row alone; False when it takes one, or when
        it cannot be asked (no evidence either way). With no known row: whether the recent rows the
        table holds break the ``CHECK`` constraints ``error`` (the refusal) names, each one; for a
        refusal that names none, or with no recent row, whether the reference rows are refused
        alone too."""
        rows = list(self._rows)
        if not rows:
            if (held := await self._stored_refused(violated_names(error))) is not None:
                self.evidence = "recent rows it holds break the same CHECK constraint (nothing stored since start)"
                return held
            if self._reference is None:
                return False
            self.evidence = "a reference row the worker builds from fixed content (nothing stored since start)"
            rows = list(self._reference())
        else:
            self.evidence = "each of the last rows it took before"
        try:
            outcomes = await self._probe(rows)
        except Exception as exc:  # noqa: BLE001 - an outage while asking: no evidence
            log.warning("could not ask ClickHouse whether it still takes rows it took before: %s", exc)
            return False
        return all(e is not None and is_refusal(e) for e in outcomes)

    async def _stored_refused(self, names: Sequence[str]) -> bool | None:
        """Whether the recent rows the table holds break the ``CHECK`` constraints ``names``, each
        one; None when that tells nothing (no such constraint or no recent row; an outage)."""
        if self._stored is None or not names:
            return None
        try:
            return await self._stored(names)
        except Exception as exc:  # noqa: BLE001 - an outage while asking: no evidence
            log.warning("could not ask ClickHouse whether the rows it holds meet its constraints: %s", exc)
            return None


class Refusal(Exception):
    """Raised through the caller's retry when ClickHouse refuses the rows: not to be retried."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _CopyUnusable(Exception):
    """The copy failed otherwise than by refusing rows (gone, an outage): split on the table itself."""


@dataclass
class _Split:
    refused: list[Refused]
    schema_problem: bool  # ``probe_parts`` parts refused, none taken, and every probe row refused alone


async def insert_isolating(
    write: Write, rows: Sequence[Sequence[Any]], token: str, what: str, retry: Retry, probe_parts: int = PROBE_PARTS,
    known: KnownGood | None = None, copy: Callable[[], AbstractAsyncContextManager[Copy]] | None = None,
) -> list[Refused]:
    """Insert ``rows``; returns the rows ClickHouse refused (none stored), in order. Every other row
    is stored when this returns. Outages are waited out through ``retry``. ``known``: the table's
    :class:`KnownGood`, told of each stored part and asked when every row is refused. ``copy``: a
    copy of the table that keeps nothing, to split in (see the module docstring)."""

    async def attempt(part: Sequence[Sequence[Any]], tok: str, label: str) -> str | None:
        async def op() -> None:
            try:
                await write(part, tok)
            except Exception as exc:
                if is_refusal(exc):
                    raise Refusal(exc) from exc
                raise

        try:
            await retry(op, label)
        except Refusal as r:
            return f"{type(r.cause).__name__}: {r.cause}"
        if known is not None:
            known.took(part)
        return None

    def attempt_rows(lo: int, hi: int) -> Awaitable[str | None]:
        if (lo, hi) == (0, len(rows)):
            return attempt(rows, token, what)
        return attempt(rows[lo:hi], f"{token}:{lo}-{hi}", f"{what} (rows {lo}-{hi - 1})")

    if (error := await attempt(rows, token, what)) is None:
        return []
    split = await _split_in_copy(copy, rows, error, what, probe_parts) if copy is not None else None
    if split is not None and not split.schema_problem and len(split.refused) < len(rows):
        # one insert of every row the copy took; its token names the rows left out, so a replay of
        # the same rows with the same refusals is the same insert
        left_out = {r.index for r in split.refused}
        kept = [i for i in range(len(rows)) if i not in left_out]
        tok = f"{token}:kept-{hashlib.blake2b(repr(sorted(left_out)).encode(), digest_size=8).hexdigest()}"
        label = f"{what} ({len(kept)} rows of {len(rows)}, without the {len(left_out)} refused)"
        if await attempt([rows[i] for i in kept], tok, label) is not None:
            # the table refuses rows its copy took (it changed meanwhile) or the constraints' query
            # did not name: split those again, in a new copy
            again = await insert_isolating(write, [rows[i] for i in kept], tok, label, retry, probe_parts, known, copy)
            split.refused = sorted(split.refused + [Refused(kept[r.index], r.error) for r in again],
                                   key=lambda r: r.index)  # fmt: skip
    if split is None:
        split = await _split(attempt_rows, len(rows), error, probe_parts)
    if split.schema_problem:
        log.error("ClickHouse refuses all %d parts of %s (%d rows) tried, and each of %d rows alone: a schema or "
                  "server problem, not bad data; retrying the whole insert until it succeeds: %s",
                  probe_parts, what, len(rows), PROBES, error[:500])  # fmt: skip
    elif len(split.refused) == len(rows) and known is not None and await known.refused_now(split.refused[0].error):
        log.error("ClickHouse refuses each of the %d rows of %s, and %s: a schema or server problem, not bad data; "
                  "retrying the whole insert until it succeeds: %s",
                  len(rows), what, known.evidence, split.refused[0].error[:500])  # fmt: skip
    else:
        return split.refused
    await retry(lambda: write(rows, token), what)
    if known is not None:
        known.took(rows)
    return []


async def _split_in_copy(
    copy: Callable[[], AbstractAsyncContextManager[Copy]], rows: Sequence[Sequence[Any]], error: str, what: str,
    probe_parts: int,
) -> _Split | None:
    """:func:`_split` against a copy of the table; None when the copy cannot be used."""
    try:
        async with copy() as c:

            async def attempt_some(part: Sequence[Sequence[Any]]) -> str | None:
                try:
                    await c.insert(part)
                except Exception as exc:
                    if is_refusal(exc):  # dead letters name the table, not its copy (nor the copy's uuid)
                        table = c.name.rsplit("_copy_", 1)[0]
                        return re.sub(rf"\b{c.name}\b(?: \([0-9a-f-]{{36}}\))?", table, f"{type(exc).__name__}: {exc}")
                    raise _CopyUnusable(exc) from exc
                return None

            if _VIOLATED_AT_ROW.search(error) and (found := await _by_constraints(c, rows)):
                return found
            return await _split(lambda lo, hi: attempt_some(rows[lo:hi]), len(rows), error, probe_parts)
    except Exception as exc:  # noqa: BLE001 - the copy is an economy, not a need
        log.warning("could not split %s in a copy of the table, splitting on the table itself: %s", what, exc)
        return None


async def _by_constraints(c: Copy, rows: Sequence[Sequence[Any]]) -> _Split | None:
    """The rows that break a ``CHECK`` constraint, named in one query (``Copy.violations``). None
    when the query names no row, or every row (the split's probes then tell bad data from a schema
    problem). The others go to the table together; rows it refuses still are split again there."""
    named = await c.violations(rows)
    if not named or len(named) == len(rows):
        return None
    return _Split([Refused(i, f"DatabaseError: {named[i]}") for i in sorted(named)], False)


async def _split(attempt: Callable[[int, int], Awaitable[str | None]], n: int, error: str, probe_parts: int) -> _Split:
    """Find the rows of ``[0, n)`` that ``attempt`` refuses, the whole having been refused with ``error``."""
    # (lo, hi, error, step): rows [lo, hi) refused with ``error``; or, with ``error`` None, rows not
    # tried yet, to be tried ``step`` at a time
    todo: deque[tuple[int, int, str | None, int]] = deque([(0, n, error, 0)])
    refused_parts, stored_parts, probed, hints = 1, 0, False, True
    refused: list[Refused] = []

    async def tried(lo: int, hi: int) -> str | None:
        nonlocal refused_parts, stored_parts
        err = await attempt(lo, hi)
        refused_parts, stored_parts = refused_parts + (err is not None), stored_parts + (err is None)
        return err

    while todo:
        if not probed and stored_parts == 0 and refused_parts >= probe_parts:
            probed = True
            probes = sorted({(2 * k + 1) * n // (2 * PROBES) for k in range(PROBES)})
            if all([await attempt(i, i + 1) is not None for i in probes]):
                return _Split([], True)
        lo, hi, error, step = todo.popleft()
        rest = hi  # rows [hi, rest) are not tried yet
        if error is None:
            hi = min(rest, lo + step)
            if (error := await tried(lo, hi)) is None:
                if hi < rest:
                    todo.append((hi, rest, None, 2 * step))
                continue
        row = _named_row(error, lo, hi) if hints else None
        if row is None or hi - lo == 1:
            if hi < rest:
                todo.append((hi, rest, None, step))
            if hi - lo == 1:
                refused.append(Refused(lo, error))
                continue
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                if (err := await tried(a, b)) is not None:
                    todo.append((a, b, err, 0))
            continue
        if row > lo and (err := await tried(lo, row)) is not None:
            todo.append((lo, row, err, 0))
        if (err := await tried(row, row + 1)) is None:
            hints = False  # the row the server named is not refused: its row numbers are not to be trusted
        else:
            refused.append(Refused(row, err))
        if row + 1 < rest:  # the rows after it, a few expected gaps between refused rows at a time,
            # or a quarter of this part when its first row is refused (in a run, parts shrink to 1 row)
            step = (hi - lo) // 4 if row == lo else 2 * (row + 1) // max(1, len(refused))
            todo.append((row + 1, rest, None, max(1, step)))
    refused.sort(key=lambda r: r.index)
    return _Split(refused, False)


def _named_row(error: str, lo: int, hi: int) -> int | None:
    """The row of ``[lo, hi)`` a violated constraint names (its number counts from 1 within the part)."""
    m = _VIOLATED_AT_ROW.search(error)
    row = lo + int(m.group(1)) - 1 if m else -1
    return row if lo <= row < hi else None


def by_source(sizes: Sequence[int], refused: Sequence[Refused]) -> dict[int, list[Refused]]:
    """Group refused rows by the source their row came from, for rows laid out source after source
    (``sizes[i]`` rows of source ``i``); each index is made relative to its source."""
    starts = list(accumulate(sizes, initial=0))
    out: dict[int, list[Refused]] = {}
    for r in refused:
        i = bisect_right(starts, r.index) - 1  # the last start <= index: never an empty source
        out.setdefault(i, []).append(Refused(r.index - starts[i], r.error))
    return out
