"""``tracejudge store-server``: one chDB engine shared over ClickHouse's HTTP interface.

The server runs as a real ``tracejudge store-server`` process (as in a deployment), and the
product's own :class:`stream.store.ClickHouseStore` talks to it with an ``http://`` DSN, i.e.
through clickhouse-connect's HTTP client, exactly as against a ClickHouse server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from stream.engine_tmp import PRIVATE_TMP
from stream.store import ClickHouseStore, connect, is_loopback, load_migrations
from stream.demo.store_server_process import StoreServerProcess

# store-level tests of other modules, collected here again with this module's `store` fixture (below),
# i.e. run against the server: the store itself, the finance views, and the judge sink and ledger
from tests.stream.store_level_tests import *  # noqa: F403

SPAN_COLS = ["trace_id", "span_id", "name", "start_time", "end_time", "ingested_at", "attributes", "exception_types"]
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServerProcess]:
    s = StoreServerProcess(tmp_path_factory.mktemp("store-server"))
    yield s
    assert s.stop() == 0


@pytest.fixture
def store(server: StoreServerProcess) -> Iterator[ClickHouseStore]:
    """A migrated database of its own on the server (overrides the embedded ``store`` fixture)."""
    s = ClickHouseStore(server.dsn, database=f"t_{uuid.uuid4().hex[:12]}")
    s.migrate()
    yield s
    s.command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
    s.close()


def span_row(trace: str, span: str, name: str = "llm call", attrs: dict[str, str] | None = None) -> list[object]:
    return [trace, span, name, T0, T0 + 10**8, 1_700_000_000_000, attrs or {}, ["ValueError"]]


def test_migrate_applies_every_migration_on_a_fresh_database(server: StoreServerProcess) -> None:
    s = ClickHouseStore(server.dsn, database=f"m_{uuid.uuid4().hex[:12]}")
    try:
        assert s.migrate() == [name for _, name, _ in load_migrations()]
        assert s.migrate() == []
        _, rows = s.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": s.database})
        assert {"spans", "traces", "gate_results", "verdicts", "schema_migrations"} <= {r[0] for r in rows}
    finally:
        s.command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
        s.close()


def test_rows_round_trip_and_final_collapses_replays(store: ClickHouseStore) -> None:
    tricky = "NUL\x00 tab\t quote' backslash\\ é 🙂 <b>'; DROP TABLE x; --"
    store.insert("spans", [span_row("a" * 32, "1" * 16, tricky, {"k": tricky}), span_row("a" * 32, "2" * 16)],
                 SPAN_COLS, dedup_token="batch-1")  # fmt: skip
    store.insert("spans", [span_row("a" * 32, "1" * 16, tricky, {"k": tricky})], SPAN_COLS, dedup_token="batch-2")
    db = store.database
    _, raw = store.query(f"SELECT count() FROM {db}.spans")
    _, final = store.query(f"SELECT span_id, name, attributes, exception_types FROM {db}.spans FINAL ORDER BY span_id")
    assert raw == [(3,)]
    assert final == [("1" * 16, tricky, {"k": tricky}, ["ValueError"]), ("2" * 16, "llm call", {}, ["ValueError"])]


def test_server_side_parameters(store: ClickHouseStore) -> None:
    traces = [uuid.uuid4().hex for _ in range(3000)]  # enough ids to make the client form-encode them
    store.insert("spans", [span_row(t, "1" * 16) for t in traces], SPAN_COLS)
    db = store.database
    _, rows = store.query(
        f"SELECT count() FROM {db}.spans FINAL WHERE trace_id IN {{ids:Array(String)}} AND name = {{n:String}} "
        f"AND toUnixTimestamp64Nano(start_time) >= {{since:Int64}}",
        {"ids": traces[:2500] + ["not-there"], "n": "llm call", "since": T0},
    )
    assert rows == [(2500,)]
    odd = ["tab\there", "quote'd", "back\\slash", "new\nline", ""]
    _, rows = store.query("SELECT {xs:Array(String)}, {s:String}, {i:Int64}", {"xs": odd, "s": odd[0], "i": -(2**40)})
    assert rows == [(odd, odd[0], -(2**40))]


def test_dedup_token_twice_stores_one_copy(store: ClickHouseStore) -> None:
    rows = [span_row("c" * 32, f"{i:016x}") for i in range(50)]
    for token in ("p0:o0-49", "p0:o0-49", "p0:o0-49"):  # a retried ambiguous insert
        store.insert("spans", rows, SPAN_COLS, dedup_token=token)
    _, raw = store.query(f"SELECT count() FROM {store.database}.spans")
    assert raw == [(50,)]


def test_read_only_requests_cannot_write_and_do_not_stick(store: ClickHouseStore) -> None:
    db = store.database
    with pytest.raises(PermissionError):  # refused by the client-side filter
        store.read_only_query(f"DROP TABLE {db}.spans")
    with pytest.raises(DatabaseError) as refused:  # refused by the engine: the filter is bypassed here
        store.command(f"INSERT INTO {db}.action_events (event_id) VALUES ('x')", settings={"readonly": 1})
    assert refused.value.code == 164 and "readonly" in str(refused.value)
    assert store.read_only_query(f"SELECT count() FROM {db}.action_events").rows == [(0,)]
    store.command(f"INSERT INTO {db}.action_events (event_id) VALUES ('y')")  # a normal request may still write
    assert store.query(f"SELECT event_id FROM {db}.action_events")[1] == [("y",)]


def test_sql_errors_surface_with_clickhouse_message(store: ClickHouseStore) -> None:
    with pytest.raises(DatabaseError) as missing:
        store.query(f"SELECT * FROM {store.database}.no_such_table")
    assert missing.value.code == 60 and "UNKNOWN_TABLE" in str(missing.value) and "no_such_table" in str(missing.value)
    with pytest.raises(DatabaseError) as syntax:
        store.command("SELEC 1")
    assert syntax.value.code == 62 and "Syntax error" in str(syntax.value)
    assert store.query("SELECT 1")[1] == [(1,)]  # the connection is usable afterwards


def test_inserts_in_every_client_compression(server: StoreServerProcess, store: ClickHouseStore) -> None:
    for n, compress in enumerate(["lz4", "zstd", "gzip", False]):  # lz4 is what ClickHouseStore uses
        rows = [span_row(f"{n}" * 32, f"{i:016x}", "x" * 200) for i in range(2000)]
        client = clickhouse_connect.get_client(dsn=server.dsn, compress=compress, autogenerate_session_id=False)
        try:
            client.insert(f"{store.database}.spans", rows, column_names=SPAN_COLS)
            result = client.query(f"SELECT count(), sum(length(name)) FROM {store.database}.spans")
            assert result.result_rows == [((n + 1) * 2000, (n + 1) * 400_000)], compress
        finally:
            client.close()


def _exchange(dsn: str, send: Callable[[socket.socket], None]) -> tuple[int, bytes]:
    """One request on a raw socket (``send`` writes it), and the reply's status and body."""
    host, port = dsn.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        send(sock)
        reply = b""
        while data := sock.recv(65536):
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post_chunked(dsn: str, chunks: list[bytes], announce_extra: int = 0) -> tuple[int, bytes]:
    """POST ``chunks`` with chunked transfer encoding; the last one's announced size may exceed
    what is sent (``announce_extra``), as when a client dies mid-body."""

    def send(sock: socket.socket) -> None:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i, chunk in enumerate(chunks):
            extra = announce_extra if i == len(chunks) - 1 else 0
            sock.sendall(b"%x\r\n" % (len(chunk) + extra) + chunk + (b"" if extra else b"\r\n"))
        if announce_extra:
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.sendall(b"0\r\n\r\n")

    return _exchange(dsn, send)


