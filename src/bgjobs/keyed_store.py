"""Where per-key limits live: slots, turns and lanes in the coordination store (docs/controls.md).

A job of an actor with ``concurrency=`` or ``rate=`` enters its broker queue only once it holds
one of its key's slots and its key's turn. One that cannot waits in its key's **lane** (in the
store, not in a worker thread, not requeued again and again) and is **pumped** into the queue
when a job of its key finishes (releasing a slot) or when its turn comes (each worker's sweeper).
Because a key never has more than its limit in the broker queue, one key's 100,000 jobs cannot
stand in front of another key's one: keys are served side by side.

A slot is held from admission until the job finishes, is dead-lettered or skipped; a retry keeps
it, and a worker killed mid-job leaves it with the message Dramatiq redelivers, so the cap holds
across kills. A slot also lapses after :data:`LEASE_MS` (a message lost some other way).

On Redis each operation is one script (``keyed.lua``); :class:`LocalKeyed` does the same in
memory for the stub broker.
"""

from __future__ import annotations

import abc
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "LEASE_MS", "STALE_MS", "KeyState", "Keyed", "LocalKeyed", "RedisKeyed", "encoded_of", "entry",
    "keyed_for",
]  # fmt: skip

#: A slot whose job never finished (its message lost outside bgjobs) is freed after this long.
LEASE_MS = 6 * 3_600_000
#: A job pumped out of its lane but not confirmed enqueued this long after is enqueued again.
STALE_MS = 60_000
SEP = "\x1f"
_LIB = resources.files("bgjobs").joinpath("keyed.lua").read_text()
_ADMIT = """
local out, pumped = {}, {}
for i = first, #ARGV, 4 do
  local actor, key, id, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local lane = base .. actor .. SEP .. key .. SEP .. 'lane'
  if redis.call('HEXISTS', msgs, id) == 1 then
    out[#out + 1] = 0
  elseif redis.call('LLEN', lane) == 0 and take(actor, key, id) == 0 then
    out[#out + 1] = 1
  else
    redis.call('RPUSH', lane, id)
    redis.call('HSET', msgs, id, entry)
    redis.call('SADD', base .. actor .. SEP .. 'waiting', key)
    pump(actor, key, pumped)
    out[#out + 1] = 0
  end
end
return {out, pumped}
"""
_RELEASE = """
local pumped = {}
for i = first, #ARGV, 3 do
  local actor, key, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local slots = base .. actor .. SEP .. key .. SEP .. 'slots'
  redis.call('ZREM', slots, id)
  if redis.call('ZCARD', slots) == 0 then redis.call('SREM', base .. actor .. SEP .. 'busy', key) end
  pump(actor, key, pumped)
end
return pumped
"""
_DUE = """
local pumped = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[first]))) do
  redis.call('ZREM', due, member)
  local actor, key = string.match(member, '^(.-)' .. SEP .. '(.*)$')
  pump(actor, key, pumped)
end
local stale = redis.call('ZRANGEBYSCORE', pumping, '-inf', now - tonumber(ARGV[first + 1]), 'LIMIT', 0, 100)
for _, id in ipairs(stale) do
  local entry = redis.call('HGET', msgs, id)
  if entry then
    redis.call('ZADD', pumping, now, id)
    pumped[#pumped + 1] = entry
  else
    redis.call('ZREM', pumping, id)
  end
end
return pumped
"""


def entry(actor: str, key: str, queue: str, redis_id: str, encoded: bytes) -> bytes:
    """A waiting job as its lane keeps it."""
    return SEP.join([actor, key, queue, redis_id]).encode() + SEP.encode() + encoded


def encoded_of(entry: bytes) -> bytes:
    """The message an entry holds, as the broker encoded it."""
    return entry.split(SEP.encode(), 4)[4]


@dataclass(frozen=True)
class KeyState:
    """One key of an actor: how many slots are held, how many jobs wait, and its own cap if set."""

    key: str
    running: int
    waiting: int
    limit: int | None = None


def _now() -> float:
    return time.time() * 1000


