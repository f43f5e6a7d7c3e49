"""Stock Dramatiq actor that records its send-to-start latency in Redis."""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BGJOBS_BROKER_URL"])
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(os.environ["BGJOBS_BROKER_URL"])


@dramatiq.actor(queue_name="default", max_retries=0)
def probe(payload: dict[str, object]) -> None:
    _client.rpush(f"latency:{payload['run']}", time.time() - float(payload["sent_at"]))  # type: ignore[arg-type]
