"""bench/event_joins.py: the joins it times find what the stored traces and events hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.event_joins import main
from stream.store import ClickHouseStore


def test_the_timed_joins_find_the_stored_traces_and_events(tmp_path: Path, chdb_dsn: str, store: ClickHouseStore) -> None:
    # in a database of the session's engine: a second chDB engine cannot open in this process
    out = tmp_path / "joins.json"
    args = ["--sizes", "3000,6000", "--chunk", "60", "--batch", "40", "--window", "500", "--repeat", "1",
            "--json", str(out)]  # fmt: skip
    assert main([*args, "--dsn", chdb_dsn]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["traces"] for r in results] == [3000, 6000] and [r["events"] for r in results] == [1000, 2000]
    for r in results:
        found = r["found"]
        assert found["batch"] == 40 and found["find_decided"] == 40  # each event's trace is decided
        # the sweep found the events about the window's traces (~1 per 3 traces) and linked those no
        # decision saw (1 in 10, and conversation events that fall in an older trace's window too),
        # once: the second sweep links none
        assert 100 <= found["window_events"] <= 250 and 5 <= found["sweep_linked"] < found["window_events"]
        assert found["sweep_linked_again"] == 0
        assert min(r["signals_for_ms"], r["recheck_ms"], r["backlog_ms"], r["find_decided_ms"], r["sweep_ms"]) > 0
        # the oldest chunk: a few seconds of traffic back, read by time; its traces' own events
        assert found["backlog_read"] == "by time" and found["backlog_stored_for"] >= 20
    assert not [d for (d,) in store.query("SHOW DATABASES")[1] if d.startswith("bench_joins_")]  # dropped


@pytest.mark.parametrize("args", [["--sizes", "1e6"], ["--sizes", "3000", "--repeat", "0"], ["--sizes", "100"],
                                  ["--sizes", "3000", "--window", "5000"]])
def test_bad_arguments_are_refused_with_a_message(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and "error:" in capsys.readouterr().err
