from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bgjobs.metrics_files import clear_stale_files


def test_stale_metric_files_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    # Given files from this (live) process and from a process that has exited
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    mine = tmp_path / f"counter_{os.getpid()}.db"
    stale = [tmp_path / f"counter_{dead_pid}.db", tmp_path / f"gauge_livesum_{dead_pid}.db"]
    for path in [mine, *stale]:
        path.write_bytes(b"x")
    # When
    removed = clear_stale_files(str(tmp_path))
    # Then only the dead process's files are gone
    assert removed == 2
    assert mine.exists()
    assert not any(p.exists() for p in stale)
