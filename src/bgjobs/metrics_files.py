"""Where worker processes keep their metric files, and removing those of processes gone.

prometheus-client's multiprocess mode writes one file per process and metric kind; the
exposition process sums them. A worker command keeps its own directory (see :func:`metrics_dir`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["clear_dead_commands", "clear_stale_files", "metrics_dir", "use_multiprocess_dir"]

_PID_FILE = re.compile(r"_(\d+)\.db$")
_COMMAND_DIR = re.compile(r"^bgjobs-prometheus-(\d+)$")


def metrics_dir() -> str:
    """Where this worker command's processes keep their metric files.

    ``dramatiq_prom_db`` when set; otherwise a directory of this command's own, named for its
    main process (the parent of every worker and fork process it starts). Dramatiq's default,
    one directory per machine, made two worker commands on a host report each other's series.
    """
    return os.getenv("dramatiq_prom_db") or os.path.join(
        tempfile.gettempdir(), f"bgjobs-prometheus-{os.getppid()}"
    )


def use_multiprocess_dir() -> str:
    """Choose this command's directory for prometheus-client (before it is first imported)."""
    path = metrics_dir()
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["prometheus_multiproc_dir"] = path
    return path


def clear_dead_commands(parent: str | None = None) -> int:
    """Remove the metric directories of worker commands that no longer run; returns how many."""
    removed = 0
    for path in Path(parent or tempfile.gettempdir()).glob("bgjobs-prometheus-*"):
        match = _COMMAND_DIR.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state follows the command's closing parenthesis
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def clear_stale_files(directory: str | None = None) -> int:
    """Remove metric files left by processes that no longer run; returns how many."""
    removed = 0
    for path in Path(directory or metrics_dir()).glob("*.db"):
        match = _PID_FILE.search(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
