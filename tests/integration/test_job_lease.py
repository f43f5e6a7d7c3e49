"""A batch job's lease on real workers: a SIGKILLed run frees its job on the heartbeat's clock."""

from __future__ import annotations

import pytest

from bgjobs import runs
from bgjobs.jobs import trigger
from tests.support import batch_jobs
from tests.support.workers import HEARTBEAT_TIMEOUT_S, WorkerProcess, start_worker, wait_for


def test_a_killed_run_s_job_runs_again_after_the_heartbeat_timeout_not_its_time_limit(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch job with a 10-minute time limit, running in a worker
    env = {**worker_env, "BGJOBS_JOBS": '["tests.support.worker_jobs", "tests.support.batch_jobs"]',
           "BGJOBS_ACTORS__tests.count_things__TIME_LIMIT_MS": "600000"}  # fmt: skip
    monkeypatch.setenv("BGJOBS_JOBS", env["BGJOBS_JOBS"])
    batch_jobs.create_tables()
    first = start_worker(workers, env, processes=1, threads=2)
    trigger("tests.count_things", sleep="60")
    wait_for(lambda: len(runs.recent(job="tests.count_things")) == 1, timeout=30, what="the run to start")
    # When its worker is SIGKILLed and another takes over
    first.kill()
    start_worker(workers, env, processes=1, threads=2)
    # Then the run starts again once the dead worker's heartbeat has lapsed, not after 10 minutes
    took = wait_for(
        lambda: len(runs.recent(job="tests.count_things")) == 2, timeout=60, what="the run to start again"
    )
    assert took < HEARTBEAT_TIMEOUT_S * 5 + 10
    # And it was not re-sent once a second while it waited: at most a few looks, backing off
    assert workers[-1].output().count("is already running") <= 3
