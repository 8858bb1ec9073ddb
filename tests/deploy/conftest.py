"""Fixtures for the deploy tests: the compose file, its services, the worker and the collector config."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.stack import COLLECTOR_FILE, COMPOSE_FILE, REPO, env_of, interpolate


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
