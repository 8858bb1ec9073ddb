"""Consistency checks for the production stack: docker-compose.yml and deploy/otel-collector.yaml.

The stack itself needs a Docker engine. These tests only parse the files and check them against
``stream.config.Settings``, so that the worker, the collector and the topic set-up agree on the
env names, topics, encoding and addresses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_FILE = REPO / "deploy" / "otel-collector.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"

try:
    from stream.config import ENV_PREFIX, Settings, load_settings
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    from stream.config import ENV_PREFIX, Settings, load_settings


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: object) -> str:
    """Resolve compose ``${VAR:-default}`` / ``${VAR-default}`` / ``$$`` using the defaults only.

    The outer environment is ignored so the tests do not depend on the machine. A variable
    without a default fails: the stack would need an outside value to be usable.
    """

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("op") is None:
            raise AssertionError(f"${{{m.group('name')}}} has no default in docker-compose.yml")
        return m.group("default")

    return _INTERPOLATION.sub(repl, str(value))


def env_of(service: dict) -> dict[str, str]:
    """A service's ``environment`` as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, sep, value = str(item).partition("=")
            out[name] = value if sep else ""
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict) -> str:
    """``entrypoint`` + ``command`` of a service as one string (list or string form)."""
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is None:
            continue
        parts.extend(value if isinstance(value, list) else [value])
    return "\n".join(str(p) for p in parts)


def settings_default(field: str):
    return Settings.model_fields[field].default


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def parse_listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, addr = item.partition("://")
        assert sep, f"listener without NAME://: {item!r}"
        host, _, port = addr.rpartition(":")
        out[name] = (host, int(port))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"missing {COMPOSE_FILE.name}"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in compose file"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def collector() -> dict:
    assert COLLECTOR_FILE.is_file(), f"missing {COLLECTOR_FILE.relative_to(REPO)}"
    data = yaml.safe_load(COLLECTOR_FILE.read_text())
    assert isinstance(data, dict), "collector config is not a mapping"
    return data


@pytest.fixture(scope="module")
def worker(services) -> dict:
    assert "worker" in services, "compose file has no `worker` service"
    return services["worker"]


@pytest.fixture(scope="module")
def worker_env(worker) -> dict[str, str]:
    return {k: interpolate(v) for k, v in env_of(worker).items()}


def find_service_by_image(services: dict, image_prefix: str) -> tuple[str, dict]:
    found = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith(image_prefix)]
    assert found, f"no service runs an image {image_prefix}*"
    return found[0]


def kafka_exporter(collector: dict) -> tuple[str, dict]:
    exporters = collector.get("exporters") or {}
    found = [(k, v or {}) for k, v in exporters.items() if k == "kafka" or k.startswith("kafka/")]
    assert len(found) == 1, f"expected exactly one kafka exporter, found {[k for k, _ in found]}"
    return found[0]


def exporter_traces_setting(exp: dict, key: str):
    """The value the kafka exporter uses for traces: ``traces.<key>``, else deprecated top-level."""
    traces = exp.get("traces") or {}
    if key in traces:
        return traces[key]
    return exp.get(key)


def created_topics(services: dict) -> dict[str, int]:
    """Topics created by ``kafka-topics.sh --create`` in any service command -> partitions."""
    topics: dict[str, int] = {}
    for service in services.values():
        text = command_text(service)
        if "kafka-topics.sh" not in text:
            continue
        for line in re.split(r"\n|&&|;", text):
            if "kafka-topics.sh" not in line or "--create" not in line:
                continue
            args = shlex.split(line)
            assert "--topic" in args, f"--create without --topic: {line!r}"
            topic = args[args.index("--topic") + 1]
            assert "--partitions" in args, f"topic {topic} created without --partitions"
            topics[topic] = int(args[args.index("--partitions") + 1])
    return topics


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
    for field in ("input_topic", "dlq_topic", "repartition_topic"):
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


def test_collector_kafka_exporter_topic_encoding_and_key(collector, worker_env):
    _, exp = kafka_exporter(collector)
    topic = exporter_traces_setting(exp, "topic")
    assert topic == settings_default("input_topic")
    assert topic == worker_env.get(env_name("input_topic"), settings_default("input_topic"))
    assert exporter_traces_setting(exp, "encoding") == "otlp_proto"
    encoding = worker_env.get(env_name("input_encoding"), settings_default("input_encoding"))
    assert encoding in ("auto", "otlp_proto"), f"worker expects {encoding}, collector writes otlp_proto"
    assert exp.get("partition_traces_by_id") is True, "spans of one trace must share a partition"


# --------------------------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------------------------


def _names_of(service_name: str, service: dict) -> set[str]:
    names = {service_name}
    if service.get("hostname"):
        names.add(service["hostname"])
    networks = service.get("networks")
    if isinstance(networks, dict):
        for cfg in networks.values():
            names.update((cfg or {}).get("aliases", []))
    return names