class Keyed(abc.ABC):
    """The operations; entries are ``actor, key, queue, redis id, encoded message`` joined by
    :data:`SEP` (bytes): :func:`entry` makes one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Ids pumped and since enqueued, confirmed with the next call.
        self.enqueued: list[str] = []

    def confirm(self, ids: list[str]) -> None:
        """These pumped jobs are in their broker queue (sent along with the next call)."""
        with self.lock:
            self.enqueued.extend(ids)

    def _take_enqueued(self) -> list[str]:
        with self.lock:
            done, self.enqueued = self.enqueued, []
        return done

    @abc.abstractmethod
    def declare(self, actor: str, declaration: str) -> None:
        """Write the actor's declared limits where admission reads them (once per process)."""

    @abc.abstractmethod
    def admit(self, items: list[tuple[str, str, str, bytes]]) -> tuple[list[bool], list[bytes]]:
        """(actor, key, id, entry) each: whether it may be enqueued now (else its entry waits in
        its lane), and the entries pumped meanwhile for the caller to publish."""

    @abc.abstractmethod
    def release(self, items: list[tuple[str, str, str]]) -> list[bytes]:
        """Give back these (actor, key, id) slots; the jobs pumped into them."""

    @abc.abstractmethod
    def due(self, *, keys: int = 200, stale_ms: int = STALE_MS) -> list[bytes]:
        """Pump the keys whose turn (or a lapsed slot) has come, and re-send stale pumped jobs."""

    @abc.abstractmethod
    def states(self, actor: str, *, limit: int = 100) -> list[KeyState]:
        """The actor's keys holding slots or with jobs waiting."""

    def state(self, actor: str, key: str) -> KeyState:
        """One key of the actor."""
        return self._states(actor, [key])[0]

    @abc.abstractmethod
    def _states(self, actor: str, keys: list[str]) -> list[KeyState]: ...

    @abc.abstractmethod
    def where(self, message_id: str) -> tuple[str, str, str] | None:
        """(actor, key, "waiting" or "pumping") for a job in a lane; None elsewhere."""

    @abc.abstractmethod
    def overrides(self) -> dict[str, str]:
        """The limits changed at run time, by field (``actor \\x1f [key \\x1f] what``)."""

    @abc.abstractmethod
    def override(self, actor: str, what: str, value: str | None, *, key: str | None = None) -> None:
        """Set (or with None clear) ``limit``, ``interval`` or ``burst`` for an actor or one key;
        the actor's waiting keys are looked at again at once."""


