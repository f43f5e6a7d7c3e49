"""No-op jobs with and without per-key limits, and timed ones for the fairness measurement."""

import os
import time

import redis

import bgjobs


class Tenant(bgjobs.Payload):
    tenant: str
    #: When it was sent (epoch seconds): a timed job records how long it waited to start.
    sent_at: float = 0.0


_client: redis.Redis | None = None


def _record(variant: str, payload: Tenant) -> None:
    global _client
    if payload.sent_at and payload.tenant == "small":
        _client = _client or redis.Redis.from_url(os.environ["BGJOBS_BROKER_URL"])
        _client.rpush(f"bench:waited:{variant}", (time.time() - payload.sent_at) * 1000)


@bgjobs.actor(queue="default")
def plain(payload: Tenant) -> None:
    """Does nothing, with no limits."""
    _record("plain", payload)


@bgjobs.actor(queue="default", concurrency=bgjobs.PerKey("tenant", limit=2),
              rate=bgjobs.PerKey("tenant", rate="100/s", burst=20))  # fmt: skip
def limited(payload: Tenant) -> None:
    """Does nothing, at most 2 at once and 100 starts a second per tenant."""
    _record("limited", payload)
