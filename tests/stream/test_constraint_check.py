"""Every row of an insert that breaks a table's ``CHECK`` constraints, in one query
(stream/constraint_check.py): the definition's parsing, and the query on real embedded ClickHouse."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.constraint_check import (
    Check,
    check_constraints,
    column_list,
    needed_columns,
    stored_rows_violate,
    violated_names,
    violating_rows,
)
from stream.store import ClickHouseStore
from stream.table_copy import NullCopy


def test_the_column_list_is_split_at_its_own_commas_only() -> None:
    create = ("CREATE TABLE d.`t(x` (`a,b` String DEFAULT 'x, (y', `c` Map(String, UInt8), "
              "CONSTRAINT c1 CHECK (length(`a,b`) < 3) AND (c['k'] != 1), INDEX i c TYPE bloom_filter) "
              "ENGINE = MergeTree ORDER BY tuple() SETTINGS a = (1, 2)")  # fmt: skip
    assert column_list(create) == [
        "`a,b` String DEFAULT 'x, (y'", "`c` Map(String, UInt8)",
        "CONSTRAINT c1 CHECK (length(`a,b`) < 3) AND (c['k'] != 1)", "INDEX i c TYPE bloom_filter",
    ]  # fmt: skip
    assert column_list("CREATE TABLE d.t (a String") == []  # cut short: nothing, rather than a guess


def test_check_constraints_are_read_assume_ones_and_look_alikes_are_not() -> None:
    create = ("CREATE TABLE d.t (`a` String DEFAULT 'CONSTRAINT x CHECK 0', `b` Int64, "
              "CONSTRAINT `odd name, with\\` quote` CHECK b < 100, CONSTRAINT hint ASSUME b > 0, "
              "CONSTRAINT no_poison CHECK a NOT LIKE 'poison%') ENGINE = Null")  # fmt: skip
    assert check_constraints(create) == [Check("odd name, with` quote", "b < 100"),
                                         Check("no_poison", "a NOT LIKE 'poison%'")]  # fmt: skip
    assert check_constraints("CREATE TABLE d.t (`a` String) ENGINE = Null") == []


def make(store: ClickHouseStore, body: str) -> None:
    store.command(f"CREATE TABLE {store.database}.t ({body}) ENGINE = MergeTree ORDER BY id")


def scratch_tables(store: ClickHouseStore) -> int:
    sql = f"SELECT count() FROM system.tables WHERE database = '{store.database}' AND name LIKE 't_check_%'"
    return int(store.query(sql)[1][0][0])


def test_every_violating_row_is_named_with_each_constraint_it_breaks(store: ClickHouseStore) -> None:
    """Defaults and materialized columns are computed as the table would; a NULL result violates, as
    on insert; ASSUME constraints are not checked; the scratch table is gone after."""
    make(store, "id UInt64, name String, score Nullable(Float64), upper String MATERIALIZED upper(name), "
                "tag String DEFAULT 'none', CONSTRAINT short CHECK length(upper) < 8, "
                "CONSTRAINT scored CHECK score >= 0 AND tag != 'bad', CONSTRAINT hint ASSUME id < 3")  # fmt: skip
    rows = [[0, "ok", 1.0], [1, "far too long", 1.0], [2, "ok", None], [3, "also too long", -1.0], [4, "ok", 0.0]]
    named = asyncio.run(violating_rows(store, "t", ["id", "name", "score"], rows))
    assert named is not None and sorted(named) == [1, 2, 3]
    assert "Constraint `short`" in named[1] and "`scored`" not in named[1]
    assert "Constraint `scored`" in named[2] and "Expression: ((score >= 0) AND (tag != 'bad'))" in named[2]
    assert "`short`" in named[3] and "`scored`" in named[3] and "VIOLATED_CONSTRAINT" in named[3]
    assert f"for table {store.database}.t is violated" in named[1]
    with pytest.raises(Exception, match="VIOLATED_CONSTRAINT"):  # what the table itself says of those rows
        store.insert("t", [rows[2]], ["id", "name", "score"])
    store.insert("t", [rows[0], rows[4]], ["id", "name", "score"])  # and it takes the others
    assert scratch_tables(store) == 0 and store.insert_stats()["t (constraints)"]["inserts"] == 1


def test_nothing_to_evaluate_or_a_query_that_fails_is_no_answer(store: ClickHouseStore) -> None:
    """The caller then splits the insert as before (stream/refused_rows.py)."""
    make(store, "id UInt64, name String")
    assert asyncio.run(violating_rows(store, "t", ["id", "name"], [[1, "a"]])) is None  # no CHECK at all
    store.command(f"ALTER TABLE {store.database}.t ADD COLUMN _tj_row UInt32")  # the scratch's own column
    store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT c CHECK name != ''")
    assert asyncio.run(violating_rows(store, "t", ["id", "name"], [[1, ""]])) is None
    store.command(f"ALTER TABLE {store.database}.t DROP COLUMN _tj_row")
    # an expression that fails on some value: the query fails, the copy answers None and says why
    store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT boom CHECK throwIf(name = 'boom') = 0")
    copy = NullCopy(store, "t", ["id", "name"])
    named = asyncio.run(copy.violations([[1, ""], [2, "ok"]]))
    assert named is not None and list(named) == [0] and "Constraint `c`" in named[0] and "`boom`" not in named[0]
    assert asyncio.run(copy.violations([[1, ""], [2, "boom"]])) is None
    assert scratch_tables(store) == 0


def test_the_columns_sent_are_those_the_constraints_read_through_any_default() -> None:
    checks = [Check("a", "length(upper_name) < 8"), Check("b", "`odd col` > 0 AND m.size0 < 3")]
    columns = [("name", ""), ("upper_name", "upper(trim(name))"), ("other", ""), ("named", ""),
               ("odd col", ""), ("m", ""), ("upper", "lower(other)")]  # fmt: skip
    # `upper` is also a function upper_name's default calls: taken (a column too many), and what it reads
    assert needed_columns(checks, columns) == {"upper_name", "name", "odd col", "m", "upper", "other"}
    assert needed_columns([Check("c", "t.name != ''")], columns) == {"name"}  # qualified: still read


def test_rows_already_stored_tell_a_constraint_newer_than_the_data(store: ClickHouseStore) -> None:
    """``stored_rows_violate``: True when every recent stored row looked at breaks one of the named
    CHECK constraints (it refuses what the table took before), False when one meets them, None
    when it cannot tell (none of them a CHECK of the table, no recent row)."""
    make(store, "id UInt64, name String, at DateTime")
    recent = "at >= now() - INTERVAL 1 DAY"
    ask = lambda *names, limit=100: asyncio.run(stored_rows_violate(store, "t", names, recent, limit))  # noqa: E731
    store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT no_poison CHECK name != 'poison'")
    assert ask("no_poison") is None  # no rows
    now = int(time.time())
    store.insert("t", [[i, f"n{i}", now - 60] for i in range(150)] + [[900, "old", now - 9 * 86400]], ["id", "name", "at"])
    assert ask("no_poison") is False  # bad data: the stored rows meet it
    assert ask("not_a_constraint") is None and ask() is None
    store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT expected CHECK name = 'expected'")
    assert ask("expected") is True and ask("no_poison", "expected") is True  # no stored row meets it
    assert ask("expected", limit=1) is True and ask("no_poison") is False  # only the constraints named
    # a constraint on time that the recent rows meet and old rows do not: not taken for a schema change
    store.command(f"ALTER TABLE {store.database}.t ADD CONSTRAINT fresh CHECK at > now() - INTERVAL 7 DAY")
    assert ask("fresh") is False
    assert asyncio.run(stored_rows_violate(store, "t", ["fresh"], "id = 900")) is True  # (the old row alone)


def test_the_constraints_a_refusal_names_and_not_those_its_values_spell() -> None:
    server = ("Code: 469. DB::Exception: Constraint `no_poison` for table d.t (6520-73) is violated at row 2. "
              "Expression: (a NOT LIKE 'poison%'). Column values: a = 'x. Constraint `other` for table d.t '. "
              "(VIOLATED_CONSTRAINT)")  # fmt: skip
    assert violated_names(server) == ["no_poison"]
    ours = ("Code: 469. Constraint `a` for table d.t is violated. Expression: (x). (VIOLATED_CONSTRAINT); "
            "Code: 469. Constraint `odd \\` name` for table d.t is violated. Expression: (y). (VIOLATED_CONSTRAINT)")
    assert violated_names(ours) == ["a", "odd ` name"] and violated_names("Code: 53. TYPE_MISMATCH") == []
