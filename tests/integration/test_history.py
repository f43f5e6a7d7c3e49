"""The per-minute queue history behind the console's sparklines, on a real Redis."""

from __future__ import annotations

import redis

from bgjobs import history
from bgjobs.redis_broker import queue_sizes

QUEUES = ["default", "webhooks"]


def _ready(client: redis.Redis) -> dict[str, int]:
    """Each queue's ready length, as a worker's maintenance pass reads it."""
    return {q: s.ready for q, s in queue_sizes(client, "dramatiq", QUEUES).items()}


def test_finished_jobs_and_ready_lengths_land_in_their_minute_and_expire(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("dramatiq:webhooks", "a", "b", "c")
    minute = 29_000_000 * 60.0
    for _ in range(5):
        history.finished("webhooks")
    history.finished("default")
    history.record(client, "dramatiq", _ready(client), now=minute + 10)
    history.finished("webhooks")  # a second process, or the next pass, in the same minute
    client.rpush("dramatiq:webhooks", "x")
    history.record(client, "dramatiq", None, now=minute + 40)  # no sizes read on this pass
    client.lpop("dramatiq:webhooks")
    client.rpush("dramatiq:webhooks", "d")
    history.record(client, "dramatiq", _ready(client), now=minute + 70)  # the next minute

    found = history.series(client, "dramatiq", QUEUES, minutes=3, now=minute + 70)
    assert found["webhooks"] == {"done": [0, 6, 0], "ready": [0, 3, 4]}
    assert found["default"] == {"done": [0, 1, 0], "ready": [0, 0, 0]}
    ttl = client.ttl(f"dramatiq:bgjobs-history:done:{int(minute // 60)}")
    assert 0 < ttl <= history.KEEP_S
