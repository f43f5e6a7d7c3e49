"""What bgjobs relies on inside Dramatiq's Redis broker. A failure here means a Dramatiq
release changed its key layout or script arguments: update maintenance.lua before upgrading."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bgjobs.redis_broker import BgjobsRedisBroker
from bgjobs.settings import WorkerSettings


def test_dramatiq_keeps_the_key_layout_maintenance_lua_expects(redis_url: str) -> None:
    broker = RedisBroker(url=redis_url)
    broker.declare_queue("q")
    client = redis.Redis.from_url(redis_url)
    message = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    enqueued = broker.enqueue(message)
    rid = enqueued.options["redis_message_id"]
    assert client.lrange("dramatiq:q", 0, -1) == [rid.encode()]
    assert client.hexists("dramatiq:q.msgs", rid)
    consumer = broker.consume("q", prefetch=1, timeout=100)
    fetched = next(consumer)
    assert client.smembers(f"dramatiq:__acks__.{broker.broker_id}.q") == {rid.encode()}
    assert client.zscore("dramatiq:__heartbeats__", broker.broker_id) is not None
    consumer.nack(fetched)
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [rid.encode()]
    assert client.hexists("dramatiq:q.XQ.msgs", rid)
    assert broker.maintenance_chance > 0  # stock Dramatiq: random maintenance that bgjobs turns off


def test_bgjobs_broker_turns_random_maintenance_off(redis_url: str) -> None:
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    assert broker.maintenance_chance == 0
    assert broker._should_do_maintenance("fetch") == 0
