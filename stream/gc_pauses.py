"""How long the garbage collector stopped the process, per generation.

A worker holding many open traces keeps millions of long-lived objects. A collection of an older
generation walks every object in it while nothing else runs: no heartbeat, no fetch, no commit.
:class:`GcPauses` times every collection through ``gc.callbacks``, logs one that stopped the
process for ``warn_s`` or more, and keeps totals that ``/api/status`` (``"gc"``) and ``/metrics``
(``tracejudge_gc_*``) report. :func:`stream.worker.tune_gc` installs the process-wide
:data:`PAUSES`.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class GcPauses:
    """A ``gc.callbacks`` entry: counts, total and longest pause per generation (0, 1, 2)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, warn_s: float = 1.0) -> None:
        self.clock = clock
        self.warn_s = warn_s
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:  # installed during a collection
            return
        took = self.clock() - self._started
        self._started = None
        g = min(max(int(info.get("generation", 2)), 0), 2)
        self.collections[g] += 1
        self.seconds[g] += took
        self.longest[g] = max(self.longest[g], took)
        if took >= self.warn_s:
            log.warning("garbage collection of generation %d stopped the process for %.2f s (%d objects collected)",
                        g, took, info.get("collected", 0))  # fmt: skip

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "pause_seconds": [round(s, 6) for s in self.seconds],
            "longest_pause_seconds": [round(s, 6) for s in self.longest],
        }


#: the process's pauses, installed by ``tune_gc`` (the worker and the benchmarks that mimic it)
PAUSES = GcPauses()