class RedisKeyed(Keyed):
    def __init__(self, coordination: Any) -> None:
        super().__init__()
        self.coordination = coordination
        self.client = coordination.client
        #: The Redis broker's namespace and wake cap, when its queues are in this store: jobs
        #: leaving their lanes are then written onto their queues by the scripts themselves.
        self.direct: tuple[str, int] | None = None
        self.base = coordination.key("bgjobs-keyed:")
        self._admit = self.client.register_script(_LIB + _ADMIT)
        self._release = self.client.register_script(_LIB + _RELEASE)
        self._due = self.client.register_script(_LIB + _DUE)
        self.declared: set[tuple[str, str]] = set()

    def _args(self, *rest: Any) -> list[Any]:
        done = self._take_enqueued()
        namespace, wake_cap = self.direct or ("", 0)
        return [self.base, f"{_now():.3f}", LEASE_MS, namespace, wake_cap, len(done), *done, *rest]

    def declare(self, actor: str, declaration: str) -> None:
        if (actor, declaration) not in self.declared:
            self.client.hset(self.base + "declared", actor, declaration)
            self.declared.add((actor, declaration))

    def admit(self, items: list[tuple[str, str, str, bytes]]) -> tuple[list[bool], list[bytes]]:
        flat = [v for item in items for v in item]
        verdicts, pumped = self._admit(args=self._args(*flat))
        return [bool(v) for v in verdicts], list(pumped)

    def release(self, items: list[tuple[str, str, str]]) -> list[bytes]:
        return list(self._release(args=self._args(*(v for item in items for v in item))))

    def due(self, *, keys: int = 200, stale_ms: int = STALE_MS) -> list[bytes]:
        return list(self._due(args=self._args(keys, stale_ms)))

    def states(self, actor: str, *, limit: int = 100) -> list[KeyState]:
        p = self.base + actor + SEP
        keys = sorted({k.decode() for k in self.client.sunion(p + "busy", p + "waiting")})[:limit]
        return self._states(actor, keys)

    def _states(self, actor: str, keys: list[str]) -> list[KeyState]:
        p = self.base + actor + SEP
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(p + key + SEP + "slots", _now(), "+inf").llen(p + key + SEP + "lane")
            pipe.hget(self.base + "limits", f"{actor}{SEP}{key}{SEP}limit")
        found = pipe.execute()
        return [KeyState(key, int(found[3 * i]), int(found[3 * i + 1]),
                         None if found[3 * i + 2] is None else int(found[3 * i + 2]))
                for i, key in enumerate(keys)]  # fmt: skip

    def where(self, message_id: str) -> tuple[str, str, str] | None:
        entry = self.client.hget(self.base + "msgs", message_id)
        if entry is None:
            return None
        actor, key, _ = entry.split(SEP.encode(), 2)
        actor, key = actor.decode(), key.decode()
        pumping = self.client.zscore(self.base + "pumping", message_id) is not None
        return actor, key, "pumping" if pumping else "waiting"

    def overrides(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.base + "limits").items()}

    def override(self, actor: str, what: str, value: str | None, *, key: str | None = None) -> None:
        field = SEP.join([actor, *([key] if key is not None else []), what])
        p = self.base + actor + SEP
        if value is None:
            self.client.hdel(self.base + "limits", field)
        else:
            self.client.hset(self.base + "limits", field, value)
        waiting = self.client.smembers(p + "waiting")
        if waiting:
            self.client.zadd(self.base + "due", {f"{actor}{SEP}{k.decode()}": 0 for k in waiting})


