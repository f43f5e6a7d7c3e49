"""No-op jobs and a callback for ``benchmarks/batches.py`` (the worker loads them through
``BGJOBS_JOBS``); the callback and the timed jobs write their clock to the benchmark's Redis."""

import os
import time

import redis

import bgjobs


class Noop(bgjobs.Payload):
    id: int
    name: str


_client = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


@bgjobs.actor(queue="default")
def noop(payload: Noop) -> None:
    """Does nothing: the benchmark measures the machinery around it."""


@bgjobs.actor(queue="default")
def stamped(payload: Noop) -> None:
    """Notes when it finished, for the callback's latency."""
    _redis().rpush("bench:last", repr(time.time()))


@bgjobs.actor(queue="default")
def finished(payload: Noop) -> None:
    """A batch's on_complete: notes when it started."""
    _redis().set("bench:finished", repr(time.time()))


@bgjobs.actor(queue="default")
def counted(payload: Noop) -> None:
    """Counts its runs (a job run twice after a kill shows twice)."""
    _redis().hincrby(f"bench:runs:{payload.name}", str(payload.id), 1)
    time.sleep(0.002)


@bgjobs.actor(queue="default")
def tally(payload: Noop) -> None:
    """A batch's on_complete that counts its own runs."""
    _redis().incr(f"bench:callbacks:{payload.name}")


@bgjobs.actor(queue="flows")
def stepped(payload: Noop) -> int:
    """A workflow's step (on a queue of its own, to run beside the batch, not behind it): counts
    its runs and returns its id for the stage after it."""
    _redis().hincrby(f"bench:runs:{payload.name}", str(payload.id), 1)
    time.sleep(0.02)
    return payload.id


@bgjobs.actor(queue="flows")
def gathered(payload: Noop) -> None:
    """A workflow's last step: notes the ids it read from the stages before it (every run)."""
    ids = sorted(i for stage in bgjobs.workflow_results() for i in stage)
    _redis().rpush(f"bench:gathered:{payload.name}", ",".join(map(str, ids)))
