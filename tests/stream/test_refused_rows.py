"""Rows ClickHouse refuses, on real embedded ClickHouse: the refusals are real (a ``CHECK``
constraint, a value the client cannot serialize), and so are the stored rows and the tokens."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DataError

from stream.refused_rows import (
    PROBE_PARTS,
    KnownGood,
    Refusal,
    Refused,
    _named_row,
    by_source,
    insert_isolating,
    is_refusal,
)
from stream.retry import retry_forever
from stream.store import ClickHouseStore
from stream.table_copy import NullCopy, each_taken

POISON = "poison"


def make_table(store: ClickHouseStore, check: str = f"name != '{POISON}'") -> str:
    table = f"{store.database}.t"
    store.command(f"CREATE TABLE {table} (id UInt64, name String, CONSTRAINT no_poison CHECK {check}) "
                  "ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 1000")  # fmt: skip
    return table


def raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing raised")


class Writer:
    """The store's real insert into ``t``; records each call's rows and token."""

    def __init__(self, store: ClickHouseStore, outages: int = 0) -> None:
        self.store, self.outages = store, outages
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        self.calls.append((len(rows), token))
        if self.outages and len(self.calls) > 1:  # a connection lost in the middle of the split
            self.outages -= 1
            raise ConnectionResetError("connection reset by peer")
        await self.store.ainsert("t", rows, ["id", "name"], token)


def retry(attempts: list[str], on_sleep: Callable[[], None] = lambda: None) -> Callable[..., Awaitable[None]]:
    async def sleep(_: float) -> None:
        on_sleep()

    def run(op: Callable[[], Awaitable[None]], what: str) -> Awaitable[None]:
        return retry_forever(op, what, sleep=sleep, on_retry=lambda: attempts.append(what), stop_on=(Refusal,))

    return run


def stored(store: ClickHouseStore) -> list[int]:
    """The distinct ids, as the worker's ReplacingMergeTree tables read with FINAL would show them
    (a plain MergeTree here, so that :func:`raw_rows` sees every copy)."""
    return [r[0] for r in store.query(f"SELECT DISTINCT id FROM {store.database}.t ORDER BY id")[1]]


def raw_rows(store: ClickHouseStore) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.t")[1][0][0])


def test_refusals_are_told_from_outages_by_what_clickhouse_and_the_client_raise(store: ClickHouseStore) -> None:
    make_table(store)

    def insert(table: str, row: list[Any]) -> Callable[[], None]:
        return lambda: asyncio.run(store.ainsert(table, [row], ["id", "name"]))

    violated = raised(insert("t", [1, POISON]))
    assert "VIOLATED_CONSTRAINT" in str(violated) and is_refusal(violated)
    assert is_refusal(raised(insert("t", [1, 2**70])))  # the client cannot serialize it
    assert is_refusal(raised(insert("t", [1, None])))  # the client's own check (DataError)
    unknown_table = raised(insert("missing", [1, "a"]))
    assert "UNKNOWN_TABLE" in str(unknown_table) and not is_refusal(unknown_table)  # the server's state: retried
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = raised(lambda: clickhouse_connect.get_client(host="127.0.0.1", port=port, connect_timeout=2))
    assert type(unreachable).__name__ == "OperationalError" and not is_refusal(unreachable)
    assert not is_refusal(ConnectionResetError("reset")) and not is_refusal(TimeoutError())


def test_refused_rows_are_found_by_splitting_and_every_other_row_is_stored(store: ClickHouseStore) -> None:
    make_table(store)
    rows = [[i, POISON if i in (3, 40, 41) else f"n{i}"] for i in range(100)]
    write, attempts = Writer(store), []
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry(attempts)))
    assert [r.index for r in refused] == [3, 40, 41]
    assert all("VIOLATED_CONSTRAINT" in r.error for r in refused)
    assert stored(store) == [i for i in range(100) if i not in (3, 40, 41)]
    assert attempts == []  # refusals are not retried
    # the constraint names the row it refuses: the rows before it are stored, the row is tried
    # alone, and the rows after it a few expected gaps at a time (doubling while they are stored),
    # a quarter of the part after a part whose first row is refused (40, 41: a run): the whole;
    # 0-2, 3; 4-11, 12-27, 28-59 (names 40); 28-39, 40; 41-81 (names 41, its first row), 41; then
    # 42-51, 52-71, 72-99
    assert [t for _, t in write.calls][1:] == [f"tok:{r}" for r in (
        "0-3", "3-4", "4-12", "12-28", "28-60", "28-40", "40-41", "41-82", "41-42", "42-52", "52-72", "72-100")]
    tokens = [t for _, t in write.calls]
    assert tokens[0] == "tok" and all(t.startswith("tok:") for t in tokens[1:]) and len(set(tokens)) == len(tokens)

    # the same insert again (a redelivered batch): the same parts with the same tokens, stored once
    assert raw_rows(store) == 97
    again = asyncio.run(insert_isolating(Writer(store), rows, "tok", "insert t", retry([])))
    assert again == refused and raw_rows(store) == 97


def test_an_outage_during_the_split_is_waited_out(store: ClickHouseStore) -> None:
    make_table(store)
    rows = [[i, POISON if i == 9 else "ok"] for i in range(16)]
    attempts: list[str] = []
    refused = asyncio.run(insert_isolating(Writer(store, outages=2), rows, "tok", "insert t", retry(attempts)))
    assert [r.index for r in refused] == [9]
    assert len(attempts) == 2 and "(rows " in attempts[0]  # the retry names the part
    assert stored(store) == [i for i in range(16) if i != 9]


def test_a_single_refused_row_and_a_clean_insert(store: ClickHouseStore) -> None:
    make_table(store)
    write = Writer(store)
    assert [r.index for r in asyncio.run(insert_isolating(write, [[1, POISON]], "a", "t", retry([])))] == [0]
    assert asyncio.run(insert_isolating(write, [[2, "x"], [3, "y"]], "b", "t", retry([]))) == []
    assert len(write.calls) == 2 and stored(store) == [2, 3]


def known_good(store: ClickHouseStore, asked: list[int] | None = None) -> KnownGood:
    """The worker's :class:`KnownGood` for ``t``: its rows probed in a copy that keeps nothing."""

    async def probe(rows: Sequence[Any]) -> list[Exception | None]:
        if asked is not None:
            asked.append(len(rows))
        return await each_taken(lambda: NullCopy(store, "t", ["id", "name"]), rows)

    return KnownGood(probe)


