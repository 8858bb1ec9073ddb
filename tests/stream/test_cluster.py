"""The migrations on a self-managed cluster (stream/cluster.py).

Two halves:

* the rendered DDL for a replicated cluster with ``ON CLUSTER``: every statement of every
  migration is parsed by ClickHouse's own parser (``EXPLAIN AST`` in chDB), and its shape is
  checked (engines, Keeper paths, dedup windows, sharding keys). Replicated tables and
  distributed DDL need ClickHouse Keeper, which chDB does not have, so these statements are not
  executed here;
* the store on a real one-shard cluster: a ``tracejudge store-server`` whose engine reads a
  ``remote_servers`` configuration, and the product's own ``ClickHouseStore`` with a cluster spec
  (not replicated, DDL per server). Every table is then a ``Distributed`` table over a
  ``*_local`` one, and the store-level tests of other modules run again against it: migrations,
  dedup tokens, read-only queries, the finance views and the judge sink.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stream.cluster import ClusterSpec, UnsupportedStatement, render, sharding_key
from stream.config import ConfigError, load_settings
from stream.demo.store_server_process import StoreServerProcess
from stream.store import ClickHouseStore, load_migrations, split_statements

# store-level tests of other modules, collected here again with this module's `store` fixture
from tests.stream.store_level_tests import *  # noqa: F403
from tests.stream.conftest import Deployment
from tests.stream import test_worker_e2e as worker_e2e

CLUSTER = "tj_cluster"
FULL = ClusterSpec(CLUSTER)  # replicated, ON CLUSTER: what a production cluster runs


def migration_statements(db: str = "tracejudge") -> list[str]:
    return [s for _, _, sql in load_migrations() for s in split_statements(sql.replace("{db}", db))]


def rendered(spec: ClusterSpec = FULL) -> list[str]:
    return [r for s in migration_statements() for r in render(s, spec)]


def created_tables(statements: list[str]) -> dict[str, str]:
    out = {}
    for s in statements:
        if m := re.match(r"CREATE TABLE IF NOT EXISTS tracejudge\.(\w+)", s):
            out[m[1]] = s
    return out


# ---- the rendered DDL ----------------------------------------------------------------------------
def test_without_a_cluster_every_statement_is_unchanged() -> None:
    statements = migration_statements()
    assert [r for s in statements for r in render(s, None)] == statements


def test_clickhouse_parses_every_rendered_statement(store: ClickHouseStore) -> None:
    # a command, not a query: the client would append FORMAT Native, which EXPLAIN AST parses as
    # part of the statement it explains
    for statement in rendered():
        ast = str(store.command(f"EXPLAIN AST {statement}"))
        assert ast.startswith(("CreateQuery", "AlterQuery")), (statement, ast[:200])
    with pytest.raises(Exception, match="SYNTAX_ERROR|Syntax error"):  # the check can fail
        store.command(f"EXPLAIN AST CREATE TABLE x ON CLUSTER '{CLUSTER}' (a UInt8 ENGINE = MergeTree ORDER BY a")


def test_every_table_becomes_a_replicated_local_table_and_a_distributed_one() -> None:
    originals = created_tables(migration_statements())
    tables = created_tables(rendered())
    assert set(tables) == set(originals) | {f"{t}_local" for t in originals}
    for name in originals:
        local, dist = tables[f"{name}_local"], tables[name]
        assert f"ON CLUSTER '{CLUSTER}'" in local and f"ON CLUSTER '{CLUSTER}'" in dist
        engine = re.search(r"ENGINE = (Replicated\w*MergeTree)\('/clickhouse/tables/\{shard\}/tracejudge/"
                           + name + r"_local', '\{replica\}'(?:, (\w+))?\)", local)  # fmt: skip
        original = re.search(r"ENGINE = (\w*MergeTree)(?:\((\w+)\))?", originals[name])
        assert engine and original, local
        assert engine[1] == "Replicated" + original[1] and engine[2] == original[2]  # version column kept
        assert "non_replicated_deduplication_window" not in local
        if "non_replicated_deduplication_window = 10000" in originals[name]:
            assert "replicated_deduplication_window = 10000" in local
        assert dist.startswith(f"CREATE TABLE IF NOT EXISTS tracejudge.{name} ON CLUSTER '{CLUSTER}' "
                               f"AS tracejudge.{name}_local\nENGINE = Distributed('{CLUSTER}', 'tracejudge', "
                               f"'{name}_local', cityHash64(")  # fmt: skip


def test_rows_that_replace_each_other_land_on_one_shard() -> None:
    # ReplacingMergeTree collapses rows with equal ORDER BY keys only within a shard, so the
    # sharding key must be a function of the ORDER BY columns; trace_id keeps a trace together
    for name, statement in created_tables(rendered()).items():
        if "Distributed(" not in statement:
            continue
        key = re.search(r"cityHash64\(([^)]*)\)\)$", statement)
        local = created_tables(rendered())[f"{name}_local"]
        order = re.search(r"ORDER BY \(?([\w, ]+)\)?", local)
        assert key and order, statement
        key_cols = {c.strip() for c in key[1].split(",")}
        assert key_cols <= {c.strip() for c in order[1].split(",")}, name
        if "trace_id" in order[1]:
            assert key_cols == {"trace_id"}, name
    assert sharding_key(["call_id"]) == "cityHash64(call_id)"
    assert sharding_key(["trace_id", "span_id"]) == "cityHash64(trace_id)"


def test_alters_and_views_run_on_every_server() -> None:
    add = "ALTER TABLE tracejudge.traces ADD COLUMN IF NOT EXISTS sampled UInt8 DEFAULT 0"
    assert render(add, FULL) == [
        f"ALTER TABLE tracejudge.traces_local ON CLUSTER '{CLUSTER}' ADD COLUMN IF NOT EXISTS sampled UInt8 DEFAULT 0",
        f"ALTER TABLE tracejudge.traces ON CLUSTER '{CLUSTER}' ADD COLUMN IF NOT EXISTS sampled UInt8 DEFAULT 0",
    ]
    setting = "ALTER TABLE tracejudge.spans MODIFY SETTING min_bytes_for_wide_part = 1"
    assert render(setting, FULL) == [
        f"ALTER TABLE tracejudge.spans_local ON CLUSTER '{CLUSTER}' MODIFY SETTING min_bytes_for_wide_part = 1"
    ]
    projection = "ALTER TABLE tracejudge.traces ADD PROJECTION IF NOT EXISTS p (SELECT * ORDER BY conversation_id)"
    assert render(projection, FULL) == [  # the Distributed table has no parts, so no projection
        f"ALTER TABLE tracejudge.traces_local ON CLUSTER '{CLUSTER}' ADD PROJECTION IF NOT EXISTS p "
        "(SELECT * ORDER BY conversation_id)"
    ]
    assert render("ALTER TABLE tracejudge.traces MATERIALIZE PROJECTION p", FULL) == [
        f"ALTER TABLE tracejudge.traces_local ON CLUSTER '{CLUSTER}' MATERIALIZE PROJECTION p"
    ]
    view = render("CREATE OR REPLACE VIEW tracejudge.v AS\nSELECT 1", FULL)
    assert view == [f"CREATE OR REPLACE VIEW tracejudge.v ON CLUSTER '{CLUSTER}' AS\nSELECT 1"]
    assert render("CREATE DATABASE IF NOT EXISTS tracejudge", ClusterSpec(CLUSTER, on_cluster=False)) == [
        "CREATE DATABASE IF NOT EXISTS tracejudge"
    ]


def test_shards_without_replicas_keep_the_plain_engine() -> None:
    tables = created_tables(rendered(ClusterSpec(CLUSTER, replicated=False, on_cluster=False)))
    assert "ENGINE = ReplacingMergeTree\n" in tables["spans_local"]
    assert "non_replicated_deduplication_window = 10000" in tables["spans_local"]
    assert "ON CLUSTER" not in tables["spans_local"]


def test_statements_it_cannot_distribute_are_refused() -> None:
    for statement in ("DROP TABLE tracejudge.spans", "CREATE TABLE IF NOT EXISTS tracejudge.x (a UInt8) ENGINE = Memory",
                      "ALTER TABLE tracejudge.spans DELETE WHERE 1"):  # fmt: skip
        with pytest.raises(UnsupportedStatement):
            render(statement, FULL)


def test_cluster_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().cluster_spec is None
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_CLUSTER", "prod_cluster")
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_ON_CLUSTER", "false")
    assert load_settings().cluster_spec == ClusterSpec("prod_cluster", replicated=True, on_cluster=False)
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_CLUSTER", "bad'; DROP")
    with pytest.raises(ConfigError, match="cluster"):
        load_settings()
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_CLUSTER", "prod_cluster")
    monkeypatch.setenv("TRACEJUDGE_CLICKHOUSE_REPLICA_PATH", "/x/{shard}'")
    with pytest.raises(ConfigError, match="replica path"):
        load_settings()


# ---- a store on a real one-shard cluster -----------------------------------------------------------
ENGINE_CONFIG = f"""<clickhouse>
    <!-- the address a shard replica must have to count as this engine itself: chDB does not listen,
         and the Distributed tables read and write the local shard directly -->
    <tcp_port>9000</tcp_port>
    <remote_servers>
        <{CLUSTER}><shard><replica><host>localhost</host><port>9000</port></replica></shard></{CLUSTER}>
    </remote_servers>
