"""Per-key limits on Redis: each operation one script, ``keyed.lua`` and its tail (see
:mod:`bgjobs.keyed_store` for what is kept)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from .keyed_store import LEASE_MS, SEP, STALE_MS, Gate, Keyed, KeyState, _now, own_state

__all__ = ["RedisKeyed"]

_LIB = resources.files("bgjobs").joinpath("keyed.lua").read_text()
_ADMIT = """
local out, pumped = {}, {}
for i = first, #ARGV, 4 do
  local actor, key, id, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local lane = base .. actor .. SEP .. key .. SEP .. 'lane'
  local held = tonumber(redis.call('ZSCORE', base .. actor .. SEP .. key .. SEP .. 'slots', id) or '0') > now
  if redis.call('HEXISTS', msgs, id) == 1 then
    out[#out + 1] = 0
  elseif held and tonumber(redis.call('ZSCORE', running, id) or '0') <= now then
    out[#out + 1] = 1  -- holds a slot already, and no live worker runs it (a copy of a job killed mid-run)
  elseif redis.call('LLEN', lane) == 0 and take(actor, key, id, limits(actor, key)) == 0 then
    out[#out + 1] = 1
  else
    -- A copy whose first run still holds its slot goes first: the slot it waits for is its own, and
    -- behind others waiting for a slot it would wait for ever
    redis.call(held and 'LPUSH' or 'RPUSH', lane, id)
    redis.call('HSET', msgs, id, entry)
    redis.call('SADD', base .. actor .. SEP .. 'waiting', key)
    pump(actor, key, pumped)
    out[#out + 1] = 0
  end
end
return {out, pumped}
"""
_TOTALS = """
local base, SEP, out = ARGV[1], '\\31', {}
for _, actor in ipairs(redis.call('HKEYS', base .. 'declared')) do
  local waiting = 0
  for _, key in ipairs(redis.call('SMEMBERS', base .. actor .. SEP .. 'waiting')) do
    waiting = waiting + redis.call('LLEN', base .. actor .. SEP .. key .. SEP .. 'lane')
  end
  out[#out + 1] = {actor, redis.call('SCARD', base .. actor .. SEP .. 'busy'), waiting}
end
return out
"""
_RELEASE = """
local pumped = {}
for i = first, #ARGV, 3 do
  local actor, key, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local slots = base .. actor .. SEP .. key .. SEP .. 'slots'
  redis.call('ZREM', slots, id)
  redis.call('ZREM', running, id)
  if redis.call('ZCARD', slots) == 0 then redis.call('SREM', base .. actor .. SEP .. 'busy', key) end
  pump(actor, key, pumped)
end
return pumped
"""
#: Dramatiq's ack (the id out of this worker's ack set, its message deleted), then _RELEASE.
_ACK = """
local queue, worker, rid = ARGV[first], ARGV[first + 1], ARGV[first + 2]
first = first + 3
if redis.call('SREM', ns .. ':__acks__.' .. worker .. '.' .. queue, rid) > 0 then
  redis.call('HDEL', ns .. ':' .. queue .. '.msgs', rid)
end
"""
_DUE = """
local pumped = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[first]))) do
  redis.call('ZREM', due, member)
  local actor, key = string.match(member, '^(.-)' .. SEP .. '(.*)$')
  pump(actor, key, pumped)
end
redis.call('ZREMRANGEBYSCORE', running, '-inf', now - lease)  -- runs of messages lost some other way
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

_GATE = """
local hold, out = tonumber(ARGV[first]), {}
local limits = base .. 'limits'
for i = first + 1, #ARGV, 7 do
  local actor, key, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local mine, kept = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local own, kb = actor .. SEP .. key .. SEP, base .. actor .. SEP .. key
  local o = redis.call('HMGET', limits, actor .. SEP .. 'limit', own .. 'limit', actor .. SEP .. 'interval',
                       own .. 'interval')
  local limit = tonumber(o[2] or o[1] or ARGV[i + 3])
  local interval = tonumber(o[4] or (mine > 0 and mine) or o[3] or ARGV[i + 4])
  local slots, turn = kb .. SEP .. 'slots', kb .. SEP .. 'turn'
  local start = math.max(now, tonumber(redis.call('GET', kb .. SEP .. 'pause') or '0'))
  if kept > 0 then start = math.max(start, kept)
  elseif interval > 0 then start = math.max(start, tonumber(redis.call('GET', turn) or '0')) end
  local verdict = 0
  if start - now > hold then
    verdict = 2
  elseif limit >= 0 then
    if not redis.call('ZSCORE', slots, id) then
      redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
      if redis.call('ZCARD', slots) >= limit then verdict = 1 end
    end
    if verdict == 0 then
      redis.call('ZADD', slots, now + lease, id)
      redis.call('PEXPIRE', slots, lease)
      redis.call('SADD', base .. actor .. SEP .. 'busy', key)
    end
  end
  if verdict ~= 1 and kept == 0 and interval > 0 then
    local tat = start + interval
    redis.call('SET', turn, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 60000)
  end
  out[#out + 1] = {verdict, math.ceil(start - now), limit}
end
return out
"""


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
        self._ack_release = self.client.register_script(_LIB + _ACK + _RELEASE)
        self._due = self.client.register_script(_LIB + _DUE)
        self._gate = self.client.register_script(_LIB + _GATE)
        self._totals = self.client.register_script(_TOTALS)
        self.declared: set[tuple[str, str]] = set()

    def _args(self, *rest: Any, lease_ms: int = LEASE_MS) -> list[Any]:
        done = self._take_enqueued()
        namespace, wake_cap = self.direct or ("", 0)
        return [self.base, f"{_now():.3f}", lease_ms, namespace, wake_cap, len(done), *done, *rest]

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

    def ack_and_release(self, item: tuple[str, str, str], queue: str, worker: str, redis_id: str) -> None:
        """Ack a job on the Redis broker whose queues are in this store (:attr:`direct`) and give
        its slot back, in one call: one round trip per limited job instead of two, and no moment
        when the slot is free and the job still unacked."""
        assert self.direct, "only where the broker's queues are in this store"
        self._ack_release(args=self._args(queue, worker, redis_id, *item))

    def due(self, *, keys: int = 200, stale_ms: int = STALE_MS) -> list[bytes]:
        return list(self._due(args=self._args(keys, stale_ms)))

    def run(self, ids: list[str], *, until_ms: float) -> None:
        if ids:
            self.client.zadd(self.base + "running", dict.fromkeys(ids, until_ms))

    def gate(self, asks: list[Gate], *, lease_ms: int, hold_ms: int) -> list[tuple[int, int, int]]:
        if not asks:
            return []
        flat = [v for a in asks for v in (a.actor, a.key, a.holder, a.limit, a.interval_ms, a.own_interval_ms,
                                          a.turn_ms)]  # fmt: skip
        return [(int(v), int(w), int(c)) for v, w, c in self._gate(args=self._args(hold_ms, *flat,
                                                                                   lease_ms=lease_ms))]

    def pause(self, actor: str, key: str, *, until_ms: int) -> None:
        self.client.set(self.base + SEP.join([actor, key, "pause"]), until_ms,
                        px=max(1, until_ms - int(_now())) + 1000)  # fmt: skip

    def paused_until(self, actor: str, key: str) -> int:
        return int(self.client.get(self.base + SEP.join([actor, key, "pause"])) or 0)

    def _keys(self, actor: str) -> set[str]:
        p = self.base + actor + SEP
        return {k.decode() for k in self.client.sunion(p + "busy", p + "waiting")}

    def _states(self, actor: str, keys: list[str]) -> list[KeyState]:
        p = self.base + actor + SEP
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(p + key + SEP + "slots", _now(), "+inf").llen(p + key + SEP + "lane")
            own = SEP.join([actor, key, ""])
            pipe.hmget(self.base + "limits", [own + "limit", own + "interval", own + "burst"])
        found = pipe.execute()
        return [own_state(key, int(found[3 * i]), int(found[3 * i + 1]), found[3 * i + 2])
                for i, key in enumerate(keys)]  # fmt: skip

    def totals(self) -> dict[str, tuple[int, int]]:
        found = self._totals(args=[self.base])
        return {actor.decode(): (int(busy), int(waiting)) for actor, busy, waiting in found}

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
