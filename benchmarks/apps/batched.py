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
