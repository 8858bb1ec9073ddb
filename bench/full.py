"""The full path of the ingest benchmark: the real ``tracejudge worker`` on the same input.

:func:`run_full` starts :class:`stream.demo.run.WorkerProcess` with a fresh data dir, consumer
group, DLQ and repartition topics, reading the input topic from the beginning, and polls
``/api/status`` every 0.1 s. Spans/s = spans stored after the first sample that showed any / time
from that sample to the one showing all of them; start-up (chDB, migrations, group join) is
reported separately. With ``profile`` the worker is sampled with py-spy for the whole run.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

POLL_INTERVAL = 0.1

# Worker settings used for the full path (override / add with --worker-env KEY=VALUE).
DEFAULT_WORKER_ENV = {
    "TRACEJUDGE_DECISION_WAIT": "2",
    "TRACEJUDGE_TICK_INTERVAL": "0.25",
    "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "10",
    "TRACEJUDGE_LOG_LEVEL": "info",
}


def _scan_log(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"lines": 0}
    bad = [
        ln
        for ln in lines
        if any(
            w in ln
            for w in (" ERROR ", " WARNING ", "Traceback", "[E]", "[W]", "CRITICAL")
        )
    ]
    return {"lines": len(lines), "warnings_or_errors": len(bad), "first": bad[:8]}


def run_full(bootstrap: str, topic: str, expected_spans: int, expected_traces: int, data_dir: Path,
             worker_env: dict[str, str], run_id: str, timeout: float,
             profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    import httpx

    from stream.demo.broker import free_port
    from bench.harness import py_spy
    from stream.demo.run import WorkerProcess

    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "TRACEJUDGE_KAFKA_BOOTSTRAP": bootstrap,
        "TRACEJUDGE_DATA_DIR": str(data_dir),
        "TRACEJUDGE_INPUT_TOPIC": topic,
        "TRACEJUDGE_DLQ_TOPIC": f"{topic}.dlq.{run_id}",
        "TRACEJUDGE_REPARTITION_TOPIC": f"{topic}.by_trace.{run_id}",
        "TRACEJUDGE_CONSUMER_GROUP": f"bench-{run_id}",
        "TRACEJUDGE_WEB_HOST": "127.0.0.1",
        "TRACEJUDGE_WEB_PORT": str(free_port()),
        **worker_env,
    }
    log_path = data_dir / "worker.log"
    began = time.perf_counter()
    worker = WorkerProcess(env, log_path)
    spy = None
    if (
        profile is not None
    ):  # sample the worker with py-spy (not a project dependency: pip install py-spy)
        profile.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [py_spy(), "record", "--pid", str(worker.proc.pid), "--rate", "50", "--format", "raw",
             "--output", str(profile), *os.environ.get("BENCH_PY_SPY_ARGS", "").split()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    samples: list[tuple[float, int, int]] = []  # (t, spans_stored, traces completed)
    status: dict[str, Any] = {}
    error = None
    t_first = t_all = None
    n_first = 0
    try:
        deadline = began + timeout
        wait_traces_until = None
        while time.perf_counter() < deadline:
            if worker.proc.poll() is not None:
                error = f"worker exited with {worker.proc.returncode}"
                break
            try:
                status = worker.status()
            except (httpx.HTTPError, ValueError):
                time.sleep(POLL_INTERVAL)
                continue
            now = time.perf_counter()
            c = status["counters"]
            stored, done = c["spans_stored"], sum(c["traces_completed"].values())
            samples.append((now - began, stored, done))
            if stored and t_first is None:
                t_first, n_first = now, stored
            if stored >= expected_spans and t_all is None:
                t_all = now
                wait_traces_until = now + 30.0
            if t_all is not None and (
                done >= expected_traces or now > (wait_traces_until or now)
            ):
                break
            time.sleep(POLL_INTERVAL)
        else:
            error = f"timed out after {timeout:.0f}s"
        rows = None
        if error is None:
            try:
                rows = worker.sql("SELECT count() FROM tracejudge.spans")[0][0]
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                rows = f"error: {exc}"
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        rc = worker.stop(timeout=60)
    result: dict[str, Any] = {
        "error": error, "exit_code": rc, "data_dir": str(data_dir),
        "counters": status.get("counters"), "rows_in_table": rows if error is None else None,
        "log": _scan_log(log_path), "gc": status.get("gc"),  # the worker's GC pauses, start-up included
        "store_inserts": status.get("store_inserts"),  # per table: inserts, rows, seconds on the store thread
    }  # fmt: skip
    if t_first is not None and t_all is not None and t_all > t_first:
        seconds = t_all - t_first
        result.update(
            spans=expected_spans - n_first, seconds=seconds,
            spans_per_s=(expected_spans - n_first) / seconds,
            startup_s=t_first - began, spans_at_first_sample=n_first,
            traces_completed=samples[-1][2] if samples else 0,
        )  # fmt: skip
    elif error is None:
        result["error"] = (
            "all spans arrived in one status sample: input too small to measure (raise --spans)"
        )
    result["samples"] = [(round(t, 3), s, d) for t, s, d in samples]
    return result
