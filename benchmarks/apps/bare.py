"""The baseline: a stock Dramatiq Redis broker and a plain actor."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BGJOBS_BROKER_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=0)
def noop(payload: dict[str, object]) -> None:
    """Does nothing: the benchmark measures the machinery around it."""
