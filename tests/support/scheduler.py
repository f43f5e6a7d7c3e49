"""A real ``bgjobs scheduler`` process for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.processes import spawn
from tests.support.workers import ROOT


class Scheduler:
    def __init__(self, env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="bgjobs-scheduler-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = spawn(
            [sys.executable, "-m", "bgjobs.cli", "scheduler"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log.close()  # the scheduler writes through its own descriptor; output() reads the file

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def remove(self) -> None:
        """Kill it and delete its log."""
        self.kill()
        Path(self.log.name).unlink(missing_ok=True)
