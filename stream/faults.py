"""Fault injection at the ClickHouse client layer — for the reliability (fault) tests only.

The embedded store (chDB) runs in the worker's process, so an outage cannot be staged by cutting a
network link. Instead, with the setting ``faults_file`` (``TRACEJUDGE_FAULTS_FILE``) the worker's
clickhouse-connect client is wrapped in :class:`FaultyClient`, which, before each call, consults a
JSON control file that the test (or an operator running a drill) rewrites while the worker runs:

* ``{"clickhouse": "down"}`` — every call (query / command / insert / …) raises
  :class:`~clickhouse_connect.driver.exceptions.OperationalError`, the error clickhouse-connect
  raises when the server is unreachable, without touching the engine;
* ``{"ambiguous_inserts": N}`` — the next N inserts are executed for real and *then* raise a
  connection-reset ``OperationalError``: ClickHouse stored the data, the client never heard;
* ``{"skip_fetched": N}`` — Kafka side, not ClickHouse: the next N records fetched from the
  worker's topics (spans, events, to_judge) never reach the streams, as if the broker had left them
  out of its fetch responses: a record once the partition has a read offset Faust's gap check
  takes (one this process passed on, or the one its seek set: the committed offset − 1, or for a
  new group the partition's first offset − 1; with stream/offset_gaps.py's hooks, 0 included);
* ``{"reread_pause": S}`` — each re-read of skipped offsets waits S seconds before it starts, so
  that a test can kill the worker while a gap is being recovered;
* ``{"reread_fail": true}`` — each re-read of skipped offsets fails, as against a broker that never
  serves them again (``gap_unrecovered`` decides what the worker does then);
* ``{"kill_after_insert": "traces", "kill_pause": S}`` — the next insert into that table waits S
  seconds (while the test stores what another consumer would meanwhile), is executed, and the
  process exits at once with status 137, as under SIGKILL: a crash at a chosen point;
* missing file, ``{}`` or ``{"clickhouse": "up"}`` — every call passes through.

"down" wins over "ambiguous_inserts" when both are set. The file is re-read only when its identity
changes (inode, mtime, size: one ``stat`` per call), so write it atomically (:func:`write_faults`:
a temporary file renamed over it — always a new inode, so two writes within one timestamp tick are
still seen). An unreadable or half-written file leaves the previous state in force.

**Countdown**: the ambiguous-insert count lives in memory, keyed by the file's identity. Each write
of the file arms a new count (N from the file); the file itself is never modified by the worker, so
the test is its only writer. A restarted worker re-reads the file and arms the count again — remove
or rewrite the file when the faults are meant to be over.

Faults injected are counted in :attr:`FaultyClient.counts` (shown as ``faults`` on the worker's
``/api/status``) and each one is logged at WARNING with the prefix ``fault injected:``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError

log = logging.getLogger(__name__)

# what clickhouse-connect reports for a refused connection / a reset after the request was sent
DOWN_MESSAGE = (
    "Error HTTPConnectionPool: Max retries exceeded (Caused by NewConnectionError: "
    "[Errno 111] Connection refused) executing HTTP request attempt 1 (fault injected: clickhouse down)"
)
RESET_MESSAGE = (
    "Error ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer')) executing "
    "HTTP request attempt 1 (fault injected: ambiguous insert, the data was stored)"
)

CALLS = frozenset({"query", "command", "raw_query", "raw_stream", "query_df", "query_np", "query_arrow",
                   "query_rows_stream", "query_row_block_stream", "query_column_block_stream"})  # fmt: skip
INSERTS = frozenset({"insert", "raw_insert", "insert_df", "insert_arrow", "insert_df_arrow"})


def write_faults(path: str | os.PathLike[str], **control: Any) -> None:
    """Atomically replace the control file with ``control`` (e.g. ``clickhouse="down"``)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(control, f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FaultControl:
    """The control file's current instruction; cheap to consult on every call."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._identity: tuple[int, int, int] | None = None
        self.down = False
        self.ambiguous_left = 0
        self.skip_fetched_left = 0
        self.reread_pause = 0.0
        self.reread_fail = False
        self.kill_after: tuple[str, float] | None = None  # (table, pause before its insert)

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._identity is not None:
                log.warning("fault control %s removed: ClickHouse calls pass through", self.path)
            self._identity, self.down, self.ambiguous_left, self.skip_fetched_left = None, False, 0, 0
            self.reread_pause, self.reread_fail, self.kill_after = 0.0, False, None
            return
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == self._identity:
            return
        try:
            control = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            if not isinstance(control, dict):
                raise ValueError("not a JSON object")
            down = str(control.get("clickhouse", "up")).lower() == "down"
            ambiguous = int(control.get("ambiguous_inserts", 0))
            skip = int(control.get("skip_fetched", 0))
            pause = float(control.get("reread_pause", 0))
            fail = bool(control.get("reread_fail", False))
            kill = control.get("kill_after_insert")
            kill_after = (str(kill), max(float(control.get("kill_pause", 0)), 0.0)) if kill else None
        except (OSError, ValueError, TypeError) as exc:  # half-written: keep the previous state
            log.warning("fault control %s unreadable (%s): previous state kept", self.path, exc)
            return
        self._identity, self.down, self.ambiguous_left = identity, down, max(ambiguous, 0)
        self.skip_fetched_left, self.reread_pause, self.reread_fail = max(skip, 0), max(pause, 0.0), fail
        self.kill_after = kill_after
        log.warning("fault control %s: clickhouse %s, ambiguous inserts armed: %d",
                    self.path, "down" if down else "up", self.ambiguous_left)  # fmt: skip


class FaultyClient:
    """A clickhouse-connect client whose calls obey a :class:`FaultControl` file."""

    def __init__(self, client: Any, faults_file: str | os.PathLike[str]) -> None:
        self._client = client
        self.control = FaultControl(faults_file)
        self.counts = {"down_errors": 0, "ambiguous_inserts": 0}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name in INSERTS:
            return self._guard(name, attr, insert=True)
        if name in CALLS:
            return self._guard(name, attr, insert=False)
        return attr

    def ping(self, *args: Any, **kwargs: Any) -> bool:
        self.control.refresh()
        return False if self.control.down else bool(self._client.ping(*args, **kwargs))

    def _guard(self, name: str, fn: Any, insert: bool) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            control = self.control
            control.refresh()
            if control.down:
                self.counts["down_errors"] += 1
                log.warning("fault injected: clickhouse down (%s)", name)
                raise OperationalError(DOWN_MESSAGE)
            table = str(args[0] if args else kwargs.get("table", ""))
            kill = control.kill_after if insert and table.rsplit(".", 1)[-1] == (control.kill_after or ("",))[0] else None
            if kill is not None:
                log.warning("fault injected: the insert into %s waits %.1fs, then the process exits", table, kill[1])
                time.sleep(kill[1])
            result = fn(*args, **kwargs)
            if kill is not None:
                log.warning("fault injected: exiting after the insert into %s", table)
                logging.shutdown()
                os._exit(137)
            if insert and control.ambiguous_left > 0:
                control.ambiguous_left -= 1
                self.counts["ambiguous_inserts"] += 1
                log.warning("fault injected: ambiguous %s into %s (stored, then connection reset; %d left)",
                            name, args[0] if args else kwargs.get("table"), control.ambiguous_left)  # fmt: skip
                raise OperationalError(RESET_MESSAGE)
            return result

        return call


def skip_fetched_records(app: Any, faults_file: str | os.PathLike[str], topics: set[str]) -> None:
    """Arm the ``skip_fetched`` fault for a Faust app: records of ``topics`` are removed from what its
    consumer's fetcher returns (the fetch position has already moved past them). Faust's
    ``Consumer._wait_next_records`` is wrapped once per process; apps without the fault pass through."""
    from faust.transport.consumer import Consumer

    app._tracejudge_skip_fetch = (FaultControl(faults_file), topics, {})
    if getattr(Consumer, "_tracejudge_skip_patched", False):
        return
    original = Consumer._wait_next_records

    async def wait_next_records(self: Any, timeout: float) -> Any:
        records, active = await original(self, timeout)
        fault = getattr(self.app, "_tracejudge_skip_fetch", None)
        if not records or fault is None:
            return records, active
        control, topics, read = fault  # read: the last offset passed on, per partition
        control.refresh()
        for tp, recs in records.items():
            if tp.topic not in topics:
                continue
            kept = []
            for r in recs:
                # Faust needs a read offset its gap check takes: one passed on here, or one its seek set
                if control.skip_fetched_left > 0 and (read.get(tp, 0) >= 1 or self._read_offset.get(tp)):
                    control.skip_fetched_left -= 1
                    log.warning("fault injected: fetched record %s/%d@%d skipped (%d left)", tp.topic, tp.partition,
                                r.offset, control.skip_fetched_left)  # fmt: skip
                    continue
                kept.append(r)
                read[tp] = r.offset
            records[tp] = kept
        return records, active

    Consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
    Consumer._tracejudge_skip_patched = True  # type: ignore[attr-defined]


def disturb_rereads(reader: Any, faults_file: str | os.PathLike[str]) -> None:
    """Arm the ``reread_pause`` and ``reread_fail`` faults on a
    :class:`stream.offset_gaps.SkippedOffsetReader`."""
    control, read = FaultControl(faults_file), reader.read

    async def disturbed(topic: str, partition: int, first: int, last: int) -> Any:
        control.refresh()
        if control.reread_pause > 0:
            log.warning("fault injected: re-read of offsets %d-%d of %s/%d paused %.1fs", first, last, topic,
                        partition, control.reread_pause)  # fmt: skip
            await asyncio.sleep(control.reread_pause)
        if control.reread_fail:
            log.warning("fault injected: re-read of offsets %d-%d of %s/%d fails", first, last, topic, partition)
            raise ConnectionError("fault injected: the broker does not serve these offsets")
        return await read(topic, partition, first, last)

    reader.read = disturbed
