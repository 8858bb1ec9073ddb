"""Which rows of an insert break a table's ``CHECK`` constraints: all of them, in one query.

A refused insert names only the first row that violates a constraint ("is violated at row N"), so
finding every refused row by inserting parts costs inserts per refused row (stream/refused_rows.py).
Where the refusal is a violated constraint, :func:`violating_rows` asks ClickHouse once instead:

1. the table's ``CHECK`` constraints are read from its own definition (``system.tables``), and its
   columns, with their ``DEFAULT`` / ``MATERIALIZED`` / ``ALIAS`` expressions, from
   ``system.columns`` (on a cluster: those of its ``_local`` table, which has the constraints);
2. the rows go, numbered, into a throwaway ``Memory`` table with no constraint and only the columns
   the constraints read (named in their expressions, or in the default expressions of those):
   ``<table>_check_<random>``, dropped after; a worker drops leftovers at start;
3. one ``SELECT`` evaluates every constraint over them as ClickHouse does on insert (a row violates
   a constraint whose expression is 0 or NULL) and returns the rows that violate any.

The constraint expressions come from the server's own table definition, never from row values
or error messages. The caller treats the answer as a hint it checks: the rows not named are
inserted into the ``Null`` copy together, and anything it still refuses is split as before; a
named row is one the table's own expression rejects, which is what the server does on insert.
If anything here fails (no ``CHECK`` found, an expression that needs what the copy lacks, an
outage) the answer is None and the caller splits as before.

:func:`stored_rows_violate` asks the same of recent rows the table already holds, for the
constraints a refusal names: where every one breaks them, the constraint refuses what the table
took before (a schema problem). A worker that has stored nothing yet asks it when every row of an
insert is refused (``KnownGood``).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from stream.cluster import LOCAL_SUFFIX
from stream.store import ClickHouseStore

log = logging.getLogger(__name__)

ROW_COLUMN = "_tj_row"  # the row's index in the insert, in the scratch table
STORED_SAMPLE = 100  # rows already stored that :func:`stored_rows_violate` looks at
_CHECK = re.compile(r"CONSTRAINT\s+(`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_]*)\s+CHECK\s+(.+)", re.S)
_DEFAULT_KINDS = {"DEFAULT", "MATERIALIZED", "ALIAS", "EPHEMERAL"}
# how ClickHouse (and :func:`violating_rows`) name a violated constraint in a refusal
_NAMED = re.compile(r"\bConstraint `((?:[^`\\]|\\.)*)` for table ")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    expression: str  # as the server formats it in the table's definition


def column_list(create: str) -> list[str]:
    """The elements of the first parenthesized list of a ``CREATE TABLE`` statement (columns,
    indexes, projections, constraints), split at its top-level commas; quotes are respected."""
    out: list[str] = []
    depth, quote, escaped, start = 0, "", False, -1
    for i, ch in enumerate(create):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
            if depth == 1:
                start = i + 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                out.append(create[start:i].strip())
                return [e for e in out if e]
        elif ch == "," and depth == 1:
            out.append(create[start:i].strip())
            start = i + 1
    return []  # no complete list: not a statement this understands


def check_constraints(create: str) -> list[Check]:
    """The ``CHECK`` constraints of a ``CREATE TABLE`` statement (``ASSUME`` ones are not checked on insert)."""
    out = []
    for element in column_list(create):
        if m := _CHECK.fullmatch(element):
            name = m.group(1)
            if name.startswith("`"):
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            out.append(Check(name, m.group(2).strip()))
    return out


def needed_columns(checks: Sequence[Check], columns: Sequence[tuple[str, str]]) -> set[str]:
    """The columns (``(name, default expression)``) the constraints read: those their expressions
    name, and those the default expressions of these name, and so on. A name is taken wherever it
    stands as a word (in a string literal too): one column too many costs a little, one too few
    would change the answer."""
    text, needed, grew = " ".join(c.expression for c in checks), set(), True
    while grew:
        grew = False
        for name, expr in columns:
            if name not in needed and re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text):
                needed.add(name)
                text, grew = f"{text} {expr}", True
    return needed


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


async def table_checks(store: ClickHouseStore, table: str) -> list[Check]:
    """The ``CHECK`` constraints of ``table`` as it is now (on a cluster, of its local table)."""
    _, found = await store.aquery(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": table + (LOCAL_SUFFIX if store.cluster else "")},
    )
    return check_constraints(found[0][0]) if found else []


def _violated(check: Check) -> str:
    """SQL: 1 where a row violates ``check`` (its expression 0 or NULL), as an insert checks it."""
    return f"ifNull(toUInt8(NOT ({check.expression})), 1)"


def violated_names(error: str) -> list[str]:
    """The constraints a refusal names ("Constraint `name` for table ..."), in order, once each.
    ClickHouse quotes the row's values after "Column values:": the untrusted part is not read."""
    said = error.split(". Column values:", 1)[0]
    return list(dict.fromkeys(re.sub(r"\\(.)", r"\1", m) for m in _NAMED.findall(said)))


