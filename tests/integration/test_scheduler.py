"""The scheduler as real processes on a real Redis: one leader, exactly-once ticks, failover."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from bgjobs import db
from tests.support.scheduler import Scheduler
from tests.support.workers import ROOT, wait_for

LOCK_TIMEOUT_S = 2


@pytest.fixture
def scheduler_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    db.upgrade(db.engine_for(f"sqlite:///{tmp_path / 'jobs.db'}"))  # the scheduler checks the revision
    return {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "BGJOBS_JOBS": '["tests.support.batch_jobs"]',
        "BGJOBS_SCHEDULER__LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S),
        "BGJOBS_SCHEDULER__LOCK_REFRESH_S": "1",
        "BGJOBS_SCHEDULE__OUTBOX_RELAY": "",
        "BGJOBS_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def schedulers() -> Iterator[list[Scheduler]]:
    started: list[Scheduler] = []
    yield started
    for s in started:
        s.kill()
        Path(s.log.name).unlink(missing_ok=True)


def ticks(client: redis.Redis) -> list[str]:
    """The scheduled_for second of every tests.tick message waiting in the queue."""
    found = []
    for raw in client.hvals("dramatiq:default.msgs"):
        message = json.loads(raw)
        if message["actor_name"] == "tests.tick":
            payload = message["args"][0]
            assert payload["trigger"] == "cron"
            found.append(payload["scheduled_for"])
    return sorted(found)


def test_two_schedulers_fire_each_tick_once_and_the_follower_takes_over(
    scheduler_env: dict[str, str], schedulers: list[Scheduler], redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    # Given a leader and a follower
    leader = Scheduler(scheduler_env)
    schedulers.append(leader)
    wait_for(lambda: len(ticks(client)) >= 1, timeout=30, what="the leader's first tick")
    follower = Scheduler(scheduler_env)
    schedulers.append(follower)
    # When both run for several ticks
    seen = len(ticks(client))
    wait_for(lambda: len(ticks(client)) >= seen + 4, timeout=20, what="four more ticks")
    before_kill = ticks(client)
    # Then each tick was sent once: one message per second, never two for the same second
    assert max(Counter(before_kill).values()) == 1
    assert len(before_kill) >= 4  # about one a second (a tick late past the grace time is skipped)
    # When the leader is killed
    leader.kill()
    count_at_kill = len(ticks(client))
    # Then the follower fires within the lock timeout: the lock expires, the follower's 0.5 s
    # poll takes it, and its 1 s interval fires.
    took_over = wait_for(
        lambda: len(ticks(client)) > count_at_kill, timeout=LOCK_TIMEOUT_S + 10, what="takeover"
    )
    assert took_over <= LOCK_TIMEOUT_S + 3
    wait_for(lambda: len(ticks(client)) > count_at_kill + 1, timeout=10, what="the follower ticking on")
    after = ticks(client)
    assert max(Counter(after).values()) == 1
    assert len(after) > count_at_kill + 1  # and it keeps ticking
    assert follower.proc.poll() is None
    # And each said what it did: the cron table, leading or standing by, every tick it fired
    first, second = leader.output(), follower.output()
    assert "cron: tests.tick" in first and "scheduler lock acquired; firing" in first
    assert "scheduled tests.tick for " in first
    assert "standing by: another scheduler holds the lock" in second
    assert second.index("standing by") < second.index("scheduler lock acquired")
    assert "scheduled tests.tick for " in second


GRID_S = 4


def _grid(client: redis.Redis) -> list[float]:
    """The epoch second of every tick sent, in order."""
    return [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in ticks(client)]


def _just_before_a_tick(lead_s: float) -> None:
    """Sleep until ``lead_s`` before the next instant of the ``@every GRID_S s`` grid."""
    wait = GRID_S - time.time() % GRID_S - lead_s
    time.sleep(wait if wait > 0 else wait + GRID_S)


def _assert_every_tick_once(sent: list[float]) -> None:
    assert len(sent) == len(set(sent)), f"a tick was sent twice: {sent}"
    gaps = {b - a for a, b in itertools.pairwise(sent)}
    assert gaps == {GRID_S}, f"a tick was skipped or off the grid: {sent}"


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_every_tick_fires_exactly_once_when_the_leader_dies_or_stalls_just_before_it(
    scheduler_env: dict[str, str], schedulers: list[Scheduler], redis_url: str, how: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    env = {**scheduler_env, "BGJOBS_SCHEDULE__TESTS_TICK": f"@every {GRID_S}s"}
    # Given a leader that has fired, and a follower waiting for the lock
    leader = Scheduler(env)
    schedulers.append(leader)
    wait_for(lambda: len(ticks(client)) >= 1, timeout=30, what="the leader's first tick")
    follower = Scheduler(env)
    schedulers.append(follower)
    # When the leader dies (or stops) half a second before a tick, and the lock outlives the tick
    _just_before_a_tick(0.5)
    at_stop = len(ticks(client))
    if how == "killed":
        leader.kill()
    else:
        os.killpg(leader.proc.pid, signal.SIGSTOP)
        # the follower takes over while it is stopped, and fires a tick
        wait_for(lambda: "scheduler lock acquired" in follower.output() and len(ticks(client)) > at_stop,
                 timeout=60, what="the follower to take over")  # fmt: skip
        os.killpg(leader.proc.pid, signal.SIGCONT)  # ... and then it wakes up still thinking it leads
    # Then the follower fires the missed tick, and every tick after it, each exactly once
    wait_for(lambda: len(ticks(client)) >= at_stop + 3, timeout=60, what="3 ticks")
    # (one tick more: a second copy of any tick before it would be in by then)
    wait_for(lambda: len(ticks(client)) >= at_stop + 4, timeout=60, what="a fourth tick")
    _assert_every_tick_once(_grid(client))
    assert follower.proc.poll() is None
    if how == "paused":
        assert leader.proc.poll() is None, "the resumed leader should wait for the lock again"
        assert "lost the scheduler lock" in leader.output()


def test_a_bad_cron_string_stops_the_scheduler_naming_the_job(scheduler_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "scheduler"],
        env={**os.environ, **scheduler_env, "PYTHONPATH": str(ROOT),
             "BGJOBS_SCHEDULE__TESTS_TICK": "0 8 * * 1"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "schedule of 'tests.tick' is '0 8 * * 1': use literal weekdays" in proc.stderr


def test_trigger_and_runs_commands(scheduler_env: dict[str, str], redis_url: str) -> None:
    env = {**os.environ, **scheduler_env, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "bgjobs.cli"]
    unknown = subprocess.run([*cli, "trigger", "nope"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert unknown.returncode == 2
    assert "known jobs:" in unknown.stderr and "tests.count_things" in unknown.stderr
    done = subprocess.run(
        [*cli, "trigger", "tests.count_things", "--arg", "n=4"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    message_id = done.stdout.strip()
    stored = [json.loads(m) for m in redis.Redis.from_url(redis_url).hvals("dramatiq:default.msgs")]
    assert [(m["message_id"], m["args"][0]["args"]) for m in stored] == [(message_id, {"n": "4"})]


def test_the_scheduler_outlives_a_redis_outage_and_fires_again_after_it(
    scheduler_env: dict[str, str], schedulers: list[Scheduler]
) -> None:
    from bgjobs.embedded import RedisServer, free_port

    # Given a scheduler leading on a Redis of its own
    port = free_port()
    server = RedisServer(port=port).start()
    try:
        leader = Scheduler({**scheduler_env, "BGJOBS_BROKER_URL": server.url})
        schedulers.append(leader)
        wait_for(lambda: len(ticks(redis.Redis.from_url(server.url))) >= 1, timeout=30, what="a first tick")
        # When Redis goes away for a few seconds, and comes back (empty, as after a restart)
        server.stop()
        wait_for(lambda: "Retrying; next report in" in leader.output(), timeout=60, what="the outage")
        assert leader.proc.poll() is None, leader.output()
    finally:
        server.stop()
    with RedisServer(port=port) as again:
        # Then the same scheduler takes the lock again and fires, having said what happened
        wait_for(lambda: len(ticks(redis.Redis.from_url(again.url))) >= 1, timeout=30, what="ticks after")
        assert leader.proc.poll() is None
        assert "Redis" in leader.output() and "Traceback" not in leader.output()


def test_a_scheduler_with_an_empty_table_says_so_and_how_to_fill_it(
    scheduler_env: dict[str, str], schedulers: list[Scheduler]
) -> None:
    empty = {**scheduler_env, "BGJOBS_JOBS": "[]", "BGJOBS_SCHEDULE__CLEANUP_DAILY": "",
             "BGJOBS_SCHEDULE__WEBHOOKS_ENDPOINT_HEALTH": ""}  # fmt: skip
    scheduler = Scheduler(empty)
    schedulers.append(scheduler)
    wait_for(lambda: "cron: the table is empty" in scheduler.output(), timeout=30, what="the line")
    assert ("this scheduler will fire nothing: declare a job with a schedule "
            "(@bgjobs.job(..., schedule=...)) in a module of BGJOBS_JOBS, set BGJOBS_SCHEDULE__<JOB>"
            ) in scheduler.output()  # fmt: skip
    assert "cron: cleanup.daily" not in scheduler.output()
