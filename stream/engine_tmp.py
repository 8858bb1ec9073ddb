"""Where the embedded engine's client writes its temporary files: inside the data directory,
emptied of what a killed holder left (see :func:`use_private_tempdir`)."""

from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger(__name__)

PRIVATE_TMP = "tracejudge-tmp"
_private_tempdirs: set[str] = set()


def use_private_tempdir(data_dir: str) -> str:
    """Send this process's temporary files to ``<data_dir>/tracejudge-tmp``, emptied of what an
    earlier holder left. clickhouse-connect's chDB backend writes every insert to a temporary file
    (``tmp*.native`` / ``tmp*.raw``) and deletes it in a ``finally``, which a SIGKILL or an
    OOM kill skips: each such kill left up to one insert body (tens of MB) in the system temp
    directory for good. The process that opened the engine holds the data directory (one engine
    per directory), so whatever is in its directory at the first connection is stale: it is
    cleared once per process and directory. The temporary directory is set at every connection:
    a process may close its engine and open one on another directory (chDB allows one at a time),
    and must not go on writing into the other's, which may be gone. Returns the directory."""
    tmp = os.path.join(os.path.abspath(data_dir), PRIVATE_TMP)
    if tmp in _private_tempdirs:
        if os.path.isdir(tmp):
            tempfile.tempdir = tmp
            return tmp
        _private_tempdirs.discard(tmp)  # removed since: made again below
    stale = 0
    try:
        os.makedirs(tmp, exist_ok=True)
        for entry in os.scandir(tmp):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                stale += 1
    except OSError as exc:  # keep the system's temp directory rather than fail the connection
        log.warning("cannot use %s for temporary files (%s); using %s", tmp, exc, tempfile.gettempdir())
        _private_tempdirs.add(tmp)
        return tempfile.gettempdir()
    if stale:
        log.info("removed %d temporary file(s) left in %s by a process that was killed", stale, tmp)
    tempfile.tempdir = tmp
    _private_tempdirs.add(tmp)
    return tmp
