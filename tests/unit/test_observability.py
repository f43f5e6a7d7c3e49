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


def test_buffered_observations_land_as_if_observed_one_by_one() -> None:
    """A worker's durations are applied a flush at a time, one update per bucket hit: the
    histogram must read exactly as if each had been observed on its own (bounds, beyond the
    last one, below zero and NaN included)."""
    import math

    from prometheus_client import CollectorRegistry, Histogram

    from bgjobs import tally

    bounds = (1.0, 5.0, 10.0, 50.0)
    values = [0, 0.5, 1, 1, 1.0001, 5, 7, 10, 49.9, 50, 51, 1e9, float("nan"), -3] * 50
    direct = Histogram("one_by_one", "", ["queue"], buckets=bounds, registry=CollectorRegistry())
    for value in values:
        direct.labels("q").observe(value)
    buffered = tally.histogram("bgjobs_test_buffered_durations", "", ("queue",), buckets=bounds)
    tally.start()
    try:
        for value in values:
            buffered.labels("q").observe(value)
        tally.flush()
    finally:
        tally.stop()

    def read(metric: Histogram) -> list[tuple[str, dict[str, str], float]]:
        (family,) = metric.collect()
        return [(s.name.removeprefix(family.name), s.labels, s.value) for s in family.samples
                if not s.name.endswith("_created")]  # fmt: skip

    expected, found = read(direct), read(buffered.value())
    assert [(n, labels) for n, labels, _ in found] == [(n, labels) for n, labels, _ in expected]
    for (name, _, want), (_, _, got) in zip(expected, found, strict=True):
        assert got == want or (math.isnan(got) and math.isnan(want)), name
    assert ("_count", {"queue": "q"}, 650.0) in found  # 700 observed; observe() counts NaN in no bucket
