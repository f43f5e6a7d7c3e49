"""Fair lanes: work waiting for the dispatcher, one lane per owner, taken in turn.

An item is a published message (its first attempts) or one attempt of one delivery (a retry, a
replay, a delivery whose turn has come), as its job's JSON. ``publish`` and the delivery job put
items in the owner's lane; the dispatcher takes batches by going round the owners with waiting
items, one item from each per turn. An owner who publishes 100,000 messages fills their own lane;
another owner's single message is in the next batch.

A batch taken is held under the taker's name (its Dramatiq message id) until its deliveries
are settled. A worker killed with a batch in hand leaves it held; Dramatiq redelivers the
taker's message, and the copy takes the held batch again before anything new.

Lane items are stored as ``<item>:<deliveries>``, so a batch is cut by deliveries, not items. On Redis
each operation is one script (one round trip); :class:`LocalLanes` does the same in memory for
the stub broker.
"""

from __future__ import annotations

import abc
import threading
import weakref
from collections import deque
from collections.abc import Iterable

from ..coordination import Coordination, RedisCoordination, one_per_store

__all__ = ["TRACE_SEPARATOR", "Lanes", "lanes_for"]

#: Between a message id and the trace context it was published in, in a lane item.
TRACE_SEPARATOR = "\x1f"
#: A held batch whose taker never came back is forgotten after this long (the sweep resends it).
HELD_TTL_S = 7 * 24 * 3600

_PUSH = """
redis.call('RPUSH', KEYS[3], unpack(ARGV, 2))
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
"""

_TAKE = """
local ring, owners, held = KEYS[1], KEYS[2], KEYS[3]
local prefix, budget = ARGV[1], tonumber(ARGV[2])
local skip = {}
for i = 4, #ARGV do skip[ARGV[i]] = true end
local out, total, skipped = {}, 0, 0
while total < budget do
  local owner = redis.call('LPOP', ring)
  if not owner then break end
  if skip[owner] then
    redis.call('RPUSH', ring, owner)
    skipped = skipped + 1
    if skipped >= redis.call('LLEN', ring) then break end
  else
  skipped = 0
  local lane = prefix .. owner
  local item = redis.call('LPOP', lane)
  if redis.call('LLEN', lane) > 0 then
    redis.call('RPUSH', ring, owner)
  else
    redis.call('SREM', owners, owner)
  end
  if item then
    local name, n = string.match(item, '^(.*):(%d+)$')
    out[#out + 1] = name
    total = total + tonumber(n)
  end
  end
end
if #out > 0 then
  redis.call('SADD', held, unpack(out))
  redis.call('EXPIRE', held, ARGV[3])
end
return out
"""


_ADOPT = """
local taken = redis.call('SMEMBERS', KEYS[1])
if #taken > 0 then
  redis.call('SADD', KEYS[2], unpack(taken))
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[1])
end
return taken
"""


def _item(item: str, deliveries: int) -> str:
    return f"{item}:{deliveries}"


class Lanes(abc.ABC):
    @abc.abstractmethod
    def push(self, owner: str | None, item: str, deliveries: int) -> None:
        """Queue an item (a message id, or a delivery job's JSON) in ``owner``'s lane."""

    @abc.abstractmethod
    def take(self, holder: str, *, deliveries: int, skip: Iterable[str] = ()) -> list[str]:
        """Items for about ``deliveries`` deliveries, one owner at a time, held by ``holder``; owners
        in ``skip`` (whose work already waits in the dispatcher) keep their turn."""

    @abc.abstractmethod
    def held(self, holder: str) -> list[str]:
        """The items ``holder`` took and has not settled (a redelivered taker's batch)."""

    @abc.abstractmethod
    def adopt(self, holder: str, *, into: str) -> list[str]:
        """Move ``holder``'s held batches to ``into`` (a running dispatcher); returns their ids."""

    @abc.abstractmethod
    def settle(self, holder: str, items: list[str]) -> None:
        """These items' deliveries are recorded, or handed to a job of their own."""

    @abc.abstractmethod
    def waiting(self) -> bool:
        """Whether any lane holds an item."""