def _check_bootstrap(services: dict, bootstrap: str, who: str) -> None:
    kafka_name, kafka = find_service_by_image(services, "apache/kafka")
    env = env_of(kafka)
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    names = _names_of(kafka_name, kafka)
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    assert servers, f"{who}: empty bootstrap"
    for server in servers:
        host, _, port = server.rpartition(":")
        assert host in names, f"{who}: bootstrap host {host!r} is not the kafka service ({sorted(names)})"
        matches = [ln for ln, (h, p) in advertised.items() if h == host and p == int(port)]
        assert matches, f"{who}: {server} is not an advertised listener of {kafka_name}: {advertised}"
        for listener in matches:
            assert listener in bound and bound[listener][1] == int(port), (
                f"{who}: listener {listener} is advertised on {port} but the broker binds {bound.get(listener)}"
            )
            assert listener != env.get("KAFKA_CONTROLLER_LISTENER_NAMES"), f"{who}: points at the controller listener"


def test_worker_bootstrap_matches_kafka_listener(services, worker_env):
    _check_bootstrap(services, worker_env[env_name("kafka_bootstrap")], "worker")


def test_collector_brokers_match_kafka_listener(services, collector):
    _, exp = kafka_exporter(collector)
    brokers = exp.get("brokers")
    assert brokers, "kafka exporter has no brokers (its default localhost:9092 is wrong in a container)"
    _check_bootstrap(services, ",".join(brokers), "otel-collector")


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
    assert host in _names_of(name, kafka)
    assert parse_listeners(env["KAFKA_LISTENERS"])[ctrl][1] == int(port)
    assert env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1", "one broker cannot hold 3 replicas"


def test_worker_dsn_matches_clickhouse_service(services, worker_env):
    ch_name, ch = find_service_by_image(services, "clickhouse/clickhouse-server")
    ch_env = {k: interpolate(v) for k, v in env_of(ch).items()}
    dsn = urlsplit(worker_env[env_name("clickhouse_dsn")])
    assert dsn.scheme == "http"
    assert dsn.hostname in _names_of(ch_name, ch)
    assert dsn.port == 8123, "8123 is the HTTP port of the clickhouse-server image"
    assert "8123" in " ".join(map(str, ch["healthcheck"]["test"])) and "/ping" in " ".join(
        map(str, ch["healthcheck"]["test"])
    )
    assert dsn.username == ch_env.get("CLICKHOUSE_USER", "default")
    assert dsn.password == ch_env.get("CLICKHOUSE_PASSWORD", "")
    database = worker_env.get(env_name("clickhouse_database"), settings_default("clickhouse_database"))
    assert ch_env.get("CLICKHOUSE_DB") == database


# --------------------------------------------------------------------------------------------
# collector pipeline
# --------------------------------------------------------------------------------------------


def test_collector_pipeline_wires_otlp_to_kafka(collector):
    kafka_key, _ = kafka_exporter(collector)
    pipelines = (collector.get("service") or {}).get("pipelines") or {}
    traces = {k: v for k, v in pipelines.items() if k == "traces" or k.startswith("traces/")}
    assert traces, "no traces pipeline"
    wired = [
        k
        for k, p in traces.items()
        if any(r == "otlp" or r.startswith("otlp/") for r in p.get("receivers", []))
        and kafka_key in p.get("exporters", [])
    ]
    assert wired, f"no traces pipeline from an otlp receiver to {kafka_key}"
    for name in wired:
        p = traces[name]
        for section, key in (("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")):
            defined = collector.get(section) or {}
            for component in p.get(key, []):
                assert component in defined, f"pipeline {name} uses undefined {section[:-1]} {component}"
        assert any(pr == "batch" or pr.startswith("batch/") for pr in p.get("processors", []))


def test_collector_receives_on_published_ports(collector, services):
    otlp = (collector.get("receivers") or {}).get("otlp") or {}
    protocols = otlp.get("protocols") or {}
    assert protocols.get("grpc", {}).get("endpoint") == "0.0.0.0:4317"
    assert protocols.get("http", {}).get("endpoint") == "0.0.0.0:4318"
    name, svc = find_service_by_image(services, "otel/opentelemetry-collector-contrib")
    published = {str(p).split("/")[0].rsplit(":", 1)[-1] for p in svc.get("ports", [])}
    assert {"4317", "4318"} <= published, f"{name} must publish 4317 and 4318"
    mounts = [str(v) for v in svc.get("volumes", [])]
    assert any(m.startswith("./deploy/otel-collector.yaml:") for m in mounts), "collector config not mounted"


# --------------------------------------------------------------------------------------------
# images and Dockerfile
# --------------------------------------------------------------------------------------------


def test_images_are_pinned(services):
    images = [s["image"] for n, s in services.items() if "image" in s and "build" not in s]
    assert len(images) >= 4
    for image in images:
        name, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{image} has no tag"
        assert tag not in ("latest", "head", "main") and re.match(r"^\d+(\.\d+)+", tag), f"{image} is not pinned"


def test_dockerfile_installs_with_constraints():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    assert re.search(r"pip install\s+-c constraints\.txt\s", text), "pip install must use -c constraints.txt"
    assert 'CMD ["tracejudge", "worker"]' in text


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
