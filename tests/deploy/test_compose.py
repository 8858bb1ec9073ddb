"""Consistency checks for docker-compose.yml: the worker's environment, topics and addresses.

The stack itself needs a Docker engine. These tests only parse the file and check it against
``stream.config.Settings``, so that the worker and the topic set-up agree on the env names,
topics and addresses. The collector config is checked in ``test_collector.py``, the Dockerfile
in ``test_dockerfile.py``; the file readers are in ``stack.py``, the fixtures in ``conftest.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from stream.config import ENV_PREFIX, Settings, load_settings
from tests.deploy.stack import (
    COMPOSE_FILE,
    REPO,
    check_bootstrap,
    command_text,
    created_topics,
    env_name,
    env_of,
    find_service_by_image,
    interpolate,
    names_of,
    parse_listeners,
    settings_default,
)

# --------------------------------------------------------------------------------------------
# worker environment vs Settings
# --------------------------------------------------------------------------------------------


def test_every_tracejudge_env_name_is_a_settings_field(services):
    known = {env_name(f) for f in Settings.model_fields}
    used = {
        (svc_name, name)
        for svc_name, svc in services.items()
        for name in env_of(svc)
        if name.startswith(ENV_PREFIX)
    }
    assert used, "compose file sets no TRACEJUDGE_* variable"
    unknown = sorted(f"{svc}: {name}" for svc, name in used if name not in known)
    assert not unknown, f"env names that stream.config.Settings does not define: {unknown}"


def test_worker_environment_loads_with_load_settings(worker_env, monkeypatch):
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    tj = {k: v for k, v in worker_env.items() if k.startswith(ENV_PREFIX)}
    assert tj, "worker sets no TRACEJUDGE_* variable"
    for k, v in tj.items():
        monkeypatch.setenv(k, v)

    settings = load_settings()

    assert settings.kafka_bootstrap == tj[env_name("kafka_bootstrap")]
    assert settings.clickhouse_dsn == tj[env_name("clickhouse_dsn")]
    assert not settings.embedded, "the compose worker must use the clickhouse service, not embedded chDB"
    assert settings.web_host == "0.0.0.0", "web API must listen on all interfaces inside the container"


def test_worker_runs_tracejudge_worker(worker):
    assert worker.get("command") == ["tracejudge", "worker"]
    build = worker.get("build") or {}
    assert build.get("dockerfile") == "deploy/Dockerfile"
    assert (REPO / build.get("context", ".") / build["dockerfile"]).is_file()


def test_worker_waits_for_healthy_dependencies(services, worker):
    deps = worker.get("depends_on")
    assert isinstance(deps, dict), "worker depends_on must use the long form with conditions"
    kafka_name, _ = find_service_by_image(services, "apache/kafka")
    ch_name, _ = find_service_by_image(services, "clickhouse/clickhouse-server")
    for name in (kafka_name, ch_name):
        assert deps.get(name, {}).get("condition") == "service_healthy", f"worker must wait for {name} healthy"
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    init = [n for n, s in services.items() if "kafka-topics.sh" in command_text(s) and "--create" in command_text(s)]
    assert init, "no service creates the topics"
    for name in init:
        assert deps.get(name, {}).get("condition") == "service_completed_successfully"


def test_worker_scales_by_replicas_within_partition_count(services, worker, worker_env):
    replicas = (worker.get("deploy") or {}).get("replicas")
    assert isinstance(replicas, int) and replicas >= 2, "worker needs deploy.replicas >= 2"
    assert "container_name" not in worker, "container_name prevents running more than one replica"
    for port in worker.get("ports") or []:
        assert ":" not in str(port), f"replicas cannot share the fixed host port {port!r}"
    input_topic = worker_env.get(env_name("input_topic"), settings_default("input_topic"))
    partitions = created_topics(services).get(input_topic)
    assert partitions is not None, f"input topic {input_topic} is not created"
    assert replicas <= partitions, "more worker replicas than input partitions leaves workers idle"
    group = worker_env.get(env_name("consumer_group"), settings_default("consumer_group"))
    assert group == "tracejudge"


# --------------------------------------------------------------------------------------------
# topics
# --------------------------------------------------------------------------------------------


def test_topic_init_creates_settings_topics(services, worker_env):
    topics = created_topics(services)
    for field in ("input_topic", "dlq_topic", "repartition_topic", "events_topic", "events_dlq_topic", "judge_topic"):
        default = settings_default(field)
        assert default in topics, f"{field} default {default!r} is not created (created: {sorted(topics)})"
        # If the worker overrides the name, it must still be a created topic.
        effective = worker_env.get(env_name(field), default)
        assert effective == default, f"worker overrides {env_name(field)}={effective!r}; defaults are {default!r}"
    if env_name("topic_partitions") in worker_env:
        assert int(worker_env[env_name("topic_partitions")]) == topics[settings_default("repartition_topic")]
    assert topics[settings_default("repartition_topic")] == topics[settings_default("input_topic")], (
        "the repartition topic should have as many partitions as the input topic"
    )


# --------------------------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------------------------


def test_worker_bootstrap_matches_kafka_listener(services, worker_env):
    check_bootstrap(services, worker_env[env_name("kafka_bootstrap")], "worker")


def test_kafka_is_single_node_kraft(services):
    name, kafka = find_service_by_image(services, "apache/kafka")
    env = env_of(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    ctrl = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    vid, _, addr = voters.partition("@")
    assert vid == node_id
    host, _, port = addr.rpartition(":")
    assert host in names_of(name, kafka)
    assert parse_listeners(env["KAFKA_LISTENERS"])[ctrl][1] == int(port)
    assert env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1", "one broker cannot hold 3 replicas"


def test_worker_dsn_matches_clickhouse_service(services, worker_env):
    ch_name, ch = find_service_by_image(services, "clickhouse/clickhouse-server")
    ch_env = {k: interpolate(v) for k, v in env_of(ch).items()}
    dsn = urlsplit(worker_env[env_name("clickhouse_dsn")])
    assert dsn.scheme == "http"
    assert dsn.hostname in names_of(ch_name, ch)
    assert dsn.port == 8123, "8123 is the HTTP port of the clickhouse-server image"
    assert "8123" in " ".join(map(str, ch["healthcheck"]["test"])) and "/ping" in " ".join(
        map(str, ch["healthcheck"]["test"])
    )
    assert dsn.username == ch_env.get("CLICKHOUSE_USER", "default")
    assert dsn.password == ch_env.get("CLICKHOUSE_PASSWORD", "")
    database = worker_env.get(env_name("clickhouse_database"), settings_default("clickhouse_database"))
    assert ch_env.get("CLICKHOUSE_DB") == database


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def test_images_are_pinned(services):
    images = [s["image"] for n, s in services.items() if "image" in s and "build" not in s]
    assert len(images) >= 4
    for image in images:
        name, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{image} has no tag"
        assert tag not in ("latest", "head", "main") and re.match(r"^\d+(\.\d+)+", tag), f"{image} is not pinned"


# --------------------------------------------------------------------------------------------
# docker compose's own parser, when the plugin is installed
# --------------------------------------------------------------------------------------------


def _compose_available() -> str | None:
    docker = shutil.which("docker")
    if not docker:
        return "docker client not installed"
    try:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose not runnable: {exc}"
    if r.returncode != 0:
        return "docker compose plugin not installed"
    return None


def test_docker_compose_config_parses():
    reason = _compose_available()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_PASSWORD"}
    r = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