def copies_left(store: ClickHouseStore) -> int:
    sql = f"SELECT count() FROM system.tables WHERE database = '{store.database}' AND startsWith(name, 't_copy_')"
    return int(store.query(sql)[1][0][0])


@pytest.mark.parametrize("change", ["constraint", "column type"])
def test_a_small_insert_all_refused_after_a_schema_change_waits_instead_of_dead_lettering(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    """Too few rows to tell a schema problem by refused parts (a quiet stream): the rows the table
    took before are refused too, so the insert is retried until the schema takes it again."""
    make_table(store)
    known, attempts = known_good(store), []
    for i in range(3):  # earlier inserts: each leaves its last row as known good
        assert asyncio.run(insert_isolating(Writer(store), [[i, "7"]], f"k{i}", "insert t", retry([]), known=known)) == []
    if change == "constraint":  # no row meets it
        store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT expected CHECK name = 'expected'")
        undo = f"ALTER TABLE {store.database}.t DROP CONSTRAINT expected"
    else:  # the worker's strings no longer fit: the client cannot serialize any row
        store.command(f"ALTER TABLE {store.database}.t MODIFY COLUMN name UInt64")
        undo = f"ALTER TABLE {store.database}.t MODIFY COLUMN name String"

    def fix_after_two_tries() -> None:
        if len(attempts) == 2:
            store.command(undo)

    rows = [[10, "a"], [11, "b"], [12, "c"]]
    write = Writer(store)
    with caplog.at_level(logging.ERROR, logger="stream.refused_rows"):
        refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry(attempts, fix_after_two_tries),
                                               known=known))  # fmt: skip
    assert refused == [] and stored(store) == [0, 1, 2, 10, 11, 12]  # nothing dead-lettered, all stored once fixed
    assert "refuses each of the 3 rows of insert t, and each of the last rows it took before" in caplog.text
    assert len(attempts) == 2 and write.calls[-1] == (3, "tok")
    assert copies_left(store) == 0  # the copy it asked is gone


def test_a_small_insert_of_bad_data_is_still_refused_when_the_table_takes_rows_it_took_before(
    store: ClickHouseStore,
) -> None:
    make_table(store)
    asked: list[int] = []
    known = known_good(store, asked)
    write = Writer(store)
    # nothing stored yet: no evidence, the refused row is dead-lettered without asking
    assert [r.index for r in asyncio.run(insert_isolating(write, [[1, POISON]], "a", "t", retry([]), known=known))] == [0]
    assert asked == []
    assert asyncio.run(insert_isolating(write, [[2, "x"], [3, "y"]], "b", "t", retry([]), known=known)) == []
    refused = asyncio.run(insert_isolating(write, [[4, POISON], [5, POISON]], "c", "t", retry([]), known=known))
    assert [r.index for r in refused] == [0, 1] and asked == [1]  # asked with the one known row: taken
    assert stored(store) == [2, 3] and copies_left(store) == 0


