"""Cross-process coordination behind one small interface: leases (the scheduler's leader lock
among them), dedupe keys, wake-up lists, short mutexes, marks, and counters.

Families ask ``runtime.current().coordination`` instead of reaching for a Redis client, so a
deployment without Redis gets a backend of its own in one place, not a ``getattr(broker,
"client", None)`` fallback in each family. Today there are two backends:

- :class:`RedisCoordination`, the deployment's Redis (the Redis broker's client and namespace);
- :class:`LocalCoordination`, in this process only: the stub broker's, and RabbitMQ's until it has
  a store of its own (docs/guarantees.md says what that weakens).

A **lease** is a lock its holder keeps alive: taken for a short ttl (one worker heartbeat timeout)
and renewed by a thread every third of it while the work runs, so a live holder never loses it
and a SIGKILLed one frees it on the same clock as its messages. A lock held for a job's whole time
limit outlived a killed holder by that limit (10 minutes, an hour for cleanup).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import uuid4

__all__ = [
    "Coordination", "Held", "Lease", "LocalCoordination", "RedisCoordination", "coordination_for",
    "one_per_store",
]  # fmt: skip

logger = logging.getLogger("bgjobs.coordination")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(abc.ABC):
    """One holder's claim on a key for ``ttl_ms`` at a time."""

    def __init__(self, key: str, ttl_ms: int) -> None:
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = uuid4().hex

    @abc.abstractmethod
    def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when taken."""

    @abc.abstractmethod
    def renew(self) -> bool:
        """Extend the lease by its ttl; False when it was lost (expired, maybe taken by another)."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lease up, if this holder still has it."""

    @contextlib.contextmanager
    def kept(self) -> Iterator[Held]:
        """Renew the (acquired) lease every third of its ttl until the block ends, then release it.

        The block gets a :class:`Held`: its ``check()`` before each port call stops the holder
        (``LeaseLost``) once the lease is not its own, where a renewal thread that only logged the
        loss let a payout's gateway call go ahead beside the new holder's."""
        done, held = threading.Event(), Held(self)

        def renew() -> None:
            while not done.wait(self.ttl_ms / 3000):
                try:
                    if not held.renewed(self.renew()):
                        logger.error("lease %s was lost while held", self.key)
                        return
                except Exception:  # a dropped connection: try again at the next beat
                    logger.warning("could not renew lease %s", self.key, exc_info=True)

        thread = threading.Thread(target=renew, name=f"lease:{self.key}", daemon=True)
        thread.start()
        try:
            yield held
        finally:
            done.set()
            thread.join()
            with contextlib.suppress(Exception):  # a store that does not answer: it expires
                self.release()