def _post_plain(dsn: str, target: str, body: bytes, announce: int | None = None) -> tuple[int, bytes]:
    """POST ``body`` to ``target`` with a ``Content-Length``, which may exceed what is sent
    (``announce``), as when a client dies mid-body."""

    def send(sock: socket.socket) -> None:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (target.encode(), len(body) if announce is None else announce) + body)  # fmt: skip
        if announce is not None:
            sock.shutdown(socket.SHUT_WR)

    return _exchange(dsn, send)


def test_a_chunked_insert_body_split_anywhere_is_stored_and_a_truncated_one_is_refused(
    server: StoreServerProcess, store: ClickHouseStore
) -> None:
    # the statement on the body's first line and the data after it, as clickhouse-connect sends
    # an insert; the chunk boundaries fall inside the statement and inside a row
    body = f"INSERT INTO {store.database}.action_events (event_id, type) FORMAT TSV\n".encode()
    body += b"".join(b"e%d\tregenerate\n" % i for i in range(300))
    status, reply = _post_chunked(server.dsn, [body[:10], body[10:100], body[100:2001], body[2001:]])
    assert status == 200, reply
    assert store.query(f"SELECT count(), uniqExact(event_id) FROM {store.database}.action_events")[1] == [(300, 300)]
    status, reply = _post_chunked(server.dsn, [body[:500]], announce_extra=1000)  # the client went away
    assert status == 400 and b"Cannot read the request body" in reply, reply
    assert store.query(f"SELECT count() FROM {store.database}.action_events")[1] == [(300,)]


