"""The split of refused rows in a Null copy of the table (``insert_isolating(copy=...)``), on real
embedded ClickHouse: the refusals, the copy and the stored rows are real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from stream.refused_rows import PROBE_PARTS, insert_isolating
from stream.store import ClickHouseStore
from stream.table_copy import NullCopy
from tests.stream.test_refused_rows import (
    POISON,
    Writer,
    copies_left,
    fixed_after_two_tries,
    make_table,
    raw_rows,
    retry,
    stored,
)


def copy_of_t(store: ClickHouseStore) -> Callable[[], NullCopy]:
    return lambda: NullCopy(store, "t", ["id", "name"])


def copy_inserts(store: ClickHouseStore) -> int:
    """Inserts into copies of ``t``: taken and refused."""
    stats = store.insert_stats().get("t (copy)", {})
    return int(stats.get("inserts", 0) + stats.get("failures", 0))


def constraint_queries(store: ClickHouseStore) -> int:
    """Inserts into the scratch tables where the CHECK constraints of ``t`` are evaluated."""
    return int(store.insert_stats().get("t (constraints)", {}).get("inserts", 0))


def test_in_a_copy_the_table_gets_two_inserts_whatever_the_refusals(store: ClickHouseStore) -> None:
    """A violated CHECK constraint: one query in a scratch table names every row that breaks it, the
    others are tried together in a Null copy, and the table gets the whole (refused) and then every
    other row in one insert; a replay is the same insert."""
    make_table(store)
    bad = {3, 40, 41} | set(range(60, 70))
    rows = [[i, POISON if i in bad else f"n{i}"] for i in range(100)]
    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry([]), copy=copy_of_t(store)))
    assert [r.index for r in refused] == sorted(bad)
    # named as the table, with the constraint and its expression
    assert all(f"Constraint `no_poison` for table {store.database}.t is violated. Expression: (name != 'poison')"
               in r.error and "VIOLATED_CONSTRAINT" in r.error for r in refused), refused[0].error  # fmt: skip
    assert stored(store) == [i for i in range(100) if i not in bad] and raw_rows(store) == 100 - len(bad)
    [(n_whole, tok_whole), (n_kept, tok_kept)] = write.calls
    assert (n_whole, tok_whole, n_kept) == (100, "tok", 87) and tok_kept.startswith("tok:kept-")
    assert (constraint_queries(store), copy_inserts(store)) == (1, 0)  # one query; the 87 went to the table
    assert copies_left(store) == 0

    again = Writer(store)  # a redelivered batch: the same two inserts, the second one deduplicated
    replayed = asyncio.run(insert_isolating(again, rows, "tok", "insert t", retry([]), copy=copy_of_t(store)))
    assert [r.index for r in replayed] == sorted(bad) and [r.error for r in replayed] == [r.error for r in refused]
    assert again.calls == write.calls and raw_rows(store) == 100 - len(bad)


def test_rows_the_constraint_query_does_not_name_are_split_in_a_new_copy(store: ClickHouseStore) -> None:
    """Rows the query misses are refused by the table with the rest: that rest is split again, in a
    new copy, and the missed row is named by the server's own message."""
    make_table(store)

    class Missing(NullCopy):  # names every violating row but row 40
        async def violations(self, rows: Sequence[Sequence[Any]]) -> dict[int, str] | None:
            named = await super().violations(rows)
            return {i: e for i, e in (named or {}).items() if rows[i][0] != 40}

    bad = {3, 40, 77}
    rows = [[i, POISON if i in bad else f"n{i}"] for i in range(100)]
    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry([]),
                                           copy=lambda: Missing(store, "t", ["id", "name"])))  # fmt: skip
    assert [r.index for r in refused] == [3, 40, 77]
    assert "violated at row 1" in refused[1].error and "violated at row" not in refused[0].error
    assert stored(store) == [i for i in range(100) if i not in bad] and copies_left(store) == 0
    # the table: the whole, the 98 the query left (refused), again at the start of their split, the 97
    assert [n for n, _ in write.calls] == [100, 98, 98, 97] and copy_inserts(store) > 1


def test_a_copy_that_cannot_be_used_leaves_the_split_to_the_table(store: ClickHouseStore) -> None:
    make_table(store)
    rows = [[i, POISON if i in (5, 9) else "ok"] for i in range(16)]

    class Gone(NullCopy):  # dropped under the split (a load balancer over servers that do not share tables)
        async def insert(self, rows: Sequence[Sequence[Any]]) -> None:
            await self.store.acommand(f"DROP TABLE IF EXISTS {self.store.database}.{self.name} SYNC")
            await super().insert(rows)

        async def violations(self, rows: Sequence[Sequence[Any]]) -> dict[int, str] | None:
            return None  # its scratch table would be on another server too: the query fails

    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry([]),
                                           copy=lambda: Gone(store, "t", ["id", "name"])))  # fmt: skip
    assert [r.index for r in refused] == [5, 9] and stored(store) == [i for i in range(16) if i not in (5, 9)]
    assert len(write.calls) > 2 and all(t == "tok" or t.startswith("tok:") and "kept" not in t for _, t in write.calls)


def test_rows_the_copy_took_but_the_table_refuses_are_split_on_the_table(store: ClickHouseStore) -> None:
    """The table changed between the split and the insert of the rest (here: a "copy" without the
    constraint takes everything but the rows the client cannot serialize)."""
    make_table(store)
    store.command(f"CREATE TABLE {store.database}.t_loose (id UInt64, name String) ENGINE = Null")

    class Loose(NullCopy):
        async def __aenter__(self) -> Loose:
            self.name = "t_loose"
            return self

        async def __aexit__(self, *_: object) -> None:
            return None

    rows = [[i, POISON if i == 4 else 2**70 if i == 7 else "ok"] for i in range(12)]
    refused = asyncio.run(insert_isolating(Writer(store), rows, "tok", "insert t", retry([]),
                                           copy=lambda: Loose(store, "t", ["id", "name"])))  # fmt: skip
    assert [r.index for r in refused] == [4, 7]
    assert "VIOLATED_CONSTRAINT" in refused[0].error
    assert stored(store) == [i for i in range(12) if i not in (4, 7)]


def test_in_a_copy_refusals_everywhere_are_a_schema_problem_and_the_table_waits(store: ClickHouseStore) -> None:
    make_table(store, check="name = 'expected'")
    rows = [[i, f"n{i}"] for i in range(64)]
    attempts: list[str] = []
    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t",
                                           retry(attempts, fixed_after_two_tries(store, attempts)),
                                           copy=copy_of_t(store)))  # fmt: skip
    assert refused == [] and stored(store) == list(range(64)) and len(attempts) == 2
    assert write.calls == [(64, "tok")] * 4  # on the table: the whole, then its retries; the split was in the copy
    assert copy_inserts(store) == PROBE_PARTS - 1 + 8 and copies_left(store) == 0  # the split, in the copy