</clickhouse>
"""
LOCAL_SHARD = ClusterSpec(CLUSTER, replicated=False, on_cluster=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServerProcess]:
    root = tmp_path_factory.mktemp("cluster")
    config = root / "engine.xml"
    config.write_text(ENGINE_CONFIG)
    s = StoreServerProcess(root / "data", config_file=config)
    yield s
    assert s.stop() == 0


@pytest.fixture
def store(server: StoreServerProcess) -> Iterator[ClickHouseStore]:
    """A migrated database of its own on the one-shard cluster (overrides the embedded ``store``)."""
    s = ClickHouseStore(server.dsn, database=f"t_{uuid.uuid4().hex[:12]}", cluster=LOCAL_SHARD)
    s.migrate()
    yield s
    s.command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
    s.close()


def test_the_code_sees_distributed_tables_over_local_ones(store: ClickHouseStore) -> None:
    _, rows = store.query("SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": store.database})
    engines = dict(rows)
    for _, name, sql in load_migrations():
        for table in re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", sql):
            assert engines[table] == "Distributed", table
            assert engines[f"{table}_local"].endswith("MergeTree"), table
    assert engines["schema_migrations"] == "Distributed"
    _, clusters = store.query("SELECT count() FROM system.clusters WHERE cluster = {c:String}", {"c": CLUSTER})
    assert clusters == [(1,)]



def test_workers_on_the_cluster_store_every_span_and_trace_once_across_a_kill_and_replay(
    deployment: Callable[..., Deployment], server: StoreServerProcess
) -> None:
    # the worker end-to-end scenario of tests/stream/test_worker_e2e.py (open traces recovered from
    # the spans table after a hard kill, replays collapsed by FINAL), with every table Distributed
    def on_cluster(**settings: Any) -> Deployment:
        return deployment(clickhouse_dsn=server.dsn, clickhouse_cluster=CLUSTER, clickhouse_replicated="false",
                          clickhouse_on_cluster="false", **settings)  # fmt: skip

    worker_e2e.test_kill_restart_and_replay_store_every_span_and_trace_once(on_cluster)
    check = ClickHouseStore(server.dsn, "tracejudge", cluster=LOCAL_SHARD)
    try:  # the workers did write through Distributed tables, and the rows are in the local ones
        _, rows = check.query("SELECT name, engine, total_rows FROM system.tables WHERE database = 'tracejudge'"
                              " AND name IN ('spans', 'spans_local')")  # fmt: skip
        tables = {name: (engine, total) for name, engine, total in rows}
        assert tables["spans"][0] == "Distributed" and tables["spans_local"][0] == "ReplacingMergeTree"
        assert tables["spans_local"][1] > 0
    finally:
        check.close()
