"""Fault scenarios against real parts: the session's tansu broker, real `tracejudge worker`
processes, embedded chDB (or the store server). Every scenario records its figures with the
``figures`` fixture; they travel with the test's report (``user_properties``, so also from xdist
workers) and are printed as a table at the end of the run (tests/conftest.py), and with
``TRACEJUDGE_FIGURES_FILE`` set they are appended there as JSON lines (``python -m tests.reliability.report``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.stream.conftest import deployment, store_dsn  # noqa: F401 - the end-to-end fixtures, shared


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figures(scenario="...", guarantee="...", **values)``: record (and print) one scenario's figures."""

    def record(scenario: str, guarantee: str, **values: Any) -> None:
        size = "long" if "[long" in request.node.name else "short"
        row: dict[str, Any] = {"test": request.node.nodeid, "scenario": scenario, "size": size, "guarantee": guarantee, "figures": values}
        row = json.loads(json.dumps(row, default=str))
        request.node.user_properties.append(("figures", row))
        print(f"\n[figures] {scenario} ({size}): " + ", ".join(f"{k}={v}" for k, v in values.items()))
        path = os.environ.get("TRACEJUDGE_FIGURES_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return record

