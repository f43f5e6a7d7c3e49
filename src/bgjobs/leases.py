"""Leases: locks that their holder keeps alive, so a killed holder's lock goes with its messages.

A lock held for a job's whole time limit outlives a SIGKILLed holder by that limit (10 minutes
by default, an hour for cleanup), while the holder's message is back on its queue after the
worker heartbeat timeout. A lease is taken for the heartbeat timeout and renewed by a thread
every third of it while the work runs: a live holder never loses it, a dead one frees it on
the same clock as its messages.

On the Redis broker a lease is a key holding its owner's token (``SET NX PX``; renew and
release only with the token). The stub broker keeps leases in this process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

__all__ = ["Lease"]

logger = logging.getLogger("bgjobs.leases")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_local_lock = threading.Lock()
#: Leases of the stub broker: key -> (token, expires at, monotonic seconds).
_local: dict[str, tuple[str, float]] = {}


class Lease:
    """One holder's claim on ``key`` for ``ttl_ms`` at a time."""

    def __init__(self, broker: Any, key: str, *, ttl_ms: int) -> None:
        self.client = getattr(broker, "client", None)
        self.key = f"{broker.namespace}:{key}" if self.client is not None else key
        self.ttl_ms = ttl_ms
        self.token = uuid4().hex

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when taken."""
        if self.client is not None:
            return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        now = time.monotonic()
        with _local_lock:
            held = _local.get(self.key)
            if held is not None and held[1] > now:
                return False
            _local[self.key] = (self.token, now + self.ttl_ms / 1000)
            return True

    def renew(self) -> bool:
        """Extend the lease by its ttl; False when it was lost (expired and maybe taken by another)."""
        if self.client is not None:
            return bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        with _local_lock:
            held = _local.get(self.key)
            if held is None or held[0] != self.token:
                return False
            _local[self.key] = (self.token, time.monotonic() + self.ttl_ms / 1000)
            return True

    def release(self) -> None:
        """Give the lease up, if this holder still has it."""
        if self.client is not None:
            self.client.eval(_RELEASE, 1, self.key, self.token)
            return
        with _local_lock:
            if (held := _local.get(self.key)) is not None and held[0] == self.token:
                del _local[self.key]

    def remaining_ms(self) -> int:
        """How long the current holder's lease still runs (0 when free)."""
        if self.client is not None:
            return max(0, int(self.client.pttl(self.key)))
        with _local_lock:
            held = _local.get(self.key)
        return 0 if held is None else max(0, int((held[1] - time.monotonic()) * 1000))

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Renew the (acquired) lease every third of its ttl until the block ends, then release it."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew():
                        logger.error("lease %s was lost while held", self.key)
                        return
                except Exception:  # a dropped connection: try again at the next beat
                    logger.warning("could not renew lease %s", self.key, exc_info=True)

        thread = threading.Thread(target=renew, name=f"lease:{self.key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.release()
