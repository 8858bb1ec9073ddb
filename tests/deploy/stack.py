"""Readers for the production stack files: docker-compose.yml and deploy/otel-collector.yaml.

Plain helpers shared by the deploy tests (the fixtures that load the files are in ``conftest.py``):
compose interpolation with defaults only, service environments and commands, the topics the init
service creates, Kafka listeners and the collector's kafka exporter, checked against
``stream.config.Settings``.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_FILE = REPO / "deploy" / "otel-collector.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"

try:
    from stream.config import ENV_PREFIX, Settings
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    from stream.config import ENV_PREFIX, Settings


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


def names_of(service_name: str, service: dict) -> set[str]:
    names = {service_name}
    if service.get("hostname"):
        names.add(service["hostname"])
    networks = service.get("networks")
    if isinstance(networks, dict):
        for cfg in networks.values():
            names.update((cfg or {}).get("aliases", []))
    return names


def check_bootstrap(services: dict, bootstrap: str, who: str) -> None:
    kafka_name, kafka = find_service_by_image(services, "apache/kafka")
    env = env_of(kafka)
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    names = names_of(kafka_name, kafka)
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
