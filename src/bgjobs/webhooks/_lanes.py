"""Fair lanes: messages waiting for their first attempts, one lane per owner, taken in turn.

``publish`` puts a message in its owner's lane; the dispatcher takes batches by going round the
owners with waiting messages, one message from each per turn. An owner who publishes 100,000
messages fills their own lane; another owner's single message is in the next batch.

A batch taken is held under the taker's name (its Dramatiq message id) until its deliveries
are settled. A worker killed with a batch in hand leaves it held; Dramatiq redelivers the
taker's message, and the copy takes the held batch again before anything new.

Lane items are ``<message id>:<deliveries>``, so a batch is cut by deliveries, not messages. On Redis
each operation is one script (one round trip); :class:`LocalLanes` does the same in memory for
the stub broker.
"""

from __future__ import annotations

import abc
import threading
import weakref
from collections import deque

from ..coordination import Coordination, RedisCoordination

__all__ = ["Lanes", "lanes_for"]

#: A held batch whose taker never came back is forgotten after this long (the sweep resends it).
HELD_TTL_S = 7 * 24 * 3600

_PUSH = """
redis.call('RPUSH', KEYS[3], unpack(ARGV, 2))
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
"""

_TAKE = """
local ring, owners, held = KEYS[1], KEYS[2], KEYS[3]
local prefix, budget = ARGV[1], tonumber(ARGV[2])
local out, total = {}, 0
while total < budget do
  local owner = redis.call('LPOP', ring)
  if not owner then break end
  local lane = prefix .. owner
  local item = redis.call('LPOP', lane)
  if redis.call('LLEN', lane) > 0 then
    redis.call('RPUSH', ring, owner)
  else
    redis.call('SREM', owners, owner)
  end
  if item then
    local sep = string.find(item, ':', 1, true)
    out[#out + 1] = string.sub(item, 1, sep - 1)
    total = total + tonumber(string.sub(item, sep + 1))
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


def _item(message_id: str, deliveries: int) -> str:
    return f"{message_id}:{deliveries}"


class Lanes(abc.ABC):
    @abc.abstractmethod
    def push(self, owner: str | None, message_id: str, deliveries: int) -> None:
        """Queue a message for its first attempts in ``owner``'s lane."""

    @abc.abstractmethod
    def take(self, holder: str, *, deliveries: int) -> list[str]:
        """Message ids for about ``deliveries`` deliveries, one owner at a time, held by ``holder``."""

    @abc.abstractmethod
    def held(self, holder: str) -> list[str]:
        """The message ids ``holder`` took and has not settled (a redelivered taker's batch)."""

    @abc.abstractmethod
    def adopt(self, holder: str, *, into: str) -> list[str]:
        """Move ``holder``'s held batches to ``into`` (a running dispatcher); returns their ids."""

    @abc.abstractmethod
    def settle(self, holder: str, message_ids: list[str]) -> None:
        """The deliveries of these messages are recorded, or scheduled by a job of their own."""

    @abc.abstractmethod
    def waiting(self) -> bool:
        """Whether any lane holds a message."""


class RedisLanes(Lanes):
    def __init__(self, coordination: RedisCoordination) -> None:
        self.client = coordination.client
        self.prefix = coordination.key("webhooks:lane:")
        self.ring, self.owners = coordination.key("webhooks:ring"), coordination.key("webhooks:owners")
        self.held_prefix = coordination.key("webhooks:held:")
        self._push = self.client.register_script(_PUSH)
        self._take = self.client.register_script(_TAKE)
        self._adopt = self.client.register_script(_ADOPT)

    def push(self, owner: str | None, message_id: str, deliveries: int) -> None:
        name = owner or ""
        self._push(
            keys=[self.ring, self.owners, self.prefix + name], args=[name, _item(message_id, deliveries)]
        )

    def take(self, holder: str, *, deliveries: int) -> list[str]:
        keys = [self.ring, self.owners, self.held_prefix + holder]
        found: list[bytes] = self._take(keys=keys, args=[self.prefix, deliveries, HELD_TTL_S])
        return [message_id.decode() for message_id in found]

    def held(self, holder: str) -> list[str]:
        return sorted(message_id.decode() for message_id in self.client.smembers(self.held_prefix + holder))

    def adopt(self, holder: str, *, into: str) -> list[str]:
        keys = [self.held_prefix + holder, self.held_prefix + into]
        return sorted(message_id.decode() for message_id in self._adopt(keys=keys, args=[HELD_TTL_S]))

    def settle(self, holder: str, message_ids: list[str]) -> None:
        if message_ids:
            self.client.srem(self.held_prefix + holder, *message_ids)

    def waiting(self) -> bool:
        return bool(self.client.llen(self.ring))


class LocalLanes(Lanes):
    """The same in memory, for the stub broker and its tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lanes: dict[str, deque[str]] = {}
        self.ring: deque[str] = deque()
        self.holders: dict[str, set[str]] = {}

    def push(self, owner: str | None, message_id: str, deliveries: int) -> None:
        name = owner or ""
        with self.lock:
            if name not in self.lanes:
                self.ring.append(name)
            self.lanes.setdefault(name, deque()).append(_item(message_id, deliveries))

    def take(self, holder: str, *, deliveries: int) -> list[str]:
        out: list[str] = []
        total = 0
        with self.lock:
            while total < deliveries and self.ring:
                name = self.ring.popleft()
                lane = self.lanes[name]
                item = lane.popleft()
                if lane:
                    self.ring.append(name)
                else:
                    del self.lanes[name]
                message_id, count = item.rsplit(":", 1)
                out.append(message_id)
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

    def settle(self, holder: str, message_ids: list[str]) -> None:
        with self.lock:
            mine = self.holders.get(holder, set())
            mine.difference_update(message_ids)
            if not mine:
                self.holders.pop(holder, None)

    def waiting(self) -> bool:
        with self.lock:
            return bool(self.ring)


_made: weakref.WeakKeyDictionary[Coordination, Lanes] = weakref.WeakKeyDictionary()


def lanes_for(coordination: Coordination) -> Lanes:
    """The lanes in ``coordination``'s store (one object per store)."""
    found = _made.get(coordination)
    if found is None:
        found = RedisLanes(coordination) if isinstance(coordination, RedisCoordination) else LocalLanes()
        _made[coordination] = found
    return found
