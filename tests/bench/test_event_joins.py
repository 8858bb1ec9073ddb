"""bench/event_joins.py: the joins it times find what the stored traces and events hold."""

from __future__ import annotations

import json
from pathlib import Path

from bench.event_joins import main


def test_the_timed_joins_find_the_stored_traces_and_events(tmp_path: Path) -> None:
    out = tmp_path / "joins.json"
    assert main(["--sizes", "3000,6000", "--chunk", "60", "--batch", "40", "--repeat", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["traces"] for r in results] == [3000, 6000] and [r["events"] for r in results] == [1000, 2000]
    for r in results:
        found = r["found"]
        assert found["batch"] == 40 and found["find_decided"] == 40  # each event's trace is decided
        assert found["stored_for"] > 0 and found["signals_for"] >= found["stored_for"] // 2
        assert min(r["signals_for_ms"], r["recheck_ms"], r["find_decided_ms"]) > 0
