"""``tracejudge store-server`` as a child process: the shared store of several local workers
(tests, benchmarks). Its log goes to a file next to the data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class StoreServerProcess:
    """``tracejudge store-server --data-dir D --port 0``; :attr:`dsn` is the address it printed
    once its port was bound."""

    def __init__(self, data_dir: Path, log_level: str | None = None, config_file: Path | None = None,
                 tls: tuple[Path, Path] | None = None, password: str | None = None) -> None:  # fmt: skip
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        cmd = [sys.executable, "-m", "stream", "store-server", "--data-dir", str(data_dir), "--port", "0"]
        if log_level is not None:
            cmd += ["--log-level", log_level]
        if config_file is not None:
            cmd += ["--config-file", str(config_file)]
        if tls is not None:
            cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        env = {k: v for k, v in os.environ.items() if k != "TRACEJUDGE_STORE_PASSWORD"}
        if password is not None:
            env["TRACEJUDGE_STORE_PASSWORD"] = password
        with open(self.log_path, "ab") as log:  # a file, not a pipe nobody reads: it cannot fill up
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        self.dsn = self.proc.stdout.readline().strip()
        if not self.dsn.startswith(("http://", "https://")):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"store server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code
