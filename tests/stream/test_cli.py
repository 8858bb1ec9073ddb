"""The `tracejudge` command line, run as a newcomer would run it (subprocesses, real stores)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for


def tracejudge(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACEJUDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], cwd=cwd, env={**clean, **(env or {}), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_demo_runs_end_to_end_and_sql_reads_the_result(tmp_path: Path) -> None:
    run = tracejudge("demo", "--traces", "60", "--rate", "200", "--decision-wait", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fleet sent 60 traces" in run.stdout
    # the two malformed product events, read back from the dead-letter topic with their reasons
    dead = [line for line in run.stdout.splitlines() if line.startswith("dead letters read back")]
    assert dead == ["dead letters read back (tracejudge dlq show): agent_events.dlq: undecodable ×1; "
                    "agent_events.dlq: unknown_type ×1"], [line for line in run.stdout.splitlines() if "dead" in line]
    assert "root_ended_idle" in run.stdout
    # the worker has stopped: `sql` opens the embedded store itself
    q = tracejudge("sql", "--format", "json", "SELECT count() AS n, sum(span_count) AS spans FROM tracejudge.traces FINAL", cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    row = json.loads(q.stdout.strip())
    assert row["n"] == 60
    spans = tracejudge("sql", "--format", "tsv", "SELECT count() FROM tracejudge.spans FINAL", cwd=tmp_path)
    assert int(spans.stdout.split()[-1]) == int(row["spans"]) > 60
    flagged = tracejudge("sql", "--format", "tsv", "SELECT count() FROM tracejudge.gate_results FINAL WHERE outcome = 'fail'", cwd=tmp_path)
    gates = tracejudge("gates", "--judge", "task_completion", cwd=tmp_path)
    assert gates.returncode == 0, gates.stderr
    assert "Gate precision against judge task_completion" in gates.stdout
    assert int(flagged.stdout.split()[-1]) > 0 and "judged failing" in gates.stdout


def test_sql_goes_through_the_running_worker(deployment: Callable[..., Deployment], tmp_path: Path) -> None:
    d = deployment()
    d.start_worker()
    t = genai_trace(random.Random(1), 3)
    d.produce([(t[0].trace_id.hex().encode(), proto(t), None)])
    env = {"TRACEJUDGE_DATA_DIR": str(d.data_dir)}

    def stored() -> bool:
        q = tracejudge("sql", "--format", "tsv", "SELECT count() FROM tracejudge.spans FINAL", cwd=tmp_path, env=env)
        return q.returncode == 0 and q.stdout.split()[-1] == "3"

    assert wait_for(stored, 30)  # the store is held by the worker: answered through its API
    refused = tracejudge("sql", "INSERT INTO tracejudge.spans (trace_id) VALUES ('x')", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "refused" in refused.stderr


def test_invalid_configuration_exits_2_naming_the_field(tmp_path: Path) -> None:
    run = tracejudge("worker", cwd=tmp_path, env={"TRACEJUDGE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TRACEJUDGE_MAX_OPEN_TRACES": "0"})
    assert run.returncode == 2
    assert "max_open_traces (TRACEJUDGE_MAX_OPEN_TRACES)" in run.stderr
    missing = tracejudge("worker", cwd=tmp_path)
    assert missing.returncode == 2 and "TRACEJUDGE_KAFKA_BOOTSTRAP" in missing.stderr


def test_invalid_policy_stops_the_worker_naming_the_entry(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "gates:\n"
        "  - {type: span_error, name: errors}\n"
        "  - {type: cel, name: broken_rule, fail_when: 'trace.tool_calls.exists(t, '}\n"
    )
    env = {"TRACEJUDGE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TRACEJUDGE_POLICY_FILE": str(policy)}
    run = tracejudge("worker", cwd=tmp_path, env=env, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "broken_rule" in run.stderr and "fail_when" in run.stderr
    policy.write_text("sampling:\n  success: {rate: 1.5}\n")
    run = tracejudge("worker", cwd=tmp_path, env=env, timeout=60)
    assert run.returncode == 2 and "rate" in run.stderr


def test_reading_an_empty_store_says_so_in_one_line(tmp_path: Path) -> None:
    env = {"TRACEJUDGE_DATA_DIR": str(tmp_path / "data")}
    for args in (["gates"], ["estimate", "--judge", "task_completion"],
                 ["policy-diff", str(Path(__file__).parents[2] / "stream" / "default_policy.yaml")]):  # fmt: skip
        run = tracejudge(*args, cwd=tmp_path, env=env)
        said = " ".join(run.stderr.split())
        assert run.returncode == 2, run.stdout + run.stderr
        assert "ClickHouse: Code: 81" in said and "run `tracejudge migrate`" in said, said
        assert "Traceback" not in run.stderr


def test_migrate_creates_the_tables_once_and_reports_what_it_did(tmp_path: Path) -> None:
    # a subprocess with its own embedded store (this process may hold another chDB engine)
    env = {"TRACEJUDGE_DATA_DIR": str(tmp_path / "data")}
    first = tracejudge("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("tracejudge (one server): applied spans, traces, decisions")
    again = tracejudge("migrate", cwd=tmp_path, env=env)
    assert again.returncode == 0 and again.stdout.strip() == "tracejudge (one server): up to date"
    down = tracejudge("migrate", cwd=tmp_path, env={"TRACEJUDGE_CLICKHOUSE_DSN": "http://127.0.0.1:1"})
    assert down.returncode == 1 and "migrate: " in down.stderr and "Connection refused" in down.stderr


def test_sql_output_cannot_be_forged_by_the_values(capsys: pytest.CaptureFixture[str]) -> None:
    """Trace content in a result: an escape sequence would recolour the terminal or plant a
    hyperlink in the table; a tab or newline would forge a cell or a row of the TSV."""
    from stream.cli import print_rows

    rows = [("x\x1b[31mred\x1b]8;;http://evil\x07", "line1\nfake\trow", 7)]
    print_rows(["name", "explanation", "n"], rows, "tsv")
    out = capsys.readouterr().out.splitlines()
    assert out == ["name\texplanation\tn", "x\x1b[31mred\x1b]8;;http://evil\x07\tline1\\nfake\\trow\t7"]
    print_rows(["name", "explanation", "n"], rows, "table")
    table = capsys.readouterr().out
    assert "\x1b" not in table and "\\x1b[31mred" in table and "\\x1b]8;;http://evil\\x07" in table