class RedisLanes(Lanes):
    def __init__(self, coordination: RedisCoordination) -> None:
        self.client = coordination.client
        self.prefix = coordination.key("webhooks:lane:")
        self.ring, self.owners = coordination.key("webhooks:ring"), coordination.key("webhooks:owners")
        self.held_prefix = coordination.key("webhooks:held:")
        self._push = self.client.register_script(_PUSH)
        self._take = self.client.register_script(_TAKE)
        self._adopt = self.client.register_script(_ADOPT)

    def push(self, owner: str | None, item: str, deliveries: int) -> None:
        name = owner or ""
        self._push(keys=[self.ring, self.owners, self.prefix + name], args=[name, _item(item, deliveries)])

    def take(self, holder: str, *, deliveries: int, skip: Iterable[str] = ()) -> list[str]:
        keys = [self.ring, self.owners, self.held_prefix + holder]
        found: list[bytes] = self._take(keys=keys, args=[self.prefix, deliveries, HELD_TTL_S, *skip])
        return [item.decode() for item in found]

    def held(self, holder: str) -> list[str]:
        return sorted(item.decode() for item in self.client.smembers(self.held_prefix + holder))

    def adopt(self, holder: str, *, into: str) -> list[str]:
        keys = [self.held_prefix + holder, self.held_prefix + into]
        return sorted(item.decode() for item in self._adopt(keys=keys, args=[HELD_TTL_S]))

    def settle(self, holder: str, items: list[str]) -> None:
        if items:
            self.client.srem(self.held_prefix + holder, *items)

    def waiting(self) -> bool:
        return bool(self.client.llen(self.ring))


class LocalLanes(Lanes):
    """The same in memory, for the stub broker and its tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lanes: dict[str, deque[str]] = {}
        self.ring: deque[str] = deque()
        self.holders: dict[str, set[str]] = {}

    def push(self, owner: str | None, item: str, deliveries: int) -> None:
        name = owner or ""
        with self.lock:
            if name not in self.lanes:
                self.ring.append(name)
            self.lanes.setdefault(name, deque()).append(_item(item, deliveries))

    def take(self, holder: str, *, deliveries: int, skip: Iterable[str] = ()) -> list[str]:
        out: list[str] = []
        total, skipped, passed = 0, 0, set(skip)
        with self.lock:
            while total < deliveries and self.ring:
                name = self.ring.popleft()
                if name in passed:
                    self.ring.append(name)
                    skipped += 1
                    if skipped >= len(self.ring):
                        break
                    continue
                skipped = 0
                lane = self.lanes[name]
                item = lane.popleft()
                if lane:
                    self.ring.append(name)
                else:
                    del self.lanes[name]
                name, count = item.rsplit(":", 1)
                out.append(name)
                total += int(count)
            self.holders.setdefault(holder, set()).update(out)
        return out

    def held(self, holder: str) -> list[str]:
        with self.lock:
            return sorted(self.holders.get(holder, ()))

    def adopt(self, holder: str, *, into: str) -> list[str]:
        with self.lock:
            taken = self.holders.pop(holder, set())
            if taken:
                self.holders.setdefault(into, set()).update(taken)
            return sorted(taken)

    def settle(self, holder: str, items: list[str]) -> None:
        with self.lock:
            mine = self.holders.get(holder, set())
            mine.difference_update(items)
            if not mine:
                self.holders.pop(holder, None)

    def waiting(self) -> bool:
        with self.lock:
            return bool(self.ring)


_made: weakref.WeakKeyDictionary[Coordination, Lanes] = weakref.WeakKeyDictionary()


def lanes_for(coordination: Coordination) -> Lanes:
    """The lanes in ``coordination``'s store (one object per store)."""
    return one_per_store(_made, coordination, RedisLanes, LocalLanes)