class LocalKeyed(Keyed):
    """The same in memory, for the stub broker and its tests."""

    def __init__(self) -> None:
        super().__init__()
        self.declared: dict[str, tuple[int, float, int]] = {}
        self.limits: dict[str, str] = {}
        self.slots: dict[tuple[str, str], dict[str, float]] = {}
        self.turns: dict[tuple[str, str], float] = {}
        self.lanes: dict[tuple[str, str], deque[str]] = {}
        self.msgs: dict[str, bytes] = {}
        self.pumping: dict[str, float] = {}
        self.due_at: dict[tuple[str, str], float] = {}

    def declare(self, actor: str, declaration: str) -> None:
        limit, interval, burst = declaration.split()
        with self.lock:
            self.declared[actor] = (int(limit), float(interval), int(burst))

    def _limits(self, actor: str, key: str) -> tuple[int, float, int]:
        limit, interval, burst = self.declared.get(actor, (-1, 0.0, 1))
        found = self.limits.get(SEP.join([actor, key, "limit"])) or self.limits.get(f"{actor}{SEP}limit")
        return (int(found) if found is not None else limit,
                float(self.limits.get(f"{actor}{SEP}interval", interval)),
                int(self.limits.get(f"{actor}{SEP}burst", burst)))  # fmt: skip

    def _take(self, actor: str, key: str, id: str, now: float) -> float:
        limit, interval, burst = self._limits(actor, key)
        slots = self.slots.setdefault((actor, key), {})
        if limit >= 0:
            if id in slots:
                return 0
            for holder in [h for h, until in slots.items() if until <= now]:
                del slots[holder]
            if len(slots) >= limit:
                return -1
        if interval > 0:
            tat = max(self.turns.get((actor, key), 0.0), now)
            allowed = tat - (burst - 1) * interval
            if allowed > now:
                return math.ceil(allowed - now)
            self.turns[(actor, key)] = tat + interval
        if limit >= 0:
            slots[id] = now + LEASE_MS
        return 0

    def _pump(self, actor: str, key: str, now: float, out: list[bytes]) -> None:
        lane = self.lanes.get((actor, key))
        while lane:
            v = self._take(actor, key, lane[0], now)
            if v != 0:
                slots = self.slots.get((actor, key), {})
                at = now + v if v > 0 else min(slots.values(), default=None)
                if at is not None:
                    self.due_at[(actor, key)] = at
                return
            id = lane.popleft()
            self.pumping[id] = now
            out.append(self.msgs[id])
        self.lanes.pop((actor, key), None)

    def _confirm(self) -> None:
        for id in self._take_enqueued():
            self.pumping.pop(id, None)
            self.msgs.pop(id, None)

    def admit(self, items: list[tuple[str, str, str, bytes]]) -> tuple[list[bool], list[bytes]]:
        verdicts: list[bool] = []
        pumped: list[bytes] = []
        now = _now()
        self._confirm()
        with self.lock:
            for actor, key, id, encoded in items:
                lane = self.lanes.get((actor, key))
                if id in self.msgs:
                    verdicts.append(False)
                elif not lane and self._take(actor, key, id, now) == 0:
                    verdicts.append(True)
                else:
                    self.lanes.setdefault((actor, key), deque()).append(id)
                    self.msgs[id] = encoded
                    self._pump(actor, key, now, pumped)
                    verdicts.append(False)
        return verdicts, pumped

    def release(self, items: list[tuple[str, str, str]]) -> list[bytes]:
        pumped: list[bytes] = []
        self._confirm()
        with self.lock:
            for actor, key, id in items:
                self.slots.get((actor, key), {}).pop(id, None)
                self._pump(actor, key, _now(), pumped)
        return pumped

    def due(self, *, keys: int = 200, stale_ms: int = STALE_MS) -> list[bytes]:
        pumped: list[bytes] = []
        self._confirm()
        with self.lock:
            now = _now()
            for actor, key in [k for k, at in self.due_at.items() if at <= now][:keys]:
                del self.due_at[(actor, key)]
                self._pump(actor, key, now, pumped)
            for id in [i for i, at in self.pumping.items() if at <= now - stale_ms][:100]:
                self.pumping[id] = now
                pumped.append(self.msgs[id])
        return pumped

    def states(self, actor: str, *, limit: int = 100) -> list[KeyState]:
        with self.lock:
            keys = {k for (a, k), s in self.slots.items() if a == actor and s}
            keys |= {k for (a, k), lane in self.lanes.items() if a == actor and lane}
        return self._states(actor, sorted(keys)[:limit])

    def _states(self, actor: str, keys: list[str]) -> list[KeyState]:
        now = _now()
        with self.lock:
            out = []
            for k in keys:
                own = self.limits.get(SEP.join([actor, k, "limit"]))
                running = sum(1 for until in self.slots.get((actor, k), {}).values() if until > now)
                waiting = len(self.lanes.get((actor, k), ()))
                out.append(KeyState(k, running, waiting, None if own is None else int(own)))
            return out

    def where(self, message_id: str) -> tuple[str, str, str] | None:
        with self.lock:
            entry = self.msgs.get(message_id)
            if entry is None:
                return None
            actor, key, _ = entry.split(SEP.encode(), 2)
            state = "pumping" if message_id in self.pumping else "waiting"
            return actor.decode(), key.decode(), state

    def overrides(self) -> dict[str, str]:
        with self.lock:
            return dict(self.limits)

    def override(self, actor: str, what: str, value: str | None, *, key: str | None = None) -> None:
        field = SEP.join([actor, *([key] if key is not None else []), what])
        with self.lock:
            if value is None:
                self.limits.pop(field, None)
            else:
                self.limits[field] = value
            for a, k in [k for k, lane in self.lanes.items() if k[0] == actor and lane]:
                self.due_at[(a, k)] = 0


_made: weakref.WeakKeyDictionary[Any, Keyed] = weakref.WeakKeyDictionary()


def keyed_for(coordination: Any) -> Keyed:
    """The per-key limits in ``coordination``'s store (one object per store)."""
    found = _made.get(coordination)
    if found is None:
        redis = getattr(coordination, "client", None) is not None
        found = RedisKeyed(coordination) if redis else LocalKeyed()
        _made[coordination] = found
    return found
