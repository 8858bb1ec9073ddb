"""ClickHouseStore on real embedded ClickHouse (chDB): migrations, dedup tokens, read-only queries."""

from __future__ import annotations


import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream.store import (
    TABLE_INSERT_SETTINGS,
    ClickHouseStore,
    SecondEngineError,
    UnsupportedClickHouseError,
    check_server_version,
    load_migrations,
    split_statements,
)


def test_migrations_apply_once_in_order(store: ClickHouseStore) -> None:
    names = [name for _, name, _ in load_migrations()]
    assert names[:2] == ["spans", "traces"]
    assert store.migrate() == []  # the fixture already applied them all
    _, rows = store.query(f"SELECT version, name FROM {store.database}.schema_migrations FINAL ORDER BY version")
    assert [r[1] for r in rows] == names
    _, tables = store.query(f"SHOW TABLES FROM {store.database}")
    assert {"spans", "traces", "schema_migrations"} <= {t[0] for t in tables}


@pytest.mark.parametrize("version", ["24.8.1.2684", "25.3.6.56", "26.9.2.1", "30.1", "unknown"])
def test_clickhouse_releases_the_migrations_run_on_pass(version: str) -> None:
    check_server_version(version)  # raises for an older one


@pytest.mark.parametrize("version", ["24.7.3.42", "23.8.16.16", "18.16.1"])
def test_a_clickhouse_older_than_24_8_is_refused_with_the_reason(version: str) -> None:
    with pytest.raises(UnsupportedClickHouseError, match=rf"ClickHouse {version} is too old: .* need 24\.8 or later"):
        check_server_version(version)


