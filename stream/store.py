"""ClickHouse access for both modes through clickhouse-connect's client API.

* ``chdb:///abs/dir`` — the embedded engine (clickhouse-connect's chDB backend), the default;
* ``http(s)://user:pass@host:8123`` — a ClickHouse server.

One code path for both. The client is synchronous and not safe for concurrent use, so every call
runs on one dedicated thread; the ``a*`` coroutines hand work to it and keep the event loop (and
with it Kafka heartbeats) responsive while ClickHouse works.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import clickhouse_connect

from stream import user_sql
from stream.engine_tmp import use_private_tempdir
from stream.cluster import INSERT_SETTINGS, QUERY_SETTINGS, ClusterSpec, render

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPRESS_ARG = re.compile(r"(?:^|&)compress(?:ion)?=")

# Per-table insert settings. ``optimize_on_insert`` makes ClickHouse run the table engine's merge
# over each inserted block (for ReplacingMergeTree: drop rows whose key repeats within the block).
# Every read of ``spans`` uses FINAL and merges collapse replays anyway, so for the bulk table that
# pass only costs CPU: 11-18 % of the store's CPU per stored span (`python bench/store_cost.py
# --chunks 10000 --compare optimize_on_insert=1`). Retried inserts are still dropped whole by their
# deduplication token.
TABLE_INSERT_SETTINGS: dict[str, dict[str, Any]] = {"spans": {"optimize_on_insert": 0}}


@dataclass
class InsertStats:
    """Inserts into one table since the process started (the metrics read them at scrape time)."""

    inserts: int = 0  # that succeeded
    rows: int = 0  # in those
    seconds: float = 0.0  # their wall time on the client: serialization, transfer, the server's insert
    failures: int = 0  # attempts that raised (the callers retry them)


class StoreLockedError(RuntimeError):
    """The embedded data directory is held by another process (one chDB engine per directory)."""


class UnsupportedClickHouseError(RuntimeError):
    """The ClickHouse server is older than the oldest release the migrations run on."""


# The oldest ClickHouse whose features every migration uses: 0009 sets the MergeTree setting
# ``deduplicate_merge_projection_mode``, new in 24.8 (ClickHouse PR #66672, 24.8 changelog).
MIN_CLICKHOUSE = (24, 8)
_RELEASE = re.compile(r"(\d+)\.(\d+)")


def check_server_version(version: str) -> None:
    """Raise :class:`UnsupportedClickHouseError` when ``version`` (what ``SELECT version()`` says)
    is older than :data:`MIN_CLICKHOUSE`; a version this cannot read is let through."""
    m = _RELEASE.match(version.strip())
    if m and (int(m.group(1)), int(m.group(2))) < MIN_CLICKHOUSE:
        need = ".".join(map(str, MIN_CLICKHOUSE))
        raise UnsupportedClickHouseError(
            f"ClickHouse {version} is too old: tracejudge's tables need {need} or later "
            "(migration 0009 sets deduplicate_merge_projection_mode); upgrade the server"
        )


class SecondEngineError(RuntimeError):
    """This process already has chDB's engine open on another data directory (one per process)."""


_HELD_PATH = re.compile(r"already initialized with path '([^']*)'")


def connect(dsn: str) -> Any:
    """A clickhouse-connect client for a chdb:// or http(s):// DSN."""
    if dsn.startswith("chdb://"):
        dsn, options = _chdb_options(dsn)
        try:
            client = clickhouse_connect.get_client(dsn=dsn, **options)
        except Exception as exc:  # chDB raises a plain RuntimeError/ChdbError for a held data dir
            if held := _HELD_PATH.search(str(exc)):
                raise SecondEngineError(
                    f"cannot open embedded ClickHouse at {dsn}: this process has chDB's engine open at "
                    f"{held.group(1)!r}, and chDB runs one engine per process; use that directory (another "
                    "database in it), or close its clients first"
                ) from exc
            if "BAD_ARGUMENTS" in str(exc) or "EmbeddedServer" in str(exc):
                raise StoreLockedError(
                    f"embedded ClickHouse at {dsn} is in use by another process "
                    "(a running worker holds it; query through its web API instead)"
                ) from exc
            raise
        path = str(getattr(client, "path", "") or "")
        if path and path not in ("memory", ":memory:"):
            use_private_tempdir(path)
        return client
    parsed = urlparse(dsn)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"unsupported ClickHouse DSN: {dsn!r}")
    # the scheme says TLS: clickhouse-connect reads it from the port (443 / 8443) or `interface` only
    options: dict[str, Any] = {"interface": parsed.scheme}
    if is_loopback(parsed.hostname) and not _COMPRESS_ARG.search(parsed.query):
        # on this host compressing inserts only burns CPU on both ends (lz4 costs the worker about
        # 3 µs and the store server about 3 µs per span); `?compress=lz4` in the DSN still wins
        options["compress"] = False
    # one client, used from one thread: no session id (sessions serialize and time out on the server)
    return clickhouse_connect.get_client(
        dsn=dsn, connect_timeout=10, send_receive_timeout=60, autogenerate_session_id=False, **options
    )


