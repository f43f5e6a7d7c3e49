"""Per-key limits in this process's memory, for the stub broker and its tests: what
``keyed.lua`` does on Redis (:mod:`bgjobs.keyed_store`)."""

from __future__ import annotations

import math
from collections import deque

from .keyed_store import FULL, GO, LATER, LEASE_MS, SEP, STALE_MS, Gate, Keyed, KeyState, _now, own_state

__all__ = ["LocalKeyed"]


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
        self.pauses: dict[tuple[str, str], int] = {}
        self.running: dict[str, float] = {}

    def declare(self, actor: str, declaration: str) -> None:
        limit, interval, burst = declaration.split()
        with self.lock:
            self.declared[actor] = (int(limit), float(interval), int(burst))

    def _limits(self, actor: str, key: str) -> tuple[int, float, int]:
        limit, interval, burst = self.declared.get(actor, (-1, 0.0, 1))

        def changed(what: str, declared: float) -> float:
            found = self.limits.get(SEP.join([actor, key, what]), self.limits.get(f"{actor}{SEP}{what}"))
            return declared if found is None else float(found)

        return int(changed("limit", limit)), changed("interval", interval), int(changed("burst", burst))

    def _take(self, actor: str, key: str, id: str, now: float) -> float:
        limit, interval, burst = self._limits(actor, key)
        slots = self.slots.setdefault((actor, key), {})
        if limit >= 0:
            if id in slots:
                until = self.running.get(id, 0.0)
                return math.ceil(until - now) if until > now else 0
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
        done = self._take_enqueued()
        if done:
            with self.lock:
                for id in done:
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
                held = self.slots.get((actor, key), {}).get(id, 0) > now
                if id in self.msgs:
                    verdicts.append(False)
                elif (held and self.running.get(id, 0) <= now) or (
                    not lane and self._take(actor, key, id, now) == 0
                ):
                    verdicts.append(True)
                else:  # a copy whose first run still holds its slot goes first (see keyed_redis)
                    waiting = self.lanes.setdefault((actor, key), deque())
                    waiting.appendleft(id) if held else waiting.append(id)
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
                self.running.pop(id, None)
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

    def run(self, ids: list[str], *, until_ms: float) -> None:
        with self.lock:
            self.running.update(dict.fromkeys(ids, until_ms))

    def gate(self, asks: list[Gate], *, lease_ms: int, hold_ms: int) -> list[tuple[int, int, int]]:
        now, out = _now(), []
        with self.lock:
            for a in asks:
                own = [self.limits.get(SEP.join([a.actor, a.key, w])) for w in ("limit", "interval")]
                every = [self.limits.get(SEP.join([a.actor, w])) for w in ("limit", "interval")]
                limit = int(float(own[0] or every[0] or a.limit))
                interval = float(own[1] or a.own_interval_ms or every[1] or a.interval_ms)
                start = max(now, self.pauses.get((a.actor, a.key), 0))
                if a.turn_ms:
                    start = max(start, a.turn_ms)
                elif interval > 0:
                    start = max(start, self.turns.get((a.actor, a.key), 0.0))
                verdict = GO
                if start - now > hold_ms:
                    verdict = LATER
                elif limit >= 0:
                    slots = self.slots.setdefault((a.actor, a.key), {})
                    if a.holder not in slots:
                        for holder in [h for h, until in slots.items() if until <= now]:
                            del slots[holder]
                        verdict = FULL if len(slots) >= limit else GO
                    if verdict == GO:
                        slots[a.holder] = now + lease_ms
                if verdict != FULL and not a.turn_ms and interval > 0:
                    self.turns[(a.actor, a.key)] = start + interval
                out.append((verdict, math.ceil(start - now), limit))
        return out

    def pause(self, actor: str, key: str, *, until_ms: int) -> None:
        with self.lock:
            self.pauses[(actor, key)] = until_ms

    def paused_until(self, actor: str, key: str) -> int:
        with self.lock:
            return self.pauses.get((actor, key), 0)

    def _keys(self, actor: str) -> set[str]:
        with self.lock:
            keys = {k for (a, k), s in self.slots.items() if a == actor and s}
            return keys | {k for (a, k), lane in self.lanes.items() if a == actor and lane}

    def _states(self, actor: str, keys: list[str]) -> list[KeyState]:
        now = _now()
        with self.lock:
            out = []
            for k in keys:
                own = [self.limits.get(SEP.join([actor, k, w])) for w in ("limit", "interval", "burst")]
                running = sum(1 for until in self.slots.get((actor, k), {}).values() if until > now)
                out.append(own_state(k, running, len(self.lanes.get((actor, k), ())), own))
            return out

    def totals(self) -> dict[str, tuple[int, int]]:
        now = _now()
        with self.lock:
            return {actor: (sum(1 for (a, _), slots in self.slots.items()
                                if a == actor and any(until > now for until in slots.values())),
                            sum(len(lane) for (a, _), lane in self.lanes.items() if a == actor))
                    for actor in self.declared}  # fmt: skip

    def movable(self) -> int:
        """Jobs waiting in lanes whose keys are not held (a cap of 0): ones that will still go."""
        with self.lock:
            return sum(len(lane) for (actor, key), lane in self.lanes.items()
                       if self._limits(actor, key)[0] != 0)  # fmt: skip

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