def test_loopback_dsn_inserts_uncompressed_unless_the_dsn_asks(server: StoreServerProcess) -> None:
    host_port = server.dsn.removeprefix("http://")
    for dsn, expected in [(server.dsn, None), (f"http://localhost:{host_port.split(':')[1]}", None),
                          (f"{server.dsn}/?compress=lz4", "lz4"), (f"{server.dsn}/?compression=zstd", "zstd")]:
        client = connect(dsn)
        try:
            assert client.write_compression == expected, dsn
            client.command("SELECT 1")  # and the server accepts what it sends
        finally:
            client.close()
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("LocalHost")
    assert not is_loopback("10.0.0.1") and not is_loopback("clickhouse") and not is_loopback("localhost.example")


def test_concurrent_writers_lose_nothing(server: StoreServerProcess, store: ClickHouseStore) -> None:
    """Two writer threads (each its own client, as two workers would be) and a writer process."""
    per_writer, batches = 400, 10
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        s = ClickHouseStore(server.dsn, database=store.database)
        try:
            for b in range(batches):
                rows = [span_row(f"{writer:02d}{b:030d}", f"{i:016x}") for i in range(per_writer // batches)]
                s.insert("spans", rows, SPAN_COLS, dedup_token=f"w{writer}:b{b}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            s.close()

    code = (f"from tests.stream.test_store_server import write_batches; "
            f"write_batches({server.dsn!r}, {store.database!r}, 2, {batches}, {per_writer // batches})")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code])
    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert child.wait(timeout=120) == 0 and not errors
    _, rows = store.query(f"SELECT count(), uniqExact(trace_id, span_id) FROM {store.database}.spans")
    assert rows == [(3 * per_writer, 3 * per_writer)]


def write_batches(dsn: str, database: str, writer: int, batches: int, size: int) -> None:
    s = ClickHouseStore(dsn, database=database)
    try:
        for b in range(batches):
            rows = [span_row(f"{writer:02d}{b:030d}", f"{i:016x}") for i in range(size)]
            s.insert("spans", rows, SPAN_COLS, dedup_token=f"w{writer}:b{b}")
    finally:
        s.close()


def test_one_server_per_data_dir_and_data_survives_a_restart(tmp_path: Path) -> None:
    first = StoreServerProcess(tmp_path)
    try:
        s = ClickHouseStore(first.dsn, database="kept")
        s.migrate()
        s.insert("spans", [span_row("e" * 32, "1" * 16)], SPAN_COLS)
        s.close()
        with pytest.raises(RuntimeError, match="cannot start the store server: .* is held by another process"):
            StoreServerProcess(tmp_path)  # the engine of this directory is held
    finally:
        assert first.stop() == 0  # SIGTERM: a clean shutdown
    second = StoreServerProcess(tmp_path)
    try:
        s = ClickHouseStore(second.dsn, database="kept")
        assert s.migrate() == []
        assert s.query("SELECT trace_id FROM kept.spans FINAL")[1] == [("e" * 32,)]
        s.close()
    finally:
        assert second.stop() == 0


def test_insert_data_goes_to_a_file_that_is_removed_whatever_the_outcome(
    server: StoreServerProcess, store: ClickHouseStore
) -> None:
    """A plain insert body (the statement in the URL, as clickhouse-connect's ``raw_insert`` sends
    it, or on the body's first line, as its ``insert`` does) is copied to a file in the engine's
    private temporary directory and inserted from there; the file goes once the insert is done,
    failed, or its body never arrived whole. A plain body that is no insert is run as before."""
    db, spool = store.database, server.data_dir / PRIVATE_TMP
    target = "/?" + urlencode({"query": f"INSERT INTO {db}.action_events (event_id, type) FORMAT TSV"})
    rows = b"".join(b"u%d\tthumbs_down\n" % i for i in range(500))
    assert _post_plain(server.dsn, target, rows) == (200, b"")
    status, reply = _post_plain(server.dsn, target, rows.replace(b"u", b"v")[:700], announce=len(rows))
    assert status == 400 and b"Cannot read the request body" in reply, reply
    status, reply = _post_plain(server.dsn, target, b"w1\tregenerate\textra column\n")
    assert status >= 400 and reply.startswith(b"Code: "), reply  # the engine's own error
    status, reply = _post_plain(server.dsn, "/", f"INSERT INTO {db}.action_events (event_id, type) FORMAT TSV\n".encode()
                                + b"x1\tedit\nx2\tedit\n")  # fmt: skip
    assert status == 200, reply
    status, reply = _post_plain(server.dsn, "/", f"SELECT count(), countIf(event_id LIKE 'x%') FROM {db}.action_events".encode())
    assert (status, reply) == (200, b"502\t2\n")
    assert spool.is_dir() and not list(spool.iterdir())
