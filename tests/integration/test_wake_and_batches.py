"""Wake-on-enqueue and pipelined batches on a real Redis."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from bgjobs import InvalidPayload
from bgjobs.broker import build_broker
from bgjobs.redis_broker import WAKE_CAP, BgjobsRedisBroker
from bgjobs.runtime import set_broker
from bgjobs.settings import Settings, WorkerSettings
from tests.support import stub_jobs as jobs


def _message(i: int = 0, queue: str = "q") -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="a", args=(i,), kwargs={}, options={})


def _first_message(consumer: Any, deadline_s: float) -> tuple[Any, float]:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        message = next(consumer)
        if message is not None:
            return message, time.monotonic() - start
    raise AssertionError("no message")


def test_an_idle_consumer_is_woken_by_an_enqueue_long_before_its_poll_timeout(redis_url: str) -> None:
    # Given a consumer on an empty queue whose polling would wait 2 s between fetches
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    broker.declare_queue("q")
    consumer = broker.consume("q", prefetch=1, timeout=2_000)
    sender = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    threading.Timer(0.2, lambda: sender.enqueue(_message(7))).start()
    # When a message is enqueued 0.2 s later, then
    message, waited = _first_message(consumer, deadline_s=10)
    # Then it is received without waiting out the 2 s poll
    assert message.args == (7,)
    assert waited < 1.0


def test_a_message_enqueued_without_a_wake_token_is_still_fetched_by_polling(redis_url: str) -> None:
    stock = RedisBroker(url=redis_url)
    stock.declare_queue("q")
    stock.enqueue(_message(1))  # Dramatiq's own enqueue: no wake token
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    broker.declare_queue("q")
    message, _ = _first_message(broker.consume("q", prefetch=1, timeout=200), deadline_s=5)
    assert message.args == (1,)


def test_the_wake_list_stays_bounded(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    broker.declare_queue("q")
    broker.enqueue_many([_message(i) for i in range(1_000)])
    for i in range(10):
        broker.enqueue(_message(i))
    assert client.llen("dramatiq:q.wake") == WAKE_CAP
    assert client.llen("dramatiq:q") == 1_010


def test_delayed_messages_go_to_the_delay_queue_without_wake_tokens(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings())
    broker.declare_queue("q")
    message = broker.enqueue(_message(), delay=60_000)
    assert message.queue_name == "q.DQ"
    assert message.options["eta"] > time.time() * 1000 + 50_000
    assert client.llen("dramatiq:q.DQ") == 1
    assert client.exists("dramatiq:q.DQ.wake") == 0


class _Counting(Middleware):  # type: ignore[misc]
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.events.append("before")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.events.append("after")


def test_send_many_writes_dramatiq_messages_in_order_with_middleware_seeing_each(redis_url: str) -> None:
    # Given bgjobs's broker with a middleware that counts enqueue hooks
    counting = _Counting()
    broker = build_broker(Settings(broker_url=redis_url))
    broker.add_middleware(counting)
    set_broker(broker)
    # When 1,234 payloads are sent at once (three batches)
    sent = jobs.flaky.send_many([{"key": f"k{i}"} for i in range(1_234)])
    # Then every message is stored in Dramatiq's format, in order, and a stock consumer reads them
    assert len(sent) == 1_234
    assert counting.events == ["before"] * 1_234 + ["after"] * 1_234
    stock = RedisBroker(url=redis_url)
    stock.declare_queue("default")
    consumer = stock.consume("default", prefetch=2_000, timeout=100)
    received = []
    while len(received) < 1_234:
        message = next(consumer)
        if message is not None:
            received.append(message.args[0]["key"])
    assert received == [f"k{i}" for i in range(1_234)]
    assert len({m.message_id for m in sent}) == 1_234
    assert len({m.options["redis_message_id"] for m in sent}) == 1_234


def test_send_many_enqueues_nothing_when_one_payload_is_invalid(redis_url: str) -> None:
    set_broker(build_broker(Settings(broker_url=redis_url)))
    payloads: list[dict[str, object]] = [{"key": "a"}, {"key": "b", "failures": "many"}, {"key": "c"}]
    with pytest.raises(InvalidPayload, match="failures"):
        jobs.flaky.send_many(payloads)
    assert redis.Redis.from_url(redis_url).llen("dramatiq:default") == 0
