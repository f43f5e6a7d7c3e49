"""What a worker's Redis consumer had taken when its connection broke is run, once, by the same
live worker: the batch it had not handed out, a fetch whose reply was lost, a delayed message
Dramatiq forgets on a connection error. Real Redis; the broken connection is the one fault made up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.errors import ConnectionClosed

from bgjobs.redis_broker import BgjobsRedisBroker
from bgjobs.settings import WorkerSettings


def _send(broker: BgjobsRedisBroker, count: int, *, delay: int | None = None) -> None:
    for i in range(count):
        message = dramatiq.Message(queue_name="q", actor_name="a", args=(i,), kwargs={}, options={})
        broker.enqueue(message, delay=delay)


def _next(consumer: Any, deadline_s: float = 10) -> Any:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError(f"no message within {deadline_s} s")


def _restart(broker: BgjobsRedisBroker, consumer: Any, queue: str = "q", prefetch: int = 3) -> Any:
    """As Dramatiq's consumer thread does after an error: close the consumer, open another."""
    consumer.close()
    return broker.consume(queue, prefetch=prefetch, timeout=100)


def _taken(client: redis.Redis, broker: BgjobsRedisBroker, queue: str = "q") -> set[bytes]:
    return set(client.smembers(f"dramatiq:__acks__.{broker.broker_id}.{queue}"))


@pytest.fixture
def broker(redis_url: str) -> Iterator[BgjobsRedisBroker]:
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    broker.declare_queue("q")
    yield broker
    broker.close()


def test_a_fetch_whose_reply_the_broken_connection_lost_is_run_by_the_next_consumer(
    broker: BgjobsRedisBroker, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _send(broker, 4)
    consumer = broker.consume("q", prefetch=2, timeout=100)
    # Given one message a worker thread is running and one it finished
    held = _next(consumer)
    consumer.ack(_next(consumer))
    # When the next fetch runs in Redis but its reply never arrives
    fetch = consumer._fetch

    def reply_lost(**kwargs: Any) -> Any:
        fetch(**kwargs)
        raise redis.ConnectionError("Connection closed by server.")

    consumer._fetch = reply_lost
    with pytest.raises(ConnectionClosed):
        _next(consumer)
    assert len(_taken(client, broker)) == 2  # the held one and the one whose reply was lost
    # Then the next consumer runs the lost one and the rest, and not the held one again; the lost
    # one comes marked as put back after a worker took it (it may have run: a slot is checked again)
    consumer = _restart(broker, consumer, prefetch=2)
    rest = sorted([_next(consumer), _next(consumer)], key=lambda m: m.args[0])
    assert [(m.args[0], m.redelivered) for m in rest] == [(2, True), (3, False)]
    for message in [*rest, held]:  # the held one is acked through the new consumer, as Dramatiq does
        consumer.ack(message)
    consumer.send_acks()  # as its consumer thread does with its next call
    assert _taken(client, broker) == set()
    assert client.hlen("dramatiq:q.msgs") == 0
    assert next(consumer) is None


def test_acks_go_with_the_consumer_s_next_call_and_a_restart_before_it_keeps_them_acked(
    broker: BgjobsRedisBroker, redis_url: str
) -> None:
    """A busy worker sends the acks of the jobs done since its last call together, with its next
    fetch, instead of a call per job. Until then they stay in flight: a consumer restarted before
    that call puts none of them back, and the next consumer sends them."""
    client = redis.Redis.from_url(redis_url)
    _send(broker, 3)
    consumer = broker.consume("q", prefetch=3, timeout=100)
    for message in [_next(consumer) for _ in range(3)]:
        consumer.ack(message)
    assert len(_taken(client, broker)) == 3 and client.hlen("dramatiq:q.msgs") == 3  # not sent yet

    # When the connection breaks before the next call: the closing consumer cannot send them
    def broken(**kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    consumer._fetch = broken
    consumer = _restart(broker, consumer)
    # Then the next consumer puts none back (they are still in flight), and its first call acks them
    assert next(consumer) is None
    assert _taken(client, broker) == set()
    assert client.hlen("dramatiq:q.msgs") == 0 and client.llen("dramatiq:q") == 0
    assert broker.in_flight["q"] == set()


def test_what_a_restarted_consumer_had_fetched_and_not_handed_out_is_run_once(
    broker: BgjobsRedisBroker, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _send(broker, 3)
    consumer = broker.consume("q", prefetch=3, timeout=100)
    held = _next(consumer)  # fetches all three, hands out one
    # When the consumer restarts with two fetched and not handed out
    consumer = _restart(broker, consumer)
    # Then those two come again, the held one does not
    rest = [_next(consumer), _next(consumer)]
    assert sorted((m.args[0], m.redelivered) for m in rest) == [(1, True), (2, True)]
    assert next(consumer) is None
    for message in [held, *rest]:
        consumer.nack(message) if message is held else consumer.ack(message)
    consumer.send_acks()
    assert _taken(client, broker) == set()
    assert client.zcard("dramatiq:q.XQ") == 1  # the nacked one went to the dead letters


def test_a_delayed_message_dramatiq_forgot_on_a_connection_error_is_released_again(
    broker: BgjobsRedisBroker, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _send(broker, 1, delay=60_000)
    consumer = broker.consume("q.DQ", prefetch=1, timeout=100)
    delayed = _next(consumer)  # Dramatiq keeps it in memory until its time, and drops that memory
    # When the delay queue's consumer restarts
    consumer = _restart(broker, consumer, queue="q.DQ", prefetch=1)
    # Then it takes the delayed message again
    again = _next(consumer)
    assert again.message_id == delayed.message_id
    consumer.ack(again)
    assert _taken(client, broker, "q.DQ") == set()
