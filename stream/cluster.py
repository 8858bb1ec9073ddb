"""The migrations for a self-managed ClickHouse cluster: sharded, replicated tables behind
``Distributed`` ones.

On one server (or chDB) every table of ``schemas/sql`` is created as written. With
``TRACEJUDGE_CLICKHOUSE_CLUSTER=<name>`` (a cluster of the servers' ``remote_servers``) each
``CREATE TABLE {db}.t`` becomes two tables:

* ``{db}.t_local``: the data, one per shard, ``Replicated*MergeTree`` (the same engine family and
  version column) in ``clickhouse_replica_path`` with ``{replica}``, and
  ``replicated_deduplication_window`` in place of ``non_replicated_deduplication_window``;
* ``{db}.t``: ``Distributed(cluster, db, t_local, cityHash64(key))`` with the name the code uses,
  so every query and insert of the code is unchanged. The key is ``trace_id`` when it is part of
  the table's ORDER BY (all rows of a trace on one shard: a trace's spans, verdicts, gate results
  and signals are read together, and ``FINAL`` collapses a trace's replays on its shard), else the
  whole ORDER BY key, so rows that replace each other always land on the same shard.

``ALTER TABLE ... ADD COLUMN`` alters both tables, ``MODIFY SETTING`` and ``ADD`` / ``MATERIALIZE
PROJECTION`` the local one, and every statement runs ``ON CLUSTER`` (unless
``clickhouse_on_cluster`` is off: then run ``tracejudge migrate`` against every server). Views are created on every server; they read the
Distributed tables.

What the store does differently on a cluster (:data:`INSERT_SETTINGS`, :data:`QUERY_SETTINGS`):
inserts wait until every shard has its rows (``distributed_foreground_insert``), so a Kafka offset
is committed only after ClickHouse has the data, and a query that joins or filters one
Distributed table by another runs the inner one once on the initiator (``GLOBAL``), which is
correct for any key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
LOCAL_SUFFIX = "_local"

#: added to every insert on a cluster: return only when every shard has written its rows
INSERT_SETTINGS = {"distributed_foreground_insert": 1}
#: added to every query on a cluster: IN / JOIN over another Distributed table as GLOBAL IN / JOIN
QUERY_SETTINGS = {"distributed_product_mode": "global"}

_NAME = r"(?P<db>[A-Za-z_][A-Za-z0-9_]*)\.(?P<table>[A-Za-z_][A-Za-z0-9_]*)"
_CREATE_DATABASE = re.compile(r"^CREATE DATABASE IF NOT EXISTS (?P<db>[A-Za-z_][A-Za-z0-9_]*)$")
_CREATE_TABLE = re.compile(rf"^CREATE TABLE IF NOT EXISTS {_NAME}(?P<body>\s.*)$", re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>[A-Za-z]*MergeTree)(?:\((?P<args>[^)]*)\))?")
_ORDER_BY = re.compile(r"\bORDER BY\s+(?:\((?P<cols>[^)]*)\)|(?P<col>[A-Za-z_][A-Za-z0-9_]*))")
_ALTER_VERBS = "ADD COLUMN|MODIFY SETTING|ADD PROJECTION|MATERIALIZE PROJECTION|DROP PROJECTION|ADD INDEX|MATERIALIZE INDEX"
_ALTER = re.compile(rf"^ALTER TABLE {_NAME}\s+(?P<action>(?P<verb>{_ALTER_VERBS})\b.*)$", re.S)
_CREATE_VIEW = re.compile(rf"^CREATE OR REPLACE VIEW {_NAME}\s+AS\b(?P<query>.*)$", re.S)
_NON_REPLICATED_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\b")


class UnsupportedStatement(ValueError):
    """A migration statement the cluster rendering does not know how to distribute."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where and how the tables are distributed (see the module docstring)."""

    name: str  # a cluster of the servers' remote_servers
    replicated: bool = True  # Replicated*MergeTree (needs ClickHouse Keeper); off: shards without replicas
    on_cluster: bool = True  # DDL runs ON CLUSTER (distributed DDL, needs Keeper); off: run it per server
    replica_path: str = DEFAULT_REPLICA_PATH

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"invalid cluster name {self.name!r}")
        if "'" in self.replica_path or "\\" in self.replica_path:
            raise ValueError(f"invalid replica path {self.replica_path!r}")

    @property
    def on(self) -> str:
        return f" ON CLUSTER '{self.name}'" if self.on_cluster else ""


def render(statement: str, spec: ClusterSpec | None) -> list[str]:
    """The statements that apply one migration statement on ``spec``'s cluster (unchanged without one)."""
    if spec is None:
        return [statement]
    statement = statement.strip()
    if m := _CREATE_DATABASE.match(statement):
        return [f"CREATE DATABASE IF NOT EXISTS {m['db']}{spec.on}"]
    if m := _CREATE_TABLE.match(statement):
        return _create_table(m["db"], m["table"], m["body"], spec)
    if m := _ALTER.match(statement):
        local = f"ALTER TABLE {m['db']}.{m['table']}{LOCAL_SUFFIX}{spec.on} {m['action']}"
        if m["verb"] != "ADD COLUMN":  # a MergeTree setting, projection or index: only the local table has it
            return [local]
        return [local, f"ALTER TABLE {m['db']}.{m['table']}{spec.on} {m['action']}"]
    if m := _CREATE_VIEW.match(statement):
        return [f"CREATE OR REPLACE VIEW {m['db']}.{m['table']}{spec.on} AS{m['query']}"]
    raise UnsupportedStatement(f"no cluster form for this migration statement: {statement[:120]!r}")


def sharding_key(order_by: list[str]) -> str:
    """``cityHash64(trace_id)`` when the ORDER BY key has ``trace_id``, else of the whole key."""
    return "cityHash64(trace_id)" if "trace_id" in order_by else f"cityHash64({', '.join(order_by)})"


def _create_table(db: str, table: str, body: str, spec: ClusterSpec) -> list[str]:
    engine, order = _ENGINE.search(body), _ORDER_BY.search(body)
    if engine is None or order is None:
        raise UnsupportedStatement(f"CREATE TABLE {db}.{table}: no *MergeTree engine or ORDER BY to distribute")
    local = f"{table}{LOCAL_SUFFIX}"
    if spec.replicated:
        path = spec.replica_path.replace("{database}", db).replace("{table}", local)
        args = ", ".join([f"'{path}'", "'{replica}'"] + ([engine["args"].strip()] if engine["args"] else []))
        body = body[: engine.start()] + f"ENGINE = Replicated{engine['engine']}({args})" + body[engine.end() :]
        body = _NON_REPLICATED_WINDOW.sub("replicated_deduplication_window", body)
    cols = [c.strip() for c in (order["cols"] or order["col"]).split(",") if c.strip()]
    return [
        f"CREATE TABLE IF NOT EXISTS {db}.{local}{spec.on}{body}",
        f"CREATE TABLE IF NOT EXISTS {db}.{table}{spec.on} AS {db}.{local}\n"
        f"ENGINE = Distributed('{spec.name}', '{db}', '{local}', {sharding_key(cols)})",
    ]
