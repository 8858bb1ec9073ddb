"""stream/user_sql.py: what ``tracejudge sql`` and ``/api/sql`` may run, refused before the engine
sees it, and the limits a query runs under, against the real embedded ClickHouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.store import ClickHouseStore
from stream.user_sql import MAX_ROWS, MAX_SECONDS, check, result
from stream.worker import sql_request_refused


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  with x as (select 1) select * from x", "(SELECT 1)", "SHOW TABLES", "DESCRIBE TABLE spans",
    "SELECT 'file(1); INTO OUTFILE' AS s",  # in a string: data, not code
    "SELECT 1 -- file('/etc/passwd') INTO OUTFILE",  # in a comment
    "SELECT `file` FROM t", "SELECT profile(x) FROM t",  # a name, not a call; another function
    "SELECT 1;", "SELECT 1 ;  -- done",
])  # fmt: skip
def test_read_only_statements_pass(sql: str) -> None:
    check(sql)


@pytest.mark.parametrize(("sql", "why"), [
    ("DROP TABLE t", "only SELECT"),
    ("INSERT INTO t VALUES (1)", "only SELECT"),
    ("-- comment\nDROP TABLE t", "only SELECT"),
    ("SELECT file('/etc/passwd')", r"file\(\) is not allowed"),
    ("SELECT FILE ('/etc/passwd')", r"FILE\(\) is not allowed"),
    ('SELECT "file"(\'/etc/passwd\')', r"file\(\) is not allowed"),
    ("SELECT file/* a comment */('/etc/passwd')", r"file\(\) is not allowed"),
    ("SELECT * FROM url('http://x', CSV)", r"url\(\) is not allowed"),
    ("DESCRIBE file('/etc/passwd')", r"file\(\) is not allowed"),
    ("SELECT 1 INTO OUTFILE '/tmp/x' APPEND", "INTO OUTFILE"),
    ("WITH 1 AS y SELECT y INTO\nOUTFILE '/tmp/x'", "INTO OUTFILE"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT 1; INSERT INTO t VALUES (1)", "one statement"),
    ("SELECT 'it''s' ; SELECT file('x')", "not allowed|one statement"),
])  # fmt: skip
def test_what_reaches_outside_the_database_is_refused(sql: str, why: str) -> None:
    with pytest.raises(PermissionError, match=why):
        check(sql)


def test_the_engine_does_what_check_refuses_so_check_must(store: ClickHouseStore, tmp_path: Path) -> None:
    """Under readonly = 1 alone, chDB reads any file through the scalar file() and runs several
    statements; the store refuses them, and runs what passes within row limits."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    assert store.query(f"SELECT file('{secret}')", settings={"readonly": 1})[1] == [("s3cret",)]  # the hole
    with pytest.raises(PermissionError):
        store.read_only_query(f"SELECT file('{secret}')")
    with pytest.raises(PermissionError):
        store.read_only_query(f"SELECT 1 INTO OUTFILE '{tmp_path / 'out.txt'}'")
    assert not (tmp_path / "out.txt").exists()
    cut = store.read_only_query("SELECT number FROM numbers(200000)")
    assert len(cut.rows) == MAX_ROWS and cut.cut is not None and "100,000 rows" in cut.cut
    # stopped by a limit, not by an error: the next query on the client gets its own data (a limit
    # that threw in mid-result left the rest to the next query, the worker's own ones included)
    assert store.query("SELECT 'next', 1") == (["'next'", "1"], [("next", 1)])
    with pytest.raises(Exception, match="READONLY|readonly"):
        store.read_only_query("SELECT 1 SETTINGS max_execution_time = 0")  # the limits cannot be lifted
    whole = store.read_only_query("SELECT count() FROM numbers(100000)")
    assert (whole.rows, whole.cut) == ([(100000,)], None)


def test_a_query_stopped_at_the_time_limit_says_so() -> None:
    assert result(["x"], [(1,)], MAX_SECONDS + 0.01).cut == f"the query stopped at the {MAX_SECONDS} s limit: the result may be incomplete"
    assert result(["x"], [(1,)], 0.5).cut is None


@pytest.mark.parametrize(("headers", "loopback_only", "refused"), [
    ({"Content-Type": "application/json", "Host": "127.0.0.1:6066"}, True, None),
    ({"Content-Type": "application/json; charset=utf-8", "Host": "localhost:6066",
      "Origin": "http://localhost:6066"}, True, None),
    ({"Content-Type": "text/plain", "Host": "127.0.0.1:6066"}, True, "as JSON"),  # a web page's simple POST
    ({"Content-Type": "application/json", "Host": "127.0.0.1:6066", "Origin": "https://evil.example"}, True,
     "cross-origin"),
    ({"Content-Type": "application/json", "Host": "evil.example:6066", "Origin": "http://evil.example:6066"}, True,
     "not a loopback name"),  # DNS rebinding: same origin to the browser, not a name of this machine
    ({"Content-Type": "application/json", "Host": "worker:6066"}, False, None),  # bound off loopback (compose)
])  # fmt: skip
def test_sql_requests_a_web_page_could_send_are_refused(headers: dict[str, str], loopback_only: bool,
                                                        refused: str | None) -> None:  # fmt: skip
    got = sql_request_refused(headers, loopback_only)
    assert got is None if refused is None else (got is not None and refused in got)