class Held:
    """A kept lease, as its holder sees it."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = threading.Event()
        self._sure_until = time.monotonic() + lease.ttl_ms / 1000

    def renewed(self, kept: bool) -> bool:
        if kept:
            self._sure_until = time.monotonic() + self.lease.ttl_ms / 1000
        else:
            self.lost.set()
        return kept

    def check(self) -> None:
        """Before a port call: renew the lease, or stop here.

        Raises:
            LeaseLost: another holder may have the lease; or the store has not answered for the
                whole ttl, so it has expired.
        """
        from .errors import LeaseLost

        if not self.lost.is_set():
            try:
                self.renewed(self.lease.renew())
            except Exception:
                if time.monotonic() >= self._sure_until:
                    self.lost.set()
        if self.lost.is_set():
            raise LeaseLost(f"the lease {self.lease.key} is no longer this worker's (it expired while the "
                            "worker was held up); not going on with its work")  # fmt: skip


class Coordination(abc.ABC):
    """What bgjobs's families coordinate through across worker processes."""

    @abc.abstractmethod
    def lease(self, name: str, *, ttl_ms: int) -> Lease:
        """A lease on ``name`` (not yet taken)."""

    @abc.abstractmethod
    def first_time(self, name: str, *, ttl_s: int) -> bool:
        """True for the first caller with ``name`` within ``ttl_s`` (a dedupe key), False after."""

    @abc.abstractmethod
    def wake(self, name: str, *, cap: int) -> None:
        """Leave a wake-up token on list ``name`` (at most ``cap`` wait there)."""

    @abc.abstractmethod
    def wait(self, name: str, *, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a wake-up token on ``name`` (and take it)."""

    @abc.abstractmethod
    def mutex(self, name: str, *, ttl_s: int) -> contextlib.AbstractContextManager[bool]:
        """A short lock, yielding False when someone else holds it (it lapses after ``ttl_s``)."""

    @abc.abstractmethod
    def held(self, name: str) -> bool:
        """True while anyone holds the lease ``name`` (``bgjobs status`` asks if a scheduler leads)."""

    @abc.abstractmethod
    def marks(self, names: list[str]) -> list[str | None]:
        """The values last marked under ``names`` (None where never marked)."""

    @abc.abstractmethod
    def mark(self, name: str, value: str, *, ttl_s: int | None = None) -> None:
        """Record ``value`` under ``name``: for good (the scheduler's last tick of each job), or
        for ``ttl_s`` (an open circuit breaker)."""

    @abc.abstractmethod
    def count(self, name: str, *, ttl_s: int) -> int:
        """Add one to counter ``name`` (it lapses ``ttl_s`` after the last addition); the new value."""

    @abc.abstractmethod
    def forget(self, *names: str) -> None:
        """Remove marks and counters."""


class _RedisLease(Lease):
    def __init__(self, client: Any, key: str, ttl_ms: int) -> None:
        super().__init__(key, ttl_ms)
        self.client = client

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


class RedisCoordination(Coordination):
    """Coordination on the deployment's Redis, keys in the broker's namespace."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def lease(self, name: str, *, ttl_ms: int) -> Lease:
        return _RedisLease(self.client, self.key(name), ttl_ms)

    def first_time(self, name: str, *, ttl_s: int) -> bool:
        return bool(self.client.set(self.key(name), "1", nx=True, ex=ttl_s))

    def wake(self, name: str, *, cap: int) -> None:
        key = self.key(name)
        self.client.pipeline(transaction=False).lpush(key, "1").ltrim(key, 0, cap - 1).execute()

    def wait(self, name: str, *, timeout_s: float) -> None:
        self.client.blpop([self.key(name)], timeout=timeout_s)

    @contextlib.contextmanager
    def mutex(self, name: str, *, ttl_s: int) -> Iterator[bool]:
        lock = self.client.lock(name, timeout=ttl_s, blocking=False)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing to give back
                lock.release()

    def held(self, name: str) -> bool:
        return bool(self.client.exists(self.key(name)))

    def marks(self, names: list[str]) -> list[str | None]:
        if not names:
            return []
        return [None if v is None else v.decode() for v in self.client.mget([self.key(n) for n in names])]

    def mark(self, name: str, value: str, *, ttl_s: int | None = None) -> None:
        self.client.set(self.key(name), value, ex=ttl_s)

    def count(self, name: str, *, ttl_s: int) -> int:
        key = self.key(name)
        found = self.client.pipeline(transaction=False).incr(key).expire(key, ttl_s).execute()
        return int(found[0])

    def forget(self, *names: str) -> None:
        if names:
            self.client.delete(*(self.key(n) for n in names))


class _LocalLease(Lease):
    def __init__(self, home: LocalCoordination, key: str, ttl_ms: int) -> None:
        super().__init__(key, ttl_ms)
        self.home = home

    def acquire(self) -> bool:
        now = self.home.now()
        with self.home.lock:
            held = self.home.leases.get(self.key)
            if held is not None and held[1] > now:
                return False
            self.home.leases[self.key] = (self.token, now + self.ttl_ms / 1000)
            return True

    def renew(self) -> bool:
        with self.home.lock:
            held = self.home.leases.get(self.key)
            if held is None or held[0] != self.token:
                return False
            self.home.leases[self.key] = (self.token, self.home.now() + self.ttl_ms / 1000)
            return True

    def release(self) -> None:
        with self.home.lock:
            if (held := self.home.leases.get(self.key)) is not None and held[0] == self.token:
                del self.home.leases[self.key]


class LocalCoordination(Coordination):
    """Coordination within this process: right for the stub broker, weaker across processes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: key -> (holder's token, expires at in monotonic seconds)
        self.leases: dict[str, tuple[str, float]] = {}
        self.seen: dict[str, float] = {}
        self.tokens: dict[str, threading.Semaphore] = {}
        self.values: dict[str, str] = {}
        #: name -> when its value lapses (monotonic seconds); absent: kept for good.
        self.expiry: dict[str, float] = {}
        #: How far :meth:`advance` moved this store's clock past the machine's.
        self.offset_s = 0.0

    def now(self) -> float:
        """This store's clock, in monotonic seconds, which every lease, mark and count lapses by."""
        return time.monotonic() + self.offset_s

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for what this store keeps: a test of a cool-down or a lease's expiry
        moves time on instead of sleeping through it (and racing a busy machine's clock)."""
        with self.lock:
            self.offset_s += seconds

    def lease(self, name: str, *, ttl_ms: int) -> Lease:
        return _LocalLease(self, name, ttl_ms)

    def first_time(self, name: str, *, ttl_s: int) -> bool:
        now = self.now()
        with self.lock:
            if self.seen.get(name, 0) > now:
                return False
            self.seen[name] = now + ttl_s
            return True

    def _tokens(self, name: str) -> threading.Semaphore:
        with self.lock:
            return self.tokens.setdefault(name, threading.Semaphore(0))

    def wake(self, name: str, *, cap: int) -> None:
        self._tokens(name).release()

    def wait(self, name: str, *, timeout_s: float) -> None:
        self._tokens(name).acquire(timeout=timeout_s)

    @contextlib.contextmanager
    def mutex(self, name: str, *, ttl_s: int) -> Iterator[bool]:
        held = self.lease(name, ttl_ms=ttl_s * 1000)
        taken = held.acquire()
        try:
            yield taken
        finally:
            if taken:
                held.release()

    def held(self, name: str) -> bool:
        with self.lock:
            found = self.leases.get(name)
            return found is not None and found[1] > self.now()

    def marks(self, names: list[str]) -> list[str | None]:
        now = self.now()
        with self.lock:
            return [v if (v := self.values.get(n)) is not None and self.expiry.get(n, now + 1) > now else None
                    for n in names]  # fmt: skip

    def mark(self, name: str, value: str, *, ttl_s: int | None = None) -> None:
        with self.lock:
            self.values[name] = value
            if ttl_s is None:
                self.expiry.pop(name, None)
            else:
                self.expiry[name] = self.now() + ttl_s

    def count(self, name: str, *, ttl_s: int) -> int:
        now = self.now()
        with self.lock:
            n = int(self.values.get(name) or 0) if self.expiry.get(name, now + 1) > now else 0
            self.values[name], self.expiry[name] = str(n + 1), now + ttl_s
            return n + 1

    def forget(self, *names: str) -> None:
        with self.lock:
            for n in names:
                self.values.pop(n, None)
                self.expiry.pop(n, None)


_lock = threading.Lock()
_found: weakref.WeakKeyDictionary[Any, Coordination] = weakref.WeakKeyDictionary()


def coordination_for(broker: Any) -> Coordination:
    """The coordination backend of ``broker``: its Redis, or one local to this process."""
    with _lock:
        found = _found.get(broker)
        if found is None:
            client = getattr(broker, "client", None)
            found = (
                RedisCoordination(client, getattr(broker, "namespace", "dramatiq"))
                if client is not None else LocalCoordination()
            )  # fmt: skip
            _found[broker] = found
        return found


T = TypeVar("T")


def one_per_store(
    made: weakref.WeakKeyDictionary[Coordination, T], coordination: Coordination,
    redis: Callable[[RedisCoordination], T], local: Callable[[], T],
) -> T:  # fmt: skip
    """The object kept in ``made`` for ``coordination``'s store, made on first use (Redis-backed
    or in memory): per-key limits, the webhook lanes."""
    found = made.get(coordination)
    if found is None:
        found = redis(coordination) if isinstance(coordination, RedisCoordination) else local()
        made[coordination] = found
    return found
