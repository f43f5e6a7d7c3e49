"""Each endpoint's gate: its concurrency slots, its rate (turns) and a pause its receiver asked for.

One call admits a whole batch, in one round trip on Redis:

- **Turns.** An endpoint with a rate limit of ``r`` per second hands out turns ``1/r`` apart (the
  generic cell rate algorithm: the next free turn is stored, each delivery takes the next one).
  A delivery whose turn is near waits for it on the event loop; one whose turn is further off
  keeps the turn and is sent again for then, so it spends no attempt and holds no thread. The
  receiver sees the rate it was promised, not bursts and silences.
- **Pauses.** A ``Retry-After`` on a 429 or 503 pauses the endpoint until then for every
  delivery, not only the one refused: a receiver that asks for less gets less. A delivery
  admitted before the pause and waiting for its turn looks again before it goes (see
  :mod:`._attempts`).
- **Slots.** At most ``endpoint_concurrency`` requests in flight to an endpoint, across every
  worker. A slot is a sorted-set member with a deadline, so a killed worker's slot frees itself.
"""

from __future__ import annotations

import abc
import threading
import time
import weakref
from dataclasses import dataclass
from enum import IntEnum

from ..coordination import Coordination, RedisCoordination
from ._lanes import one_per_store

__all__ = ["Admission", "Ask", "Gates", "Verdict", "gates_for"]


class Verdict(IntEnum):
    GO = 0  #: a slot is held; send after ``wait_ms``
    FULL = 1  #: every slot is taken; try again a little later
    LATER = 2  #: the turn at ``wait_ms`` from now is kept for it; send it again then


@dataclass(frozen=True)
class Ask:
    endpoint_id: str
    holder: str
    concurrency: int
    #: Milliseconds between turns; 0 for no rate limit.
    interval_ms: int
    #: A turn kept earlier (epoch milliseconds), or 0 to take the next one.
    turn_ms: int = 0


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    wait_ms: int


_ADMIT = """
local now, lease, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS / 3 do
  local slots, turn, pause = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 3 + (i - 1) * 4
  local holder, limit = ARGV[a + 1], tonumber(ARGV[a + 2])
  local interval, kept = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local start = math.max(now, tonumber(redis.call('GET', pause) or '0'))
  if kept > 0 then start = math.max(start, kept)
  elseif interval > 0 then start = math.max(start, tonumber(redis.call('GET', turn) or '0')) end
  local verdict = 0
  if start - now > hold then
    verdict = 2
  else
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) >= limit and not redis.call('ZSCORE', slots, holder) then
      verdict = 1
    else
      redis.call('ZADD', slots, now + lease, holder)
      redis.call('PEXPIRE', slots, lease)
    end
  end
  if verdict ~= 1 and kept == 0 and interval > 0 then
    redis.call('SET', turn, start + interval, 'PX', start + interval - now + 60000)
  end
  out[i] = {verdict, start - now}
end
return out
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Gates(abc.ABC):
    @abc.abstractmethod
    def admit(self, asks: list[Ask], *, lease_ms: int, hold_ms: int) -> list[Admission]:
        """Admit each ask, in order: GO holds a slot (until released, or ``lease_ms``), LATER keeps
        a turn more than ``hold_ms`` away, FULL takes nothing."""

    @abc.abstractmethod
    def release(self, held: list[tuple[str, str]]) -> None:
        """Give back slots, as (endpoint id, holder) pairs."""

    @abc.abstractmethod
    def pause(self, endpoint_id: str, *, seconds: float) -> None:
        """Hold every delivery to the endpoint for ``seconds`` from now."""

    @abc.abstractmethod
    def paused_until(self, endpoint_id: str) -> int:
        """When the endpoint's pause ends (epoch milliseconds), or 0 when it is not paused."""


class RedisGates(Gates):
    def key(self, kind: str, endpoint_id: str) -> str:
        return self.coordination.key(f"webhooks:{kind}:{endpoint_id}")

    def __init__(self, coordination: RedisCoordination) -> None:
        self.client = coordination.client
        self.coordination = coordination
        self._admit = self.client.register_script(_ADMIT)

    def admit(self, asks: list[Ask], *, lease_ms: int, hold_ms: int) -> list[Admission]:
        if not asks:
            return []
        keys: list[str] = []
        args: list[object] = [_now_ms(), lease_ms, hold_ms]
        for ask in asks:
            keys += [self.key("slots", ask.endpoint_id), self.key("turn", ask.endpoint_id),
                     self.key("pause", ask.endpoint_id)]  # fmt: skip
            args += [ask.holder, ask.concurrency, ask.interval_ms, ask.turn_ms]
        return [Admission(Verdict(int(v)), int(w)) for v, w in self._admit(keys=keys, args=args)]

    def release(self, held: list[tuple[str, str]]) -> None:
        if held:
            pipe = self.client.pipeline(transaction=False)
            for endpoint_id, holder in held:
                pipe.zrem(self.key("slots", endpoint_id), holder)
            pipe.execute()

    def pause(self, endpoint_id: str, *, seconds: float) -> None:
        until = _now_ms() + int(seconds * 1000)
        self.client.set(self.key("pause", endpoint_id), until, px=int(seconds * 1000) + 1000)

    def paused_until(self, endpoint_id: str) -> int:
        return int(self.client.get(self.key("pause", endpoint_id)) or 0)


class LocalGates(Gates):
    """The same in memory, for the stub broker and its tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots: dict[str, dict[str, int]] = {}
        self.turns: dict[str, int] = {}
        self.pauses: dict[str, int] = {}

    def admit(self, asks: list[Ask], *, lease_ms: int, hold_ms: int) -> list[Admission]:
        now, out = _now_ms(), []
        with self.lock:
            for ask in asks:
                start = max(now, self.pauses.get(ask.endpoint_id, 0))
                if ask.turn_ms:
                    start = max(start, ask.turn_ms)
                elif ask.interval_ms:
                    start = max(start, self.turns.get(ask.endpoint_id, 0))
                verdict = Verdict.GO
                if start - now > hold_ms:
                    verdict = Verdict.LATER
                else:
                    slots = self.slots.setdefault(ask.endpoint_id, {})
                    for holder in [h for h, until in slots.items() if until <= now]:
                        del slots[holder]
                    if len(slots) >= ask.concurrency and ask.holder not in slots:
                        verdict = Verdict.FULL
                    else:
                        slots[ask.holder] = now + lease_ms
                if verdict != Verdict.FULL and not ask.turn_ms and ask.interval_ms:
                    self.turns[ask.endpoint_id] = start + ask.interval_ms
                out.append(Admission(verdict, start - now))
        return out

    def release(self, held: list[tuple[str, str]]) -> None:
        with self.lock:
            for endpoint_id, holder in held:
                self.slots.get(endpoint_id, {}).pop(holder, None)

    def pause(self, endpoint_id: str, *, seconds: float) -> None:
        with self.lock:
            self.pauses[endpoint_id] = _now_ms() + int(seconds * 1000)

    def paused_until(self, endpoint_id: str) -> int:
        with self.lock:
            return self.pauses.get(endpoint_id, 0)


_made: weakref.WeakKeyDictionary[Coordination, Gates] = weakref.WeakKeyDictionary()


def gates_for(coordination: Coordination) -> Gates:
    """The gates in ``coordination``'s store (one object per store)."""
    return one_per_store(_made, coordination, RedisGates, LocalGates)
