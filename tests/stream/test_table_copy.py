"""The throwaway Null copy of a table, on real ClickHouse (embedded here; the store server and the
one-shard cluster collect the first test again through store_level_tests.py)."""

from __future__ import annotations

import asyncio

from stream.cluster import LOCAL_SUFFIX
from stream.refused_rows import is_refusal
from stream.store import ClickHouseStore
from stream.table_copy import NullCopy, drop_leftovers, each_taken

COLS = ["trace_id", "span_id", "name", "start_time", "end_time", "ingested_at"]
GOOD = ["a" * 32, "b" * 16, "ok", 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]


def copies(store: ClickHouseStore) -> list[str]:
    sql = f"SELECT name FROM system.tables WHERE database = '{store.database}' AND position(name, '_copy_') > 0"
    return sorted(r[0] for r in store.query(sql)[1])


def test_rows_inserted_into_a_copy_are_checked_as_the_table_would_and_kept_nowhere(store: ClickHouseStore) -> None:
    """What refused_rows.py asks: a ``Null`` copy of the table as it is now (on a cluster, of its
    local table, which holds the constraints) refuses what the table would, and keeps nothing."""
    db = store.database
    data = "spans" + (LOCAL_SUFFIX if store.cluster else "")  # a Distributed table takes no constraint
    store.command(f"ALTER TABLE {db}.{data} ADD CONSTRAINT no_poison CHECK name != 'poison'")
    poison = [*GOOD[:2], "poison", *GOOD[3:]]
    unserializable = [*GOOD[:3], "not a time", *GOOD[4:]]
    out = asyncio.run(each_taken(lambda: NullCopy(store, "spans", COLS), [GOOD, poison, unserializable]))
    assert out[0] is None and "VIOLATED_CONSTRAINT" in str(out[1]) and out[2] is not None
    assert all(is_refusal(e) for e in out[1:])
    assert store.query(f"SELECT count() FROM {db}.spans")[1] == [(0,)]  # nothing stored anywhere
    assert copies(store) == []
    assert store.insert_stats()["spans (copy)"]["inserts"] == 1  # counted apart from the table's own


def test_a_copy_dropped_under_its_user_fails_with_an_error_that_is_no_refusal(store: ClickHouseStore) -> None:
    """What a load balancer over servers that do not share tables would do: the next insert does
    not find the copy. The callers take that as no evidence, never as a refused row."""

    async def run() -> BaseException:
        async with NullCopy(store, "spans", COLS) as copy:
            await copy.insert([GOOD])
            assert copies(store) == [copy.name]
            await store.acommand(f"DROP TABLE {store.database}.{copy.name} SYNC")
            try:
                await copy.insert([GOOD])
            except Exception as exc:  # noqa: BLE001
                return exc
        raise AssertionError("the insert into a dropped copy succeeded")

    exc = asyncio.run(run())
    assert "UNKNOWN_TABLE" in str(exc) and not is_refusal(exc)
    assert copies(store) == []


def test_copies_left_behind_are_dropped_and_nothing_else(store: ClickHouseStore) -> None:
    """A worker killed while it split an insert leaves its copy: the next worker drops it at start."""
    left = NullCopy(store, "spans", COLS)
    asyncio.run(left.__aenter__())  # entered, never left: the kill
    store.command(f"CREATE TABLE {store.database}.spans_copy_notmine (x UInt8) ENGINE = Null")  # not a copy's name
    store.command(f"CREATE TABLE {store.database}.keep_copy_0123abcd (x UInt8) ENGINE = Memory")  # not a Null table
    # a scratch table of stream/constraint_check.py, holding an insert's rows
    store.command(f"CREATE TABLE {store.database}.spans_check_0123abcd (x UInt8) ENGINE = Memory")
    store.command(f"CREATE TABLE {store.database}.keep_check_0123abcd (x UInt8) ENGINE = Null")  # not Memory
    assert drop_leftovers(store) == sorted([left.name, "spans_check_0123abcd"])
    assert copies(store) == ["keep_copy_0123abcd", "spans_copy_notmine"]
    left_tables = f"SELECT name FROM system.tables WHERE database = '{store.database}' AND name LIKE '%_check_%'"
    assert [r[0] for r in store.query(left_tables)[1]] == ["keep_check_0123abcd"]
    assert drop_leftovers(store) == []


def test_a_copy_names_every_row_that_breaks_a_check_constraint_in_one_query(store: ClickHouseStore) -> None:
    """stream/constraint_check.py through the copy: the constraints are those of the table that holds
    them (on a cluster, the local one), evaluated over the rows with the table's own defaults."""
    db = store.database
    data = "spans" + (LOCAL_SUFFIX if store.cluster else "")
    store.command(f"ALTER TABLE {db}.{data} ADD CONSTRAINT no_poison CHECK name != 'poison'")
    store.command(f"ALTER TABLE {db}.{data} ADD CONSTRAINT no_future CHECK start_time < toDateTime64('2100-01-01', 9)")
    poison = [*GOOD[:2], "poison", *GOOD[3:]]
    future = [*GOOD[:3], 4_200_000_000_000_000_000, *GOOD[4:]]
    named = asyncio.run(NullCopy(store, "spans", COLS).violations([GOOD, poison, GOOD, future, poison]))
    assert named is not None and sorted(named) == [1, 3, 4]
    assert "`no_poison`" in named[1] and "`no_future`" in named[3] and f"for table {db}.spans is" in named[4]
    left = f"SELECT count() FROM system.tables WHERE database = '{db}' AND position(name, '_check_') > 0"
    assert store.query(left)[1] == [(0,)] and store.query(f"SELECT count() FROM {db}.spans")[1] == [(0,)]