def test_a_too_old_server_is_refused_before_any_migration_runs(chdb_dsn: str) -> None:
    """Real chDB on a fresh database, its answer to ``SELECT version()`` replaced by an old
    release's: migrate refuses before creating any table of the project's."""

    class OldServer(ClickHouseStore):
        def query(self, sql: str, parameters: dict[str, Any] | None = None,
                  settings: dict[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:  # fmt: skip
            if sql == "SELECT version()":
                return ["version()"], [("24.3.5.46",)]
            return super().query(sql, parameters, settings)

    old = OldServer(chdb_dsn, database=f"t_{uuid.uuid4().hex[:12]}")
    try:
        with pytest.raises(UnsupportedClickHouseError, match="ClickHouse 24.3.5.46 is too old"):
            old.migrate()
        _, tables = old.query(f"SHOW TABLES FROM {old.database}")
        assert [t[0] for t in tables] == ["schema_migrations"]  # no migration ran
    finally:
        old.command(f"DROP DATABASE IF EXISTS {old.database} SYNC")
        old.close()


def test_insert_with_same_dedup_token_is_stored_once(store: ClickHouseStore) -> None:
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
    row = ["a" * 32, "b" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]
    store.insert("spans", [row], cols, dedup_token="spans:tok")
    store.insert("spans", [row], cols, dedup_token="spans:tok")  # an ambiguous insert, retried
    _, rows = store.query(f"SELECT count() FROM {store.database}.spans")  # raw, without FINAL
    assert rows == [(1,)]
    store.insert("spans", [row], cols, dedup_token="spans:other")  # a replay from another batch
    _, raw = store.query(f"SELECT count() FROM {store.database}.spans")
    _, final = store.query(f"SELECT count() FROM {store.database}.spans FINAL")
    assert raw == [(2,)] and final == [(1,)]


def test_spans_inserts_skip_the_in_block_collapse_that_final_does_anyway(store: ClickHouseStore) -> None:
    # optimize_on_insert=0 for spans only (TABLE_INSERT_SETTINGS): a key repeated within one insert
    # stays until a merge, and every spans read uses FINAL; other tables keep ClickHouse's default.
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
    row = ["c" * 32, "d" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]
    store.insert("spans", [row, row], cols, dedup_token="spans:twice")
    _, raw = store.query(f"SELECT count() FROM {store.database}.spans")
    _, final = store.query(f"SELECT count() FROM {store.database}.spans FINAL")
    assert raw == [(2,)] and final == [(1,)]
    tcols = ["trace_id", "completed_at"]
    store.insert("traces", [["c" * 32, 1_700_000_000_000], ["c" * 32, 1_700_000_000_000]], tcols, "traces:twice")
    _, traces = store.query(f"SELECT count() FROM {store.database}.traces")  # collapsed on insert
    assert traces == [(1,)]


def test_a_store_can_override_a_tables_insert_settings(store: ClickHouseStore) -> None:
    # what `bench/store_cost.py --compare` relies on: this store's spans inserts run with the
    # engine's in-block collapse again, the shared defaults (and the fixture's store) are untouched
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
    row = ["e" * 32, "f" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]
    other = ClickHouseStore(store.dsn, store.database, table_insert_settings={"spans": {"optimize_on_insert": 1}})
    try:
        other.insert("spans", [row, row], cols, dedup_token="spans:collapsed")
    finally:
        other.close()
    store.insert("spans", [row, row], cols, dedup_token="spans:kept")
    _, raw = store.query(f"SELECT count() FROM {store.database}.spans WHERE trace_id = {{t:String}}", {"t": "e" * 32})
    assert raw == [(3,)]  # 1 collapsed on insert + 2 kept by the default
    assert TABLE_INSERT_SETTINGS == {"spans": {"optimize_on_insert": 0}}


def test_a_spans_insert_of_tens_of_megabytes_is_written_as_one_compact_part(store: ClickHouseStore) -> None:
    # ClickHouse's default keeps parts under 10 MB Compact; a worker's 15k-span insert is ~40 MB,
    # and writing it Wide (a file pair per column and substream) cost the store ~1.6x the CPU
    # (bench/store_cost.py). Migration 0008 raises the bound for spans to 256 MB.
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at", "attributes"]
    big = {"gen_ai.output.messages": "x" * (12 << 20)}  # one 12 MB value: over the 10 MB default
    store.insert("spans", [["c" * 32, "d" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000,
                            1_700_000_000_000, big]], cols)  # fmt: skip
    _, parts = store.query("SELECT part_type, data_uncompressed_bytes FROM system.parts WHERE active"
                           " AND database = {db:String} AND table = 'spans'", {"db": store.database})  # fmt: skip
    assert len(parts) == 1 and parts[0][1] > 10 << 20
    assert parts[0][0] == "Compact"


class _CountingClient:
    """The real client, counting the column-type lookups (a DESCRIBE TABLE round trip each)."""

    def __init__(self, client: object) -> None:
        self._client, self.lookups = client, 0

    def create_insert_context(self, *args: object, **kwargs: object) -> object:
        self.lookups += 1
        return self._client.create_insert_context(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_insert_looks_up_column_types_once_per_table_and_again_after_a_failure(store: ClickHouseStore) -> None:
    counting = _CountingClient(store._client)
    store._client = counting
    store._column_types.clear()
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
    for i in range(3):
        store.insert("spans", [[f"{i:032x}", "b" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000,
                                1_700_000_000_000]], cols)  # fmt: skip
    assert counting.lookups == 1
    _, rows = store.query(f"SELECT trace_id FROM {store.database}.spans ORDER BY trace_id")
    assert [r[0] for r in rows] == [f"{i:032x}" for i in range(3)]
    with pytest.raises(Exception):  # a value its cached type cannot take
        store.insert("spans", [["c" * 32, "d" * 16, "not a time", 0, 0]], cols)
    store.insert("spans", [["e" * 32, "f" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000,
                            1_700_000_000_000]], cols)  # fmt: skip
    assert counting.lookups == 2  # the failed insert dropped the cached types
    _, n = store.query(f"SELECT count() FROM {store.database}.spans")
    assert n == [(4,)]


def test_insert_stats_count_inserts_rows_time_and_failures_per_table(store: ClickHouseStore) -> None:
    cols = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
    before = store.insert_stats().get("spans", {"inserts": 0, "rows": 0, "seconds": 0.0, "failures": 0})
    rows = [[f"{i:032x}", "b" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]
            for i in range(7)]  # fmt: skip
    store.insert("spans", rows[:4], cols)
    store.insert("spans", rows[4:], cols)
    store.insert("spans", [], cols)  # nothing to send: not an insert
    with pytest.raises(Exception):
        store.insert("spans", [["c" * 32, "d" * 16, "not a time", 0, 0]], cols)
    after = store.insert_stats()["spans"]
    assert (after["inserts"] - before["inserts"], after["rows"] - before["rows"]) == (2, 7)
    assert after["failures"] - before["failures"] == 1
    assert after["seconds"] > before["seconds"]


def test_read_only_is_enforced_by_clickhouse_too(store: ClickHouseStore) -> None:
    with pytest.raises(PermissionError):
        store.read_only_query(f"DROP TABLE {store.database}.spans")
    with pytest.raises(Exception, match="readonly|READONLY"):
        # passes the prefix filter, but ClickHouse itself refuses to leave readonly mode
        store.read_only_query("SELECT 1 SETTINGS readonly = 0")
    assert store.read_only_query("SELECT 40 + 2").rows == [(42,)]


def test_split_statements_drops_comments() -> None:
    sql = "-- header\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- next\nCREATE TABLE b (y UInt8) ENGINE = Memory;\n"
    assert split_statements(sql) == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "CREATE TABLE b (y UInt8) ENGINE = Memory",
    ]


def test_a_chdb_dsn_naming_a_missing_engine_config_is_refused(tmp_path: Path) -> None:
    # chDB itself would start without the file (and without its remote_servers), silently
    with pytest.raises(ValueError, match="config_file of the chdb DSN is not a file"):
        ClickHouseStore(f"chdb://{tmp_path}/data?config_file={tmp_path}/missing.xml")


def test_a_second_embedded_directory_in_one_process_is_refused_by_name(
    store: ClickHouseStore, chdb_dsn: str, tmp_path: Path
) -> None:
    """chDB runs one engine per process: the error names the directory this process holds (it
    used to be reported as held by another process), and the open store and the process's
    temporary directory are left as they were."""
    import tempfile

    before = tempfile.gettempdir()
    with pytest.raises(SecondEngineError) as refused:
        ClickHouseStore(f"chdb://{tmp_path / 'other'}")
    held = chdb_dsn.removeprefix("chdb://")
    assert f"'{held}'" in str(refused.value) and str(tmp_path / "other") in str(refused.value)
    assert tempfile.gettempdir() == before
    assert store.query(f"SELECT count() FROM {store.database}.schema_migrations")[1][0][0] > 0


_REOPEN_PROBE = """
import json, shutil, sys, tempfile
from stream.store import ClickHouseStore
first, second = sys.argv[1], sys.argv[2]
a = ClickHouseStore("chdb://" + first)
a.migrate()
a.close()
b = ClickHouseStore("chdb://" + second)  # chDB opens another directory once the first is closed
b.migrate()
b.close()
shutil.rmtree(second)  # done with it (a benchmark's temporary store)
a = ClickHouseStore("chdb://" + first)
a.insert("schema_migrations", [[998, "after"]], ["version", "name"])  # through a temporary file
rows = a.query(f"SELECT count() FROM {a.database}.schema_migrations WHERE name = 'after'")[1]
print(json.dumps({"tempdir": tempfile.gettempdir(), "rows": rows[0][0]}))
a.close()
"""


def test_reopening_an_engine_sends_temporary_files_back_to_its_own_directory(tmp_path: Path) -> None:
    # a process of its own: it opens engines on two directories, one after the other. The temporary
    # directory used to stay with the second, removed, and the next insert of the first failed.
    first, second = tmp_path / "first", tmp_path / "second"
    done = subprocess.run([sys.executable, "-c", _REOPEN_PROBE, str(first), str(second)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"tempdir": str(first / "tracejudge-tmp"), "rows": 1}


_TEMP_PROBE = """
import json, sys, tempfile
made = []
_named = tempfile.NamedTemporaryFile
def named(*a, **k):
    f = _named(*a, **k)
    made.append(f.name)
    return f
tempfile.NamedTemporaryFile = named  # the chDB backend's insert file
from stream.store import ClickHouseStore
s = ClickHouseStore("chdb://" + sys.argv[1])
s.migrate()
s.insert("schema_migrations", [[999, "probe"]], ["version", "name"])
rows = s.query(f"SELECT count() FROM {s.database}.schema_migrations WHERE name = 'probe'")[1]
print(json.dumps({"tempdir": tempfile.gettempdir(), "made": made, "probe_rows": rows[0][0]}))
s.close()
"""


def test_the_embedded_store_keeps_its_temporary_files_in_its_data_dir_and_clears_what_a_kill_left(
    tmp_path: Path,
) -> None:
    # a process of its own: this one already runs an engine (one per process)
    data = tmp_path / "engine"
    private = data / "tracejudge-tmp"
    private.mkdir(parents=True)
    (private / "tmpkilled.native").write_bytes(b"\0" * 4096)  # an insert body a SIGKILL left

    def probe() -> dict[str, object]:
        done = subprocess.run([sys.executable, "-c", _TEMP_PROBE, str(data)], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    got = probe()
    assert got["tempdir"] == str(private)
    assert got["made"] and all(Path(str(n)).parent == private for n in got["made"])  # type: ignore[union-attr]
    assert got["probe_rows"] == 1
    assert list(private.iterdir()) == []  # the stale file is gone, the insert's own deleted
    assert probe()["probe_rows"] >= 1  # the engine reopens the directory with ours in it


@pytest.mark.parametrize(("scheme", "tls"), [("https", True), ("http", False)])
def test_the_dsn_scheme_decides_tls_whatever_the_port(scheme: str, tls: bool) -> None:
    """clickhouse-connect takes TLS from the port (443 / 8443) or its ``interface``, not from the
    DSN's scheme: ``https://user:pw@host:8123`` went out as plain HTTP, password included. A
    listener on a free port reads the first bytes the client sends: a TLS ClientHello or not."""
    import socket
    import threading

    from stream.store import connect

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    first: list[bytes] = []

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            first.append(conn.recv(16))

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    port = server.getsockname()[1]
    with pytest.raises(Exception):  # noqa: B017 - nothing answers; what was sent is the point
        connect(f"{scheme}://user:secret@127.0.0.1:{port}/?connect_timeout=2&send_receive_timeout=2")
    t.join(10)
    server.close()
    assert first and first[0].startswith(b"\x16\x03") is tls  # a TLS handshake record, or "POST /?..."
    assert (b"POST" in first[0]) is not tls
