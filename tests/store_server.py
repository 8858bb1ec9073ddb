"""A real ``tracejudge store-server`` process for tests (the shared store for several workers)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


class ServerProcess:
    """``tracejudge store-server`` on a free port; its log next to the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        with open(self.log_path, "ab") as log:  # a file, not a pipe nobody reads: it cannot fill up
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream", "store-server", "--data-dir", str(data_dir), "--port", "0"],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        self.dsn = self.proc.stdout.readline().strip()  # printed once the port is bound
        if not self.dsn.startswith("http://"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"store server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code