async def stored_rows_violate(
    store: ClickHouseStore, table: str, names: Collection[str], recent: str, limit: int = STORED_SAMPLE
) -> bool | None:
    """Whether every one of (up to ``limit``) recent rows the table holds (``recent``: a condition
    ClickHouse can answer from few parts) breaks one of the ``CHECK`` constraints ``names``: a
    constraint newer than the data, refusing what was taken before (a schema problem, not bad
    data). None when none of ``names`` is a ``CHECK`` of the table, or no recent row is stored."""
    checks = [c for c in await table_checks(store, table) if c.name in names]
    if not checks:
        return None
    _, rows = await store.aquery(
        f"SELECT {' OR '.join(map(_violated, checks))} FROM {store.database}.{table} WHERE {recent} LIMIT {int(limit)}"
    )
    return all(v for (v,) in rows) if rows else None


async def violating_rows(
    store: ClickHouseStore, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[int, str] | None:
    """``{row index: what it violates}`` for the rows of ``rows`` (``columns`` in order) that break
    a ``CHECK`` constraint of ``table``; None when this cannot tell (see the module docstring)."""
    db = store.database
    source = table + (LOCAL_SUFFIX if store.cluster else "")
    checks = await table_checks(store, table)
    if not checks:
        return None
    _, described = await store.aquery(
        "SELECT name, type, default_kind, default_expression FROM system.columns"
        " WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        {"db": db, "t": source},
    )
    if ROW_COLUMN in {name for name, *_ in described}:
        return None
    needed = needed_columns(checks, [(name, expr) for name, _, _, expr in described])
    described = [d for d in described if d[0] in needed]
    defs = [
        f"{_ident(name)} {ctype}" + (f" {kind} {expr}".rstrip() if kind in _DEFAULT_KINDS else "")
        for name, ctype, kind, expr in described
    ]
    sent = [i for i, c in enumerate(columns) if c in needed]  # only what the constraints read is sent
    scratch = f"{table}_check_{secrets.token_hex(4)}"
    flags = [f"{_violated(c)} AS _tj_v{k}" for k, c in enumerate(checks)]
    try:
        await store.acommand(f"CREATE TABLE {db}.{scratch} ({', '.join(defs)}, {ROW_COLUMN} UInt32) ENGINE = Memory")
        await store.ainsert(scratch, [[*(row[k] for k in sent), i] for i, row in enumerate(rows)],
                            [*(columns[k] for k in sent), ROW_COLUMN], stats_as=f"{table} (constraints)")  # fmt: skip
        _, violating = await store.aquery(
            f"SELECT {ROW_COLUMN}, {', '.join(flags)} FROM {db}.{scratch}"
            f" WHERE {' OR '.join(f'_tj_v{k}' for k in range(len(checks)))}"
        )
    finally:
        try:
            await store.acommand(f"DROP TABLE IF EXISTS {db}.{scratch} SYNC")
        except Exception as exc:  # noqa: BLE001 - a leftover is dropped at the next start
            log.warning("could not drop the scratch table %s.%s: %s", db, scratch, exc)
        store.forget_table(scratch)
    out = {}
    for row, *violated in violating:
        names = [c for c, v in zip(checks, violated) if v]
        out[int(row)] = "; ".join(
            f"Code: 469. Constraint {_ident(c.name)} for table {db}.{table} is violated. Expression: ({c.expression})."
            " (VIOLATED_CONSTRAINT)" for c in names
        )  # fmt: skip
    return out
