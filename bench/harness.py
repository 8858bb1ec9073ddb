"""Shared pieces of the multi-process benchmarks (`bench/scaleout.py`, `bench/latency.py`).

* (the shared store is :class:`stream.demo.store_server_process.StoreServerProcess`);
* :func:`start_workers` — N ``tracejudge worker`` processes (:class:`stream.demo.run.WorkerProcess`)
  with their own data dir and web port, in one consumer group;
* :class:`CpuMeter` — CPU seconds (utime + stime from ``/proc/<pid>/stat``, descendants included)
  of named processes between two snapshots, so a run shows where the cores went;
* small helpers: ``KEY=VALUE`` worker settings, percentiles, ``uptime`` load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---- processes -------------------------------------------------------------------------------
def start_workers(n: int, env: dict[str, str], work: Path, name: str = "worker") -> list[Any]:
    """``n`` workers with ``env`` (one consumer group), each with its own data dir and web port."""
    from stream.demo.broker import free_port
    from stream.demo.run import WorkerProcess

    workers = []
    for i in range(n):
        d = work / f"{name}-{i}"
        d.mkdir(parents=True, exist_ok=True)
        wenv = {**env, "TRACEJUDGE_DATA_DIR": str(d), "TRACEJUDGE_WEB_HOST": "127.0.0.1",
                "TRACEJUDGE_WEB_PORT": str(free_port())}  # fmt: skip
        workers.append(WorkerProcess(wenv, d / "worker.log"))
    return workers


def status_or_none(worker: Any) -> dict[str, Any] | None:
    import httpx

    try:
        return worker.status()
    except (httpx.HTTPError, ValueError):
        return None


# start-up warnings the benchmarks' settings cause on purpose
_EXPECTED_WARNINGS = ("decision_wait", "no judging_file configured")


def scan_log(path: Path, limit: int = 5) -> tuple[int, list[str]]:
    """(warning/error lines, the first ``limit`` of them) in a worker log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    bad = [ln for ln in lines if any(w in ln for w in (" ERROR ", " WARNING ", "Traceback", "[E]", "[W]", "CRITICAL"))
           and not any(k in ln for k in _EXPECTED_WARNINGS)]
    return len(bad), bad[:limit]


_DRIFT = re.compile(r"woke up too late, with a drift of \+([0-9.]+)")


def max_timer_drift(path: Path) -> float:
    """The longest event-loop stall a worker log shows: mode's timers log how late they woke
    ("woke up too late, with a drift of +N"); 0.0 when none did."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0.0
    return max((float(m) for m in _DRIFT.findall(text)), default=0.0)


# ---- CPU -------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(pid: int, exclude: frozenset[int] = frozenset()) -> float:
    """CPU seconds of ``pid`` and its live descendants, except the subtrees of ``exclude``."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)], cpu[int(entry)] = st
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen or (p != pid and p in exclude):
            continue
        seen.add(p)
        total += cpu.get(p, 0.0)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return total


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s live threads, summed by thread name (Python threads are all named
    ``python``; chDB / ClickHouse name theirs: ``ThreadPool`` inserts, ``MergeMutate`` merges)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text(errors="replace")
        except OSError:  # the thread ended
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


@dataclass
class CpuMeter:
    """CPU seconds per named process between :meth:`start` and :meth:`stop`."""

    pids: dict[str, int]
    began: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0
    seconds: float = 0.0

    def _snapshot(self) -> dict[str, float]:
        named = frozenset(self.pids.values())  # a named child is counted on its own line, not its parent's
        return {k: tree_cpu_seconds(p, named) for k, p in self.pids.items()}

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.began = self._snapshot()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        end = self._snapshot()
        self.used = {k: end[k] - self.began.get(k, 0.0) for k in self.pids}

    def machine_total(self) -> float:
        return sum(self.used.values())

    def line(self) -> str:
        """``worker-0 1.62 cores, store 0.21, broker 0.10 (of 2)`` over the window."""
        if self.seconds <= 0:
            return "-"
        parts = [f"{k} {v / self.seconds:.2f}" for k, v in self.used.items()]
        return ", ".join(parts) + f"  = {self.machine_total() / self.seconds:.2f} cores of {os.cpu_count()}"


def system_busy_cores() -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat, to compare two snapshots."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals) - idle) / _TICK, sum(vals) / _TICK


# ---- small helpers ---------------------------------------------------------------------------
def py_spy() -> str:
    """py-spy (not a project dependency: ``pip install py-spy``): the one installed next to this
    interpreter (the venv's, whose bin/ is not on PATH when run as ``.venv/bin/python``), else PATH's."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else "py-spy"


def parse_worker_env(items: list[str], defaults: dict[str, str]) -> dict[str, str]:
    env = dict(defaults)
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--worker-env expects KEY=VALUE, got {item!r}")
        env[k if k.startswith("TRACEJUDGE_") else "TRACEJUDGE_" + k.upper()] = v
    return env


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime: n/a"
