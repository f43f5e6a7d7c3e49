"""The same probe as a bgjobs typed actor."""

import os
import time

import redis

import bgjobs

_client = redis.Redis.from_url(os.environ["BGJOBS_BROKER_URL"])


class Probe(bgjobs.Payload):
    run: str
    sent_at: float  # a Unix timestamp, not money


@bgjobs.actor(queue="default", max_retries=0)
def probe(payload: Probe) -> None:
    _client.rpush(f"latency:{payload.run}", time.time() - payload.sent_at)