def _chdb_options(dsn: str) -> tuple[str, dict[str, Any]]:
    """``chdb:///dir?config_file=/abs/engine.xml``: the engine reads that ClickHouse configuration
    file (e.g. ``remote_servers`` and ``macros``); other DSN arguments pass to the client."""
    parsed = urlparse(dsn)
    args = parse_qsl(parsed.query, keep_blank_values=True)
    config = [v for k, v in args if k == "config_file"]
    if not config:
        return dsn, {}
    if not os.path.isfile(config[-1]):  # chDB would start without it, silently
        raise ValueError(f"config_file of the chdb DSN is not a file: {config[-1]!r}")
    rest = urlencode([(k, v) for k, v in args if k != "config_file"])
    return urlunparse(parsed._replace(query=rest)), {"chdb_options": {"config-file": config[-1]}}


def is_loopback(hostname: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class ClickHouseStore:
    """Serialized access to one ClickHouse client; sync methods plus async wrappers."""

    def __init__(
        self,
        dsn: str,
        database: str = "tracejudge",
        faults_file: str | os.PathLike[str] | None = None,
        cluster: ClusterSpec | None = None,
        table_insert_settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``table_insert_settings``: per table, settings added to (or overriding)
        :data:`TABLE_INSERT_SETTINGS` for this store's inserts (``bench/store_cost.py --compare``)."""
        if not _IDENT.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self.dsn = dsn
        self.database = database
        self.cluster = cluster  # a self-managed cluster: Distributed tables (stream/cluster.py)
        self._query_settings = dict(QUERY_SETTINGS) if cluster else {}
        self._insert_settings = {"max_partitions_per_insert_block": 0, **(INSERT_SETTINGS if cluster else {})}
        self._table_insert_settings = {t: dict(v) for t, v in TABLE_INSERT_SETTINGS.items()}
        for table, extra in (table_insert_settings or {}).items():
            self._table_insert_settings.setdefault(table, {}).update(extra)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = self._executor.submit(connect, dsn).result()
        self._column_types: dict[tuple[str, tuple[str, ...]], Any] = {}  # (table, columns) -> ClickHouse types
        self._insert_stats: dict[str, InsertStats] = {}  # written on the ClickHouse thread only
        if faults_file is not None:  # fault tests only: calls obey a control file (stream/faults.py)
            from stream.faults import FaultyClient

            self._client = FaultyClient(self._client, faults_file)

    @classmethod
    def from_settings(cls, settings: Any, faults_file: str | os.PathLike[str] | None = None) -> ClickHouseStore:
        """The store a ``stream.config.Settings`` names: DSN, database and cluster."""
        return cls(settings.resolved_clickhouse_dsn, settings.clickhouse_database, faults_file, settings.cluster_spec)

    def insert_stats(self) -> dict[str, dict[str, float]]:
        """Per table: inserts, rows, seconds, failures (a copy; see :class:`InsertStats`)."""
        return {table: asdict(s) for table, s in sorted(dict(self._insert_stats).items())}

    def fault_counts(self) -> dict[str, int] | None:
        """Faults injected so far (``faults_file`` set), else None."""
        return getattr(self._client, "counts", None)

    # ---- client calls: these run on the ClickHouse thread only ------------------------------
    def _settings(self, settings: dict[str, Any] | None) -> dict[str, Any] | None:
        if not self._query_settings:
            return settings
        return {**self._query_settings, **(settings or {})}

    def _command(self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any] | None) -> Any:
        return self._client.command(sql, parameters=parameters, settings=self._settings(settings))

    def _query(
        self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any] | None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        result = self._client.query(sql, parameters=parameters, settings=self._settings(settings))
        return list(result.column_names), list(result.result_rows)

    def _insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str | None,
        stats_as: str | None = None,
    ) -> None:  # fmt: skip
        if not rows:
            return
        # Spans are partitioned by their (client-supplied) start day: one batch may legitimately
        # span many days (replays, backfill, skewed clocks), and ClickHouse's default cap of 100
        # partitions per insert block would fail that insert on every retry (a stalled worker).
        settings: dict[str, Any] = {**self._insert_settings, **self._table_insert_settings.get(table, {})}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        key = (table, tuple(columns))
        if (types := self._column_types.get(key)) is None:  # one DESCRIBE per table, not per insert
            types = self._client.create_insert_context(f"{self.database}.{table}", list(columns)).column_types
            self._column_types[key] = types
        name = stats_as or table
        stats = self._insert_stats.get(name) or self._insert_stats.setdefault(name, InsertStats())
        began = time.perf_counter()
        try:
            self._client.insert(f"{self.database}.{table}", rows, column_names=list(columns), column_types=types,
                                settings=settings)  # fmt: skip
        except Exception:
            stats.failures += 1
            self._column_types.pop(key, None)  # a changed table: look its types up again next time
            raise
        stats.seconds += time.perf_counter() - began
        stats.inserts += 1
        stats.rows += len(rows)

    # ---- sync API: blocks the caller; never call from the event loop -----------------------
    def _on_thread(self) -> bool:
        return threading.current_thread().name.startswith("clickhouse")

    def command(self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Any:
        if self._on_thread():
            return self._command(sql, parameters, settings)
        return self._executor.submit(self._command, sql, parameters, settings).result()

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self._on_thread():
            return self._query(sql, parameters, settings)
        return self._executor.submit(self._query, sql, parameters, settings).result()

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str | None = None
    ) -> None:
        if self._on_thread():
            return self._insert(table, rows, columns, dedup_token)
        self._executor.submit(self._insert, table, rows, columns, dedup_token).result()

    def read_only_query(self, sql: str) -> user_sql.UserResult:
        """Run a user-supplied query: one read-only statement, within limits (stream/user_sql.py)."""
        user_sql.check(sql)
        if self._on_thread():
            return self._user_query(sql)
        return self._executor.submit(self._user_query, sql).result()

    def _user_query(self, sql: str) -> user_sql.UserResult:
        result = self._client.query(sql, settings=self._settings(user_sql.SETTINGS))
        elapsed_s = int(result.summary.get("elapsed_ns", 0) or 0) / 1e9
        return user_sql.result(list(result.column_names), list(result.result_rows), elapsed_s)

    def migrate(self) -> list[str]:
        """Apply the numbered ``schemas/sql/NNNN_*.sql`` migrations not yet applied; return their names."""
        db = self.database
        # created once: on a cluster each of these is distributed DDL, which waits for every server
        if not self.query(f"EXISTS TABLE {db}.schema_migrations")[1][0][0]:
            for statement in render(f"CREATE DATABASE IF NOT EXISTS {db}", self.cluster) + render(
                f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
                "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                "ENGINE = ReplacingMergeTree ORDER BY version",
                self.cluster,
            ):
                self.command(statement)
        _, rows = self.query(f"SELECT version FROM {db}.schema_migrations FINAL")
        applied = {r[0] for r in rows}
        pending = [m for m in load_migrations() if m[0] not in applied]
        if pending:  # before any of them runs: a clear error, not the first statement the server refuses
            check_server_version(str(self.query("SELECT version()")[1][0][0]))
        done = []
        for version, name, sql in pending:
            for statement in split_statements(sql.replace("{db}", db)):
                for rendered in render(statement, self.cluster):
                    self.command(rendered)
            self.insert("schema_migrations", [[version, name]], ["version", "name"])
            log.info("applied migration %04d %s", version, name)
            done.append(name)
        return done

    def close(self) -> None:
        def _close() -> None:
            try:
                self._client.close()
            except Exception:  # pragma: no cover - closing a dead client
                pass

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # ---- async API: hands the call to the ClickHouse thread ----------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the ClickHouse thread (it may call the sync API: ``query``/``insert``
        detect that they already are on it)."""
        return await self._run(fn, *args)

    async def ainsert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str | None = None,
        stats_as: str | None = None,
    ) -> None:  # fmt: skip
        """``stats_as``: count the insert under that name in :meth:`insert_stats` (default: ``table``)."""
        await self._run(self._insert, table, rows, columns, dedup_token, stats_as)

    def forget_table(self, table: str) -> None:
        """Drop what the store remembers of ``table`` (its column types), e.g. after dropping it."""
        self._executor.submit(lambda: [self._column_types.pop(k) for k in list(self._column_types) if k[0] == table])

    async def acommand(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return await self._run(self._command, sql, parameters, None)

    async def aquery(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        return await self._run(self._query, sql, parameters, settings)

    async def aread_only_query(self, sql: str) -> user_sql.UserResult:
        user_sql.check(sql)
        return await self._run(self._user_query, sql)


def load_migrations() -> list[tuple[int, str, str]]:
    out = []
    for entry in resources.files("schemas").joinpath("sql").iterdir():
        m = re.match(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


def split_statements(sql: str) -> list[str]:
    """Split a migration file on ``;`` at line ends, dropping comment-only chunks."""
    statements = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            statements.append(body)
    return statements