def test_known_good_keeps_the_last_rows_and_an_outage_while_asking_is_no_evidence() -> None:
    seen: list[list[Any]] = []

    async def probe(rows: Sequence[Any]) -> list[Exception | None]:
        seen.append(list(rows))
        raise ConnectionResetError("connection reset by peer")

    known = KnownGood(probe, keep=2)
    for part in ([1, 2], [3], [4, 5]):
        known.took(part)
    assert asyncio.run(known.refused_now()) is False and seen == [[3, 5]]


def fixed_after_two_tries(store: ClickHouseStore, attempts: list[str]) -> Callable[[], None]:
    """A retry's sleep hook: the schema is mended (the constraint dropped) at the second retry."""

    def fix() -> None:
        if len(attempts) == 2:
            store.command(f"ALTER TABLE {store.database}.t DROP CONSTRAINT no_poison")

    return fix


def test_refusals_everywhere_are_a_schema_problem_and_the_whole_insert_waits(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    make_table(store, check="name = 'expected'")  # a constraint no row meets: nothing is bad data
    rows = [[i, f"n{i}"] for i in range(64)]
    attempts: list[str] = []
    write = Writer(store)
    with caplog.at_level(logging.ERROR, logger="stream.refused_rows"):
        refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t",
                                               retry(attempts, fixed_after_two_tries(store, attempts))))  # fmt: skip
    assert refused == [] and stored(store) == list(range(64))  # nothing dead-lettered, all stored once fixed
    # the split stopped once PROBE_PARTS parts were refused and none stored (the whole, row 0
    # alone; 1-16, 1; 2-5, 2; then 3 to 12 one at a time: each part's first row is refused, so the
    # next part is a quarter of it), after 8 single rows were refused too; then 2 retries of the
    # whole, and its success
    parts = 6 + 10
    assert parts == PROBE_PARTS
    assert f"refuses all {parts} parts of insert t (64 rows) tried, and each of 8 rows alone" in caplog.text
    assert len(attempts) == 2 and write.calls[-1] == (64, "tok")
    assert len(write.calls) == parts + 8 + 3


def test_a_schema_problem_the_client_raises_is_found_the_same_way(store: ClickHouseStore) -> None:
    """No row named (the client cannot serialize any row): the split halves, level by level, until
    PROBE_PARTS parts are refused with none stored, then probes; nothing is dead-lettered."""
    make_table(store)
    rows = [[i, 2**70 + i] for i in range(64)]  # no row fits the String column
    attempts: list[str] = []
    write = Writer(store)

    def fix_after_one_try() -> None:  # the worker is fixed: it writes strings again
        for r in rows:
            r[1] = str(r[1])

    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry(attempts, fix_after_one_try)))
    assert refused == [] and stored(store) == list(range(64)) and len(attempts) == 1
    assert len(write.calls) == 1 + 2 * 8 + 8 + 2  # the whole and 8 parts cut in halves: 17 refused, 8 probes


def test_a_wrong_row_number_costs_inserts_never_a_good_row(store: ClickHouseStore) -> None:
    """A server that counted rows differently (here: off by one, both ways) still gets exactly the
    refused rows dead-lettered: a row is refused only when it is refused alone."""
    make_table(store)
    bad = {7, 8, 50, 99}
    rows = [[i, POISON if i in bad else "ok"] for i in range(100)]
    for shift in (1, -1):
        store.command(f"TRUNCATE TABLE {store.database}.t")
        inner = Writer(store)

        async def lying(part: Sequence[Sequence[Any]], token: str, shift: int = shift) -> None:
            try:
                await inner(part, token)
            except Exception as exc:  # the real refusal, its row number moved
                text = re.sub(r"violated at row (\d+)", lambda m: f"violated at row {int(m[1]) + shift}", str(exc))
                raise type(exc)(text) from exc

        refused = asyncio.run(insert_isolating(lying, rows, f"tok{shift}", "insert t", retry([])))
        assert [r.index for r in refused] == sorted(bad)
        assert stored(store) == [i for i in range(100) if i not in bad]


def test_a_run_of_refused_rows_costs_one_insert_each(store: ClickHouseStore) -> None:
    make_table(store)
    bad = set(range(20, 60))
    rows = [[i, POISON if i in bad else "ok"] for i in range(100)]
    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry([])))
    assert [r.index for r in refused] == sorted(bad)
    assert stored(store) == [i for i in range(100) if i not in bad]
    # the whole; 0-19, 20 alone; 21-62 (names 21, its first row), 21 alone; the part after it a
    # quarter of that: 22-31 (names 22), 22 alone; 23-24 (names 23), 23 alone; then 24 to 59 one at
    # a time (a part of one row refused is refused alone: 36); then 60-99 in parts of 1, 2, 4, 8, 16, 9
    assert len(write.calls) == 1 + 2 + 2 + 2 + 2 + 36 + 6, write.calls  # 85 when the run is not seen


