"""A throwaway ``Null``-engine copy of a table: ClickHouse checks rows as the table would, and keeps none.

``CREATE TABLE db.<table>_copy_<random> AS db.<table> ENGINE = Null`` copies the table's columns
and constraints as they are now (on a cluster, those of its ``_local`` table: the ``Distributed``
one has no constraints). A row inserted into the copy is serialized by the client, parsed and
checked against every constraint by the server, exactly as an insert into the table would be, and
then stored nowhere: no part, no merge, no deduplication log. :mod:`stream.refused_rows` uses it
to find the rows of an insert ClickHouse refuses without writing a part for every piece of the
split, and to ask whether a table still takes the rows it took before (:func:`each_taken`). Where
the refusal is a violated ``CHECK`` constraint, the copy can also name every row that breaks one in
a single query (:meth:`NullCopy.violations`, through a ``Memory`` scratch table:
:mod:`stream.constraint_check`).

The copy exists on the server the client talks to. Behind a load balancer over servers that do
not share their tables, the next request may not find it: that insert then fails with an error
that is not a refusal, and the callers go on without the copy. Dropping it is best effort: a copy
left behind by an outage or a kill is an empty ``Null`` table, or a ``Memory`` scratch table
holding one insert's rows (their names say what they are), and a worker drops those at start (:func:`drop_leftovers`; one still in use by another worker then
fails that worker's next insert into it, which goes on without it).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from stream.cluster import LOCAL_SUFFIX
from stream.constraint_check import violating_rows
from stream.store import ClickHouseStore

log = logging.getLogger(__name__)


class Copy(Protocol):
    """Where rows can be tried without storing anything: what :class:`NullCopy` gives."""

    name: str

    async def insert(self, rows: Sequence[Sequence[Any]]) -> None: ...

    async def violations(self, rows: Sequence[Sequence[Any]]) -> dict[int, str] | None: ...


# what a worker names its throwaway tables, by engine: a Null copy, a Memory scratch table
_NAMES = {"Null": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*_copy_[0-9a-f]{8}$"),
          "Memory": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*_check_[0-9a-f]{8}$")}  # fmt: skip


class NullCopy:
    """``async with NullCopy(store, "spans", columns) as copy: await copy.insert(rows)``."""

    def __init__(self, store: ClickHouseStore, table: str, columns: Sequence[str]) -> None:
        self.store, self.table, self.columns = store, table, tuple(columns)
        self.name = f"{table}_copy_{secrets.token_hex(4)}"

    async def __aenter__(self) -> NullCopy:
        db = self.store.database
        source = self.table + (LOCAL_SUFFIX if self.store.cluster else "")
        await self.store.acommand(f"CREATE TABLE {db}.{self.name} AS {db}.{source} ENGINE = Null")
        return self

    async def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Raises what an insert of ``rows`` into the table would raise, and stores nothing."""
        await self.store.ainsert(self.name, rows, self.columns, stats_as=f"{self.table} (copy)")

    async def violations(self, rows: Sequence[Sequence[Any]]) -> dict[int, str] | None:
        """The rows that break one of the table's ``CHECK`` constraints, found in one query
        (:func:`stream.constraint_check.violating_rows`); None when that cannot tell."""
        try:
            return await violating_rows(self.store, self.table, self.columns, rows)
        except Exception as exc:  # noqa: BLE001 - an economy: the caller splits without it
            log.warning("could not evaluate the CHECK constraints of %s over an insert: %s", self.table, exc)
            return None

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.store.acommand(f"DROP TABLE IF EXISTS {self.store.database}.{self.name} SYNC")
        except Exception as exc:  # noqa: BLE001 - an empty Null table left behind is harmless
            log.warning("could not drop the copy %s.%s (an empty Null table): %s", self.store.database, self.name, exc)
        self.store.forget_table(self.name)


async def each_taken(copy_of: Callable[[], AbstractAsyncContextManager[Copy]], rows: Sequence[Sequence[Any]]) -> list[Exception | None]:
    """Each of ``rows`` inserted alone into a copy (``copy_of()``): what each insert raised, or None."""
    out: list[Exception | None] = []
    async with copy_of() as copy:
        for row in rows:
            try:
                await copy.insert([row])
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - the caller tells refusals from the rest
                out.append(exc)
    return out


def drop_leftovers(store: ClickHouseStore) -> list[str]:
    """Drop the copies and scratch tables a worker left behind (killed while it used one); returns their names."""
    _, rows = store.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} AND engine IN ('Null', 'Memory')",
        {"db": store.database},
    )
    names = sorted(name for name, engine in rows if _NAMES[engine].match(name))
    for name in names:
        store.command(f"DROP TABLE IF EXISTS {store.database}.{name} SYNC")
    return names
