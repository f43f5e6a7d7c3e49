"""Log compression: old files in the configured directories become ``.gz``, never half-written.

Each file is compressed into a temporary file beside it, fsynced, renamed to ``<name>.gz``, and
only then is the original removed. A crash leaves either the original (and perhaps a temporary
file, removed by the next run) or both, never a truncated ``.gz`` in its place.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["compress_logs"]


def compress_logs(
    directories: list[str], *, pattern: str, older_than_days: int, dry_run: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Compress matching files older than ``older_than_days``; returns files and bytes saved."""
    cutoff = time.time() - older_than_days * 86_400
    report: dict[str, Any] = {
        "files": 0,
        "bytes_before": 0,
        "bytes_after": 0,
        "bytes_saved": 0,
        "status": "done",
    }
    for directory in directories:
        root = Path(directory)
        for stale in root.glob(".*.gz.part"):
            stale.unlink(missing_ok=True)  # a run killed mid-file
        for path in sorted(root.glob(pattern)):
            if not path.is_file() or path.suffix == ".gz" or path.stat().st_mtime >= cutoff:
                continue
            if deadline is not None and time.monotonic() > deadline:
                report["status"] = "stopped"
                return report
            size = path.stat().st_size
            report["files"] += 1
            report["bytes_before"] += size
            if dry_run:
                continue
            report["bytes_after"] += _compress(path)
    report["bytes_saved"] = report["bytes_before"] - report["bytes_after"] if not dry_run else 0
    if dry_run:
        report["status"] = "dry-run"
    return report


def _compress(path: Path) -> int:
    target = path.with_name(path.name + ".gz")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".gz.part")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw) as out,
            path.open("rb") as source,
        ):
            shutil.copyfileobj(source, out, 1 << 20)
        with open(tmp, "rb+") as done:
            os.fsync(done.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    path.unlink()
    return target.stat().st_size
