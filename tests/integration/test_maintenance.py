"""The maintenance script on a real Redis: recovery, the poison guard, heartbeats, expiry."""

from __future__ import annotations

import time

import dramatiq
import redis

from bgjobs.redis_broker import BgjobsRedisBroker
from bgjobs.settings import WorkerSettings

SETTINGS = WorkerSettings(heartbeat_timeout_ms=1_000, max_deliveries=2, dead_message_ttl_ms=60_000)


def _broker(url: str) -> BgjobsRedisBroker:
    broker = BgjobsRedisBroker(url=url, worker=SETTINGS)
    broker.declare_queue("q")
    return broker


def _fetch_and_die(url: str) -> str:
    """A worker that takes the message and then goes silent."""
    dying = _broker(url)
    message = next(dying.consume("q", prefetch=1, timeout=100))
    return str(message.options["redis_message_id"])


def test_a_dead_workers_message_is_recovered_then_dead_lettered_after_max_deliveries(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    survivor = _broker(redis_url)
    survivor.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))

    # First delivery dies: after the heartbeat timeout, the message is back on the queue.
    rid = _fetch_and_die(redis_url)
    assert survivor.run_maintenance().recovered == 0  # the dead worker is not yet timed out
    time.sleep(1.1)
    assert survivor.run_maintenance().recovered == 1
    assert client.lrange("dramatiq:q", 0, -1) == [rid.encode()]

    # Second delivery dies too: max_deliveries=2, so it is dead-lettered with the reason.
    assert _fetch_and_die(redis_url) == rid
    time.sleep(1.1)
    report = survivor.run_maintenance()
    assert (report.recovered, report.dead_lettered) == (0, 1)
    assert client.llen("dramatiq:q") == 0
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [rid.encode()]
    assert b"delivered 2 times" in client.hget("dramatiq:q.XQ.reasons", rid)
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 0


def test_maintenance_heartbeats_so_a_busy_worker_is_not_declared_dead(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    busy = _broker(redis_url)
    busy.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    next(busy.consume("q", prefetch=1, timeout=100))
    for _ in range(3):  # a long job: no fetches, but the maintenance thread keeps beating
        time.sleep(0.5)
        busy.run_maintenance()
    other = _broker(redis_url)
    assert other.run_maintenance().recovered == 0
    assert client.scard(f"dramatiq:__acks__.{busy.broker_id}.q") == 1


def test_delivery_counts_of_finished_messages_are_forgotten(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    survivor = _broker(redis_url)
    survivor.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    _fetch_and_die(redis_url)
    time.sleep(1.1)
    survivor.run_maintenance()
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 1
    consumer = survivor.consume("q", prefetch=1, timeout=100)
    consumer.ack(next(consumer))
    survivor.run_maintenance()
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 0


def test_old_dead_letters_expire_with_their_reasons(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = _broker(redis_url)
    client.zadd("dramatiq:q.XQ", {"old": 1, "new": int(time.time() * 1000)})
    client.hset("dramatiq:q.XQ.msgs", mapping={"old": "{}", "new": "{}"})
    client.hset("dramatiq:q.XQ.reasons", mapping={"old": "{}", "new": "{}"})
    broker.run_maintenance()
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [b"new"]
    assert client.hkeys("dramatiq:q.XQ.reasons") == [b"new"]
