"""What SQL a person may run through ``tracejudge sql`` and a worker's ``/api/sql``: one read-only
statement, within limits.

``readonly = 1`` alone is not enough. The engine still runs the scalar ``file()`` function (any
file the process can read) and ``INTO OUTFILE`` (written by the embedded engine from inside the
worker: a file created, or appended to, anywhere it may write), and chDB runs several statements
separated by ``;``. :func:`check` refuses those from the statement's tokens (strings, quoted
names and comments told apart as ClickHouse's lexer does, erring on the side of refusing), and
:data:`SETTINGS` bound the run: a query holds the store's only thread while it runs, so a heavy
one would stall ingest and judging for as long as it lasts. The settings cannot be changed from
the query (``readonly = 1`` refuses a ``SETTINGS`` clause).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: the statements allowed, by their first keyword (after any opening parentheses)
_START = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.I)

#: functions refused wherever they are called: the scalar ``file`` (readonly lets it read any
#: file) and every table function that reaches outside the database (readonly refuses them
#: already; refused here too, so a server configured otherwise does not open them)
DENIED_FUNCTIONS = frozenset({
    "file", "filecluster", "url", "urlcluster", "remote", "remotesecure", "cluster", "clusterallreplicas",
    "s3", "s3cluster", "gcs", "oss", "cosn", "hdfs", "hdfscluster", "azureblobstorage", "azureblobstoragecluster",
    "input", "executable", "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc", "odbc", "deltalake",
    "iceberg", "icebergs3", "hudi", "dictionary", "loop",
})  # fmt: skip

MAX_ROWS = 100_000
MAX_SECONDS = 30

#: every user query runs with these (the client's own timeout is 60 s). A limit reached stops the
#: query with what it has ("break"), never with an error: with clickhouse-connect's chDB backend,
#: a query stopped by an error in mid-result left the rest of its data to the next query on the
#: client, which the worker's own queries share (they read that data, or failed on it)
SETTINGS = {
    "readonly": 1,
    "max_execution_time": MAX_SECONDS,
    "timeout_overflow_mode": "break",
    "max_result_rows": MAX_ROWS,
    "max_result_bytes": 256 * 1024 * 1024,
    "result_overflow_mode": "break",
}


@dataclass(frozen=True)
class UserResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    cut: str | None = None  # why the result may be incomplete (a limit reached)


def result(columns: list[str], rows: list[tuple[Any, ...]], elapsed_s: float) -> UserResult:
    """The rows a user sees, at most :data:`MAX_ROWS` (the engine stops at a block boundary past
    it), and whether a limit cut them."""
    if len(rows) >= MAX_ROWS:
        return UserResult(columns, rows[:MAX_ROWS], f"the result stops at {MAX_ROWS:,} rows (a limit of tracejudge sql)")
    if elapsed_s >= MAX_SECONDS * 0.98:
        return UserResult(columns, rows, f"the query stopped at the {MAX_SECONDS} s limit: the result may be incomplete")
    return UserResult(columns, rows)

_TOKEN = re.compile(
    r"""\s+
    | --[^\n]*
    | /\*.*?(?:\*/|\Z)
    | '(?:[^'\\]|\\.|'')*(?:'|\Z)
    | "(?P<dq>(?:[^"\\]|\\.|"")*)(?:"|\Z)
    | `(?P<bq>(?:[^`\\]|\\.|``)*)(?:`|\Z)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<other>.)""",
    re.S | re.X,
)


def check(sql: str) -> None:
    """Raise ``PermissionError`` naming what is refused; return if ``sql`` may run."""
    if not _START.match(sql):
        raise PermissionError("only SELECT / WITH / SHOW / DESCRIBE / EXPLAIN / EXISTS queries are allowed")
    tokens = list(_tokens(sql))
    for i, (kind, text) in enumerate(tokens):
        if kind == "word" and text.lower() == "outfile":
            raise PermissionError("INTO OUTFILE is not allowed: the result comes back to you, not to a file")
        if kind == "word" and text.lower() in DENIED_FUNCTIONS and i + 1 < len(tokens) and tokens[i + 1][1] == "(":
            raise PermissionError(f"{text}() is not allowed: it reaches files or systems outside the database")
        if text == ";" and i + 1 < len(tokens):
            raise PermissionError("one statement at a time: nothing may follow ';'")


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each token that is not a space, a comment or a string literal: ``word``
    for a name, bare or quoted (a quoted name may name a function), else ``other``."""
    for m in _TOKEN.finditer(sql):
        if m.group("word") is not None:
            yield "word", m.group("word")
        elif m.group("dq") is not None:
            yield "word", m.group("dq")
        elif m.group("bq") is not None:
            yield "word", m.group("bq")
        elif m.group("other") is not None:
            yield "other", m.group("other")
