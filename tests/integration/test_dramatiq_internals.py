"""What bgjobs relies on inside Dramatiq's Redis and RabbitMQ brokers. A failure here means a Dramatiq
release changed its key layout, script arguments or consumer: update maintenance.lua or
rabbitmq_broker.py before upgrading."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bgjobs.redis_broker import BgjobsRedisBroker
from bgjobs.settings import WorkerSettings
from tests.support.rabbitmq import RabbitNode


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


def test_the_consumer_internals_wake_on_enqueue_relies_on_are_there(redis_url: str) -> None:
    import inspect

    from dramatiq.brokers.redis import _RedisConsumer

    assert list(inspect.signature(_RedisConsumer.__init__).parameters) == [
        "self", "broker", "queue_name", "prefetch", "timeout",
    ]  # fmt: skip
    consumer = RedisBroker(url=redis_url).consume("q", prefetch=3, timeout=100)
    for attribute in ("message_cache", "queued_message_ids", "misses", "prefetch", "timeout"):
        assert hasattr(consumer, attribute), attribute
    assert consumer.outstanding_message_count == 0
    assert isinstance(consumer, _RedisConsumer)


def test_bgjobs_enqueue_writes_what_dramatiq_reads(redis_url: str) -> None:
    bgjobs_broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    bgjobs_broker.declare_queue("q")
    sent = bgjobs_broker.enqueue(
        dramatiq.Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={})
    )
    stock = RedisBroker(url=redis_url)
    stock.declare_queue("q")
    received = next(stock.consume("q", prefetch=1, timeout=100))
    assert received is not None
    assert received.message_id == sent.message_id
    assert received.options["redis_message_id"] == sent.options["redis_message_id"]


def test_the_rabbitmq_consumer_internals_bgjobs_relies_on_are_there(
    rabbit_vhost: RabbitNode, redis_url: str
) -> None:
    """``BgjobsRabbitmqBroker``'s consumer replaces ``__next__`` and ``nack`` of Dramatiq's: it uses
    the pika iterator, the known tags, ``_nack`` and the delivery's ``redelivered`` flag."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer

    stock = RabbitmqBroker(url=rabbit_vhost.url())
    stock.declare_queue("q")
    stock.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    consumer = stock.consume("q", prefetch=1, timeout=1000)
    assert isinstance(consumer, _RabbitmqConsumer)
    assert {"iterator", "known_tags", "channel", "connection"} <= set(vars(consumer))
    assert callable(consumer._nack)
    method, _properties, body = next(consumer.iterator)
    assert method.redelivered is False and dramatiq.Message.decode(body).queue_name == "q"
    assert len(stock.get_queue_message_counts("q")) == 3
    consumer.close()
    stock.close()

    # And bgjobs's consumer keeps a failed message in the coordination store, not in RabbitMQ's XQ
    from bgjobs.rabbitmq_broker import BgjobsRabbitmqBroker

    client = redis.Redis.from_url(redis_url)
    ours = BgjobsRabbitmqBroker(url=rabbit_vhost.url(), client=client, worker=WorkerSettings())
    ours.declare_queue("q")
    mine = ours.consume("q", prefetch=1, timeout=1000)
    fetched = next(mine)  # the message the stock consumer left unacked, redelivered
    assert fetched is not None and fetched.redelivered
    mine.nack(fetched)
    mine.close()
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [fetched.message_id.encode()]
    assert ours.get_queue_message_counts("q") == (0, 0, 0)
    ours.close()
