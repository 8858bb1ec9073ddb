"""Grafana: the compose service, its provisioning files and the dashboard, checked against the
ClickHouse service and the real schema.

Grafana itself needs a Docker engine. Here every panel's SQL is run on embedded ClickHouse against
the migrated schema with seeded rows, after expanding the ClickHouse plugin's macros exactly as
the plugin does (pkg/macros/macros.go of grafana/clickhouse-datasource):

    $__timeFilter(c)  ->  c >= toDateTime(<from unix s>) AND c <= toDateTime(<to unix s>)
    $__dateFilter(c)  ->  c >= toDate('<from date>') AND c <= toDate('<to date>')
    $__fromTime / $__toTime  ->  toDateTime(<unix s>)

A panel using any other macro or variable fails the test until it is added here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.store import ClickHouseStore
from tests.deploy.stack import REPO, env_of, find_service_by_image, interpolate, names_of

GRAFANA_DIR = REPO / "deploy" / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "clickhouse.yaml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "tracejudge.json"
PLUGIN = "grafana-clickhouse-datasource"
FROM, TO = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def grafana(services: dict) -> dict:
    name, svc = find_service_by_image(services, "grafana/grafana")
    assert name == "grafana"
    return svc


@pytest.fixture(scope="module")
def datasource() -> dict:
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert doc.get("apiVersion") == 1
    (ds,) = doc["datasources"]
    return ds


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def query_panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.extend(p.get("panels", []) if p["type"] == "row" else [p])
    return [p for p in out if p.get("targets")]


def mounts(service: dict) -> dict[str, Path]:
    """container path -> host path (relative to the repository) of the bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        src, dst, *_ = str(v).split(":")
        if src.startswith("./"):
            out[dst] = REPO / src
    return out


# ---- compose service and provisioning ----------------------------------------------------------
def test_grafana_service_installs_a_pinned_plugin_and_waits_for_clickhouse(services: dict, grafana: dict) -> None:
    env = env_of(grafana)
    plugins = [p.strip() for p in env["GF_INSTALL_PLUGINS"].split(",")]
    assert any(re.fullmatch(rf"{PLUGIN} \d+\.\d+\.\d+", p) for p in plugins), f"{PLUGIN} is not pinned: {plugins}"
    ch_name, _ = find_service_by_image(services, "clickhouse/clickhouse-server")
    assert grafana["depends_on"][ch_name]["condition"] == "service_healthy"
    assert any(str(p).endswith(":3000") for p in grafana["ports"])
    for dst, src in mounts(grafana).items():
        assert src.exists(), f"{src} (mounted at {dst}) is missing"
    assert mounts(grafana)["/etc/grafana/provisioning/datasources"] == DATASOURCES.parent
    assert mounts(grafana)["/etc/grafana/provisioning/dashboards"] == PROVIDERS.parent
    interpolate(env["GF_SECURITY_ADMIN_PASSWORD"])  # has a default


def test_datasource_points_at_the_clickhouse_service(services: dict, grafana: dict, datasource: dict) -> None:
    ch_name, ch = find_service_by_image(services, "clickhouse/clickhouse-server")
    ch_env = {k: interpolate(v) for k, v in env_of(ch).items()}
    assert datasource["type"] == PLUGIN and datasource["uid"]
    jd = datasource["jsonData"]
    assert jd["host"] in names_of(ch_name, ch)
    assert (jd["port"], jd["protocol"], jd.get("secure", False)) == (8123, "http", False)
    assert jd["username"] == ch_env["CLICKHOUSE_USER"] and jd["defaultDatabase"] == ch_env["CLICKHOUSE_DB"]
    m = re.fullmatch(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", datasource["secureJsonData"]["password"])
    assert m, "the password must come from the environment, not the file"
    assert interpolate(env_of(grafana)[m.group(1)]) == ch_env["CLICKHOUSE_PASSWORD"]


def test_dashboard_provider_reads_the_mounted_dashboards(grafana: dict) -> None:
    doc = yaml.safe_load(PROVIDERS.read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    host_dir = mounts(grafana)[provider["options"]["path"]]
    assert host_dir == DASHBOARD.parent and DASHBOARD.is_file()


# ---- dashboard ---------------------------------------------------------------------------------------
def test_dashboard_is_valid_and_uses_the_provisioned_datasource(dashboard: dict, datasource: dict) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    panels = query_panels(dashboard)
    assert len(panels) >= 6
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": PLUGIN, "uid": datasource["uid"]}, p["title"]
            assert t["editorType"] == "sql" and t["rawSql"].strip() and t["format"] in (0, 1), p["title"]
    sql = "\n".join(t["rawSql"] for p in panels for t in p["targets"])
    for needed in ("judge_cost_daily", "judge_budget_daily", "agent_llm_usage_daily", "verdicts FINAL", "traces FINAL"):
        assert needed in sql, f"no panel reads {needed}"


def expand(sql: str, db: str, variables: dict[str, str]) -> str:
    """Grafana's variables and the ClickHouse plugin's macros, as the plugin expands them."""
    f, t = int(FROM.timestamp()), int(TO.timestamp())
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m[1]} >= toDateTime({f}) AND {m[1]} <= toDateTime({t})", sql)
    sql = re.sub(r"\$__dateFilter\(([^)]+)\)",
                 lambda m: f"{m[1]} >= toDate('{FROM:%Y-%m-%d}') AND {m[1]} <= toDate('{TO:%Y-%m-%d}')", sql)  # fmt: skip
    sql = sql.replace("$__fromTime", f"toDateTime({f})").replace("$__toTime", f"toDateTime({t})")
    sql = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m[1] or m[2]], sql)  # KeyError: unknown variable
    return re.sub(r"\btracejudge\.", f"{db}.", sql)