def test_a_server_naming_a_good_row_cannot_make_the_split_peel_one_row_per_insert(store: ClickHouseStore) -> None:
    """Trusting a named row that is good would store one row per insert; once a named row is stored
    alone, row numbers are ignored for the rest of the insert and refused parts are cut in halves."""
    make_table(store)
    rows = [[i, POISON if i == 90 else "ok"] for i in range(100)]
    inner = Writer(store)

    async def first_row(part: Sequence[Sequence[Any]], token: str) -> None:
        try:
            await inner(part, token)
        except Exception as exc:  # the real refusal, naming the part's first row whatever it was
            raise type(exc)(re.sub(r"violated at row \d+", "violated at row 1", str(exc))) from exc

    refused = asyncio.run(insert_isolating(first_row, rows, "tok", "insert t", retry([])))
    assert [r.index for r in refused] == [90]
    assert stored(store) == [i for i in range(100) if i != 90]
    # the whole and row 0 alone (stored: the hint is wrong), then the rest in doubling parts (at
    # most 7 over 99 rows), the refused one in halves: 2 per level
    assert len(inner.calls) <= 2 + 7 + 2 * 7, inner.calls


def test_the_row_a_constraint_names_counts_from_1_within_the_part() -> None:
    named = "Code: 469. DB::Exception: Constraint `c` for table d.t (x) is violated at row 3. Expression: ..."
    assert _named_row(named, 10, 20) == 12
    assert _named_row(named.replace("row 3", "row 1"), 0, 2) == 0
    assert _named_row(named.replace("row 3", "row 10"), 10, 20) == 19  # the last row
    assert _named_row(named.replace("row 3", "row 11"), 10, 20) is None  # outside the part
    assert _named_row("TypeError: unsupported", 10, 20) is None


def test_many_refused_rows_spread_everywhere_are_bad_data_not_a_schema_problem(store: ClickHouseStore) -> None:
    """Every part of the first 16-part level holds a refused row; rows probed alone are fine. The
    client refuses them (a number for a String column), so no row is named and the split halves."""
    make_table(store)
    bad = set(range(5, 600, 15))  # 40 rows, 2-3 in each part of 37 rows
    rows = [[i, 2**70 if i in bad else "ok"] for i in range(600)]
    write = Writer(store)
    refused = asyncio.run(insert_isolating(write, rows, "tok", "insert t", retry([])))
    assert [r.index for r in refused] == sorted(bad)
    assert stored(store) == [i for i in range(600) if i not in bad]
    # the 8 rows probed alone are stored again inside their parts: collapsed by FINAL, like a replay
    assert raw_rows(store) == 560 + 8


def test_refused_rows_are_grouped_by_their_source() -> None:
    refused = [Refused(i, f"e{i}") for i in (0, 4, 5, 9)]
    groups = by_source([2, 0, 4, 1, 3], refused)  # rows 0-1 | - | 2-5 | 6 | 7-9
    assert groups == {0: [Refused(0, "e0")], 2: [Refused(2, "e4"), Refused(3, "e5")], 4: [Refused(2, "e9")]}


def test_with_no_row_known_a_check_refusal_asks_the_stored_rows_then_the_reference_row() -> None:
    """Nothing stored since start: the recent rows the table holds answer first; when they tell
    nothing (none recent, or the question fails), the reference row is probed instead."""
    probed: list[list[Any]] = []

    async def probe(rows: Sequence[Any]) -> list[Exception | None]:
        probed.append(list(rows))
        return [DataError("refused") for _ in rows]

    def known(answer: bool | None | Exception) -> KnownGood:
        async def stored(names: Sequence[str]) -> bool | None:
            assert list(names) == ["expected"]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return KnownGood(probe, stored=stored, reference=lambda: ["reference row"])

    check = "Code: 469. DB::Exception: Constraint `expected` for table db.t (x) is violated at row 1. Expression: (a = 1)"
    assert asyncio.run(known(False).refused_now(check)) is False and probed == []  # a recent row meets it
    assert asyncio.run(known(True).refused_now(check)) is True and probed == []  # every recent row breaks it
    held = known(None)
    assert asyncio.run(held.refused_now(check)) is True and probed == [["reference row"]]
    assert held.evidence.startswith("a reference row")
    assert asyncio.run(known(ConnectionResetError("reset")).refused_now(check)) is True and len(probed) == 2
    no_reference = KnownGood(probe, stored=lambda names: asyncio.sleep(0, None))  # none recent, no reference row
    assert asyncio.run(no_reference.refused_now(check)) is False and len(probed) == 2
