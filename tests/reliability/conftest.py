"""Fault scenarios against real parts: the session's tansu broker, real `tracejudge worker`
processes, embedded chDB (or the store server). Every scenario records its figures with the
``figures`` fixture; they are printed as a table at the end of the run and, with
``TRACEJUDGE_FIGURES_FILE`` set, appended there as JSON lines (``python -m tests.reliability.report``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.stream.conftest import deployment  # noqa: F401 - the end-to-end fixture, shared

_RECORDED: list[dict[str, Any]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figures(scenario="...", guarantee="...", **values)``: record (and print) one scenario's figures."""

    def record(scenario: str, guarantee: str, **values: Any) -> None:
        size = "long" if "[long" in request.node.name else "short"
        row = {"test": request.node.nodeid, "scenario": scenario, "size": size, "guarantee": guarantee, "figures": values}
        _RECORDED.append(row)
        print(f"\n[figures] {scenario} ({size}): " + ", ".join(f"{k}={v}" for k, v in values.items()))
        path = os.environ.get("TRACEJUDGE_FIGURES_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=str) + "\n")

    return record


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | size | guarantee | figures |", "|---|---|---|---|"]
    for r in rows:
        figs = ", ".join(f"{k} {v}" for k, v in r["figures"].items())
        lines.append(f"| {r['scenario']} | {r['size']} | {r['guarantee']} | {figs} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _RECORDED:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(format_table(_RECORDED))
