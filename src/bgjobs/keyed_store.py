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

:meth:`Keyed.gate` is the same slots and turns without a lane, for a caller that keeps what
waits itself: the webhook dispatcher's endpoint gates (``webhooks.endpoint``), which also keep a
turn far off for a delivery sent again later, and a pause a receiver asked for.

On Redis each operation is one script (``keyed.lua``, :mod:`bgjobs.keyed_redis`);
:mod:`bgjobs.keyed_local` does the same in memory for the stub broker.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FULL", "GO", "LATER", "LEASE_MS", "READ_KEYS", "SEP", "STALE_MS", "Gate", "KeyState", "Keyed",
    "encoded_of", "entry", "own_state",
]  # fmt: skip

#: A slot whose job never finished (its message lost outside bgjobs) is freed after this long.
LEASE_MS = 6 * 3_600_000
#: At most this many of an actor's busy keys are read to find its busiest.
READ_KEYS = 10_000
#: A job pumped out of its lane but not confirmed enqueued this long after is enqueued again.
STALE_MS = 60_000
SEP = "\x1f"


def entry(actor: str, key: str, queue: str, redis_id: str, encoded: bytes) -> bytes:
    """A waiting job as its lane keeps it."""
    return SEP.join([actor, key, queue, redis_id]).encode() + SEP.encode() + encoded


def encoded_of(entry: bytes) -> bytes:
    """The message an entry holds, as the broker encoded it."""
    return entry.split(SEP.encode(), 4)[4]


@dataclass(frozen=True)
class KeyState:
    """One key of an actor: how many slots are held, how many jobs wait, and its own cap and rate
    (a rate as its milliseconds between starts) where they were changed for it alone."""

    key: str
    running: int
    waiting: int
    limit: int | None = None
    interval_ms: float | None = None
    burst: int | None = None


def own_state(key: str, running: int, waiting: int, own: list[Any]) -> KeyState:
    """A key's state from its own (limit, interval, burst) overrides, each None or text."""
    limit, interval, burst = (None if v is None else float(v) for v in own)
    return KeyState(key, running, waiting, None if limit is None else int(limit), interval,
                    None if burst is None else int(burst))  # fmt: skip


#: :meth:`Keyed.gate`'s verdicts.
GO, FULL, LATER = 0, 1, 2


@dataclass(frozen=True)
class Gate:
    """One ask of :meth:`Keyed.gate`: ``limit`` and ``interval_ms`` are the key's cap and rate as
    declared (-1 and 0 for none), ``own_interval_ms`` a rate of the key's own (0 for none: an
    endpoint's ``rate_limit``, which ranks above a change made for every key), ``turn_ms`` a
    turn kept earlier (epoch milliseconds, 0 to take the next one)."""

    actor: str
    key: str
    holder: str
    limit: int
    interval_ms: float
    own_interval_ms: float = 0.0
    turn_ms: int = 0


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
        """(actor, key, id, entry) each: whether it may be enqueued now (it took a slot and its
        turn, or holds a slot already; else its entry waits in its lane), and the entries pumped
        meanwhile for the caller to publish."""

    @abc.abstractmethod
    def release(self, items: list[tuple[str, str, str]]) -> list[bytes]:
        """Give back these (actor, key, id) slots; the jobs pumped into them."""

    @abc.abstractmethod
    def run(self, ids: list[str], *, until_ms: float) -> None:
        """These jobs run on a live worker until ``until_ms`` (renewed while they run, dropped when
        they give their slots back). A copy of one (a redelivered message) that holds the same slot
        waits in its lane until the run ends or its worker stops renewing it."""

    @abc.abstractmethod
    def gate(self, asks: list[Gate], *, lease_ms: int, hold_ms: int) -> list[tuple[int, int, int]]:
        """Let each ask through its key's gate, in order: ``(verdict, wait ms, the key's cap)``, the
        verdict :data:`GO` (a slot is held; go after the wait), :data:`FULL` (every slot is held;
        nothing taken) or :data:`LATER` (the turn more than ``hold_ms`` away is kept for it). Unlike
        :meth:`admit` it keeps no lane: the caller holds what waits (the webhook dispatcher)."""

    @abc.abstractmethod
    def pause(self, actor: str, key: str, *, until_ms: int) -> None:
        """Hold the key's gate until then (a receiver's ``Retry-After``)."""

    @abc.abstractmethod
    def paused_until(self, actor: str, key: str) -> int:
        """When the key's pause ends (epoch milliseconds), or 0."""

    @abc.abstractmethod
    def due(self, *, keys: int = 200, stale_ms: int = STALE_MS) -> list[bytes]:
        """Pump the keys whose turn (or a lapsed slot) has come, and re-send stale pumped jobs."""

    def states(self, actor: str, *, limit: int = 100) -> list[KeyState]:
        """The actor's keys holding slots or with jobs waiting, most waiting first (then most
        running): the busiest ``limit`` of the first :data:`READ_KEYS` keys."""
        found = self._states(actor, sorted(self._keys(actor))[:READ_KEYS])
        return sorted(found, key=lambda s: (-s.waiting, -s.running, s.key))[:limit]

    @abc.abstractmethod
    def _keys(self, actor: str) -> set[str]:
        """The actor's keys holding slots or with jobs waiting."""

    def state(self, actor: str, key: str) -> KeyState:
        """One key of the actor."""
        return self._states(actor, [key])[0]

    @abc.abstractmethod
    def _states(self, actor: str, keys: list[str]) -> list[KeyState]: ...

    @abc.abstractmethod
    def totals(self) -> dict[str, tuple[int, int]]:
        """For each actor that declared limits: (keys holding slots, jobs waiting in lanes)."""

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
