"""bench/store_cost.py stores every row it built, once per run, and reads the server's CPU."""

from __future__ import annotations

import os
from pathlib import Path

from bench.store_cost import build_rows, one_run


def test_one_run_stores_all_rows_and_measures_the_server(tmp_path: Path) -> None:
    rows = build_rows(600)
    assert len(rows) >= 600 and len({(r[0], r[1]) for r in rows}) == len(rows)
    out = one_run(rows, 250, tmp_path / "store")
    assert out["rows_stored"] == len(rows)
    assert out["insert_us"] > 0 and out["merge_us"] >= 0
    assert abs(out["total_us"] - out["insert_us"] - out["merge_us"]) < 1e-6
    assert out["parts"] >= 1
    threads = out["by_thread_us"]  # the server's threads by name, read from /proc like the total
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / len(rows)  # /proc counts whole ticks: one, per span
    assert threads and all(v > 0 for v in threads.values())
    assert sum(threads.values()) <= out["total_us"] + (len(threads) + 1) * tick_us


def test_compare_runs_both_settings_and_leaves_the_workers_own_alone(tmp_path: Path) -> None:
    from bench.store_cost import main
    from stream.store import TABLE_INSERT_SETTINGS

    own = {k: dict(v) for k, v in TABLE_INSERT_SETTINGS.items()}
    out = main(["--spans", "300", "--chunks", "150", "--repeat", "1", "--compare", "optimize_on_insert=1"])
    assert set(out["medians"]) == {"150/worker", "150/optimize_on_insert=1"}
    assert all(m["total_us"] > 0 for m in out["medians"].values())
    assert all(run[0]["rows_stored"] == out["spans"] for run in out["runs"].values())
    assert TABLE_INSERT_SETTINGS == own
