"""Pausing a queue: its workers stop taking messages within a second, until it is resumed.

The paused queues are a Redis set beside the queues themselves, so a pause holds across worker
restarts and deploys, and every consumer reads it on its own (``bgjobs.consumer``). Sending to a
paused queue still works: its messages wait, as they would for a busy worker.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from .consumer import PAUSED_KEY
from .deadletters import operated_broker, queues
from .errors import InvalidPayload

__all__ = ["pause", "paused", "resume"]


def _known(queue: str, broker: dramatiq.Broker | None) -> str:
    found = operated_broker(broker)
    names = queues(found)
    if queue not in names:
        raise InvalidPayload(f"queue: no queue named {queue!r}; the queues are {', '.join(names)}")
    return found.key(PAUSED_KEY)


def pause(queue: str, *, broker: dramatiq.Broker | None = None) -> bool:
    """Pause ``queue``; False if it was paused already.

    Raises:
        InvalidPayload: no such queue.
        ConfigurationError: the broker keeps no deployment state (the stub broker).
    """
    key = _known(queue, broker)
    return bool(operated_broker(broker).client.sadd(key, queue))


def resume(queue: str, *, broker: dramatiq.Broker | None = None) -> bool:
    """Resume ``queue``; False if it was not paused."""
    key = _known(queue, broker)
    return bool(operated_broker(broker).client.srem(key, queue))


def paused(*, broker: dramatiq.Broker | None = None) -> set[str]:
    """The paused queues."""
    found = operated_broker(broker)
    members: Any = found.client.smembers(found.key(PAUSED_KEY))
    return {q.decode() if isinstance(q, bytes) else str(q) for q in members}