def test_panel_sql_references_only_existing_tables_and_views(store: ClickHouseStore, dashboard: dict) -> None:
    _, rows = store.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database})
    existing = {r[0] for r in rows}
    for p in query_panels(dashboard):
        for t in p["targets"]:
            targets = re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", t["rawSql"], re.I)
            assert targets, p["title"]
            for name in targets:
                db, _, table = name.rpartition(".")
                assert db == "tracejudge", f"{p['title']}: {name} is not qualified with the tracejudge database"
                assert table in existing, f"{p['title']}: {name} does not exist in the migrated schema"


def seed(store: ClickHouseStore) -> None:
    d = datetime(2026, 3, 4, 10, tzinfo=UTC)
    store.insert("traces", [["t1", "checkout", "planner", "r1", d, "suspected_failure", 1],
                            ["t2", "checkout", "planner", "r2", d, "success", 0]],
                 ["trace_id", "service_name", "agent_name", "root_span_id", "completed_at", "sample_class", "sampled"])  # fmt: skip
    store.insert("spans", [["t1", "r1", "", "agent", "checkout", {"team": "payments"}, "", 0, 0, d],
                           ["t1", "l1", "r1", "llm", "checkout", {}, "gpt-4o-mini", 1000, 200, d]],
                 ["trace_id", "span_id", "parent_span_id", "kind", "service_name", "resource_attributes",
                  "response_model", "input_tokens", "output_tokens", "start_time"])  # fmt: skip
    store.insert("judge_calls", [["c1", d, int(d.timestamp()) // 86400, "t1", "task_completion", "judge-mini", 0.5, 0],
                                 ["c2", d, int(d.timestamp()) // 86400, "t1", "task_completion", "judge-big", 2.0, 0]],
                 ["call_id", "ts", "period", "trace_id", "judge", "model", "cost_usd", "kafka_partition"])  # fmt: skip
    store.insert("verdicts", [["t1", "task_completion", "h", "ok", "fail", d], ["t2", "task_completion", "h", "ok", "pass", d]],
                 ["trace_id", "judge", "rubric_hash", "status", "label", "judged_at"])  # fmt: skip


def test_every_panel_query_runs_on_the_migrated_schema(store: ClickHouseStore, dashboard: dict) -> None:
    seed(store)
    variables = {v["name"]: v["current"]["value"] for v in dashboard["templating"]["list"]}
    results: dict[str, tuple[list[str], list[Any]]] = {}
    for p in query_panels(dashboard):
        for t in p["targets"]:
            got = store.read_only_query(expand(t["rawSql"], store.database, variables))
            cols, rows = got.columns, got.rows
            assert rows, f"{p['title']}: no rows from the seeded data"
            if t["format"] == 0:
                assert cols[0] == "time", f"{p['title']}: a time series needs a leading `time` column"
            results[p["title"]] = (cols, rows)
    _, by_judge = results["Judge cost per day by judge"]
    assert [(r[1], r[2]) for r in by_judge] == [("task_completion", 2.5)]
    _, burn = results["Budget burn per day (all judges)"]
    assert [r[1:] for r in burn] == [(2.5, 0.0, 2.5)]
    _, pct = results["Charged judge spend, % of the daily budget"]
    assert pct[0][1] == 100 * 2.5 / float(variables["daily_budget_usd"])
    _, verdicts = results["Verdicts per judge per day"]
    assert [r[1:] for r in verdicts] == [("task_completion", 1, 1, 0)]
    _, classes = results["Sampling classes per day"]
    assert sorted(r[1:] for r in classes) == [("success", 1, 0), ("suspected_failure", 1, 1)]
    cols, usage = results["Agents' LLM usage by model"]
    assert dict(zip(cols, usage[0], strict=True))["tokens_in"] == 1000
