"""Per-key limits at work: admitting sends, releasing slots as jobs finish, pumping lanes.

:mod:`bgjobs.keyed_store` keeps the slots, turns and lanes; this module decides when to ask it.
A send is admitted (one round trip for a whole ``send_many``); a job that arrives at a worker
without having been admitted (a delayed send, a requeued dead letter, a plain Dramatiq send) is
admitted there, and skipped into its lane if its key is at its cap. So is a redelivered one (its
worker died or lost its connection before the ack) that no longer holds its slot. Each worker
process runs a sweeper that pumps the keys whose turn has come every :data:`SWEEP_S`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.middleware import SkipMessage

from .broker_settings import settings_for
from .coordination import one_per_store
from .errors import ConfigurationError
from .keyed_local import LocalKeyed
from .keyed_redis import RedisKeyed
from .keyed_store import Keyed, encoded_of, entry
from .outage import CONNECTION_ERRORS, report
from .per_key import ADMITTED, KeyLimits
from .releasing import ON_ACK, PARKED, ReleasedWhenDone

__all__ = [
    "SWEEP_S",
    "KeyedLimits",
    "admit_keyed",
    "check_settings",
    "enqueue_pumped",
    "give_back",
    "keyed_for",
    "keyed_of",
    "limited_actors",
    "limits_of",
]  # fmt: skip

logger = logging.getLogger("bgjobs.worker")

#: How often each worker looks for keys whose turn has come (a rate's precision).
SWEEP_S = 0.05
#: Sends admitted per script call.
PAGE = 500


@functools.lru_cache(maxsize=256)
def _configured(limits: KeyLimits, given: Any, actor_name: str) -> KeyLimits:
    """``limits`` with ``given`` in their place; both frozen, so equal values share one result
    (looked up for every message)."""
    return limits.configured(given, f"BGJOBS_KEY_LIMITS.{actor_name}")


#: Limits kept per key for something other than an actor's own messages, by name: each endpoint's
#: gate of the webhook dispatcher (``webhooks.endpoint``). Each gives its limits as the settings
#: declare them; operators see and change them with every actor's (``bgjobs limits``, the console).
GATED: dict[str, Callable[[Any], KeyLimits]] = {}


def _declared_limits(name: str, settings: Callable[[], Any]) -> KeyLimits | None:
    """``name``'s limits as its code (or for :data:`GATED`, ``settings()``) declares them."""
    from .registry import declared

    gated = GATED.get(name)
    return gated(settings()) if gated is not None else getattr(declared(name), "limits", None)


def limits_of(actor_name: str, broker: dramatiq.Broker) -> KeyLimits | None:
    """The actor's per-key limits: as its code declares them, with ``BGJOBS_KEY_LIMITS`` of the
    settings ``broker`` was built from in their place."""
    limits = _declared_limits(actor_name, lambda: settings_for(broker))
    if limits is None:
        return None
    given = settings_for(broker).key_limits.get(actor_name)
    return limits if given is None else _configured(limits, given, actor_name)


def limited_actors() -> list[str]:
    """The names of the registered actors that declare per-key limits, and of :data:`GATED`, sorted."""
    from .registry import registered

    limited = [name for name, t in registered().items() if getattr(t, "limits", None) is not None]
    return sorted([*limited, *GATED])


def check_settings(settings: Any) -> None:
    """At worker boot: every actor ``BGJOBS_KEY_LIMITS`` names declares per-key limits, and each
    rate parses; otherwise one line naming it (an entry nobody reads would be a limit nobody has).

    Raises:
        ConfigurationError: naming the actor or the rate.
    """
    limited = limited_actors()
    for name, given in settings.key_limits.items():
        if name not in limited:
            raise ConfigurationError(f"BGJOBS_KEY_LIMITS: {name!r} is not an actor with per-key limits; "
                                     f"those with them: {', '.join(limited) or 'none'}")  # fmt: skip
        declared = _declared_limits(name, lambda: settings)
        assert declared is not None
        _configured(declared, given, name)


_made: weakref.WeakKeyDictionary[Any, Keyed] = weakref.WeakKeyDictionary()


def keyed_for(coordination: Any) -> Keyed:
    """The per-key limits in ``coordination``'s store (one object per store)."""
    return one_per_store(_made, coordination, RedisKeyed, LocalKeyed)


_of_broker: weakref.WeakKeyDictionary[dramatiq.Broker, Keyed] = weakref.WeakKeyDictionary()


def keyed_of(broker: dramatiq.Broker) -> Keyed:
    """The per-key limits of ``broker``'s coordination store (found once per broker: every
    finished job asks); on the Redis broker, whose queues are in that store, jobs leaving their
    lanes are written onto their queues by the same script."""
    found = _of_broker.get(broker)
    if found is not None:
        return found
    from .coordination import coordination_for
    from .redis_broker import WAKE_CAP, BgjobsRedisBroker

    coordination = coordination_for(broker)
    found = keyed_for(coordination)
    queues = broker if isinstance(broker, BgjobsRedisBroker) else None
    if isinstance(found, RedisKeyed) and queues and getattr(coordination, "client", None) is queues.client:
        found.direct = (queues.namespace, WAKE_CAP)
    _of_broker[broker] = found
    return found


def enqueue_pumped(broker: dramatiq.Broker, keyed: Keyed, pumped: list[bytes], *, now: bool = False) -> None:
    """Send jobs pumped out of their lanes (elsewhere than on the Redis broker, whose scripts write
    them onto their queues), then confirm them with the next call to the store, or at once with
    ``now`` (a sending process may not call again for a while): a crash between the two sends
    them again after :data:`~bgjobs.keyed_store.STALE_MS` (at least once)."""
    if not pumped:
        return
    messages = [dramatiq.Message.decode(encoded_of(entry)) for entry in pumped]
    enqueue_many = getattr(broker, "enqueue_many", None)
    if enqueue_many is not None:
        enqueue_many(messages)
    else:
        for message in messages:
            broker.enqueue(message)
    keyed.confirm([m.message_id for m in messages])
    if now:
        keyed.release([])


def give_back(broker: dramatiq.Broker, message: Any, *, now: bool = False) -> None:
    """Free the slot ``message`` holds and send the next job of its key (nothing for an actor
    without limits); ``now`` as for :func:`enqueue_pumped`."""
    limits = limits_of(message.actor_name, broker)
    if limits is not None:
        keyed = keyed_of(broker)
        pumped = keyed.release([(message.actor_name, limits.key(message), message.message_id)])
        enqueue_pumped(broker, keyed, pumped, now=now)


def admit_keyed(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], *, again: bool = False
) -> list[dramatiq.Message[Any]]:
    """Of ``messages`` (each of an actor with limits), those to enqueue now; the others wait in
    their keys' lanes. One that holds a slot already goes. Jobs pumped meanwhile are sent here.
    ``again``: admitted before (a redelivered copy), so not sent again through the enqueue hooks."""
    keyed = keyed_of(broker)
    items = []
    for message in messages:
        limits = limits_of(message.actor_name, broker)
        assert limits is not None
        keyed.declare(message.actor_name, limits.declaration())
        if not again:
            broker.emit_before("enqueue", message, None)  # as an enqueue would: its batch, its trace
        message.options[ADMITTED] = 1
        # The Redis id its queue will know it by if it leaves its lane, on a copy: a message a
        # worker took keeps the id it is acked by (one that goes now gets a fresh one anyway)
        redis_id = str(uuid4())
        key = limits.key(message)
        lane = message.copy(options={"redis_message_id": redis_id})
        found = entry(message.actor_name, key, message.queue_name, redis_id, lane.encode())
        items.append((message.actor_name, key, message.message_id, found))
    verdicts: list[bool] = []
    pumped: list[bytes] = []
    for start in range(0, len(items), PAGE):  # a script call at a time blocks Redis for a page only
        page_verdicts, page_pumped = keyed.admit(items[start : start + PAGE])
        verdicts += page_verdicts
        pumped += page_pumped
    enqueue_pumped(broker, keyed, pumped, now=True)
    for message, go in zip(messages, verdicts, strict=True):
        if not go and not again:  # accepted, in its lane (one that goes now is enqueued by the caller)
            broker.emit_after("enqueue", message, None)
    return [m for m, go in zip(messages, verdicts, strict=True) if go]


def _with_queues(broker: dramatiq.Broker) -> RedisKeyed | None:
    """The per-key limits' store, where it also holds the queues, acks and heartbeats of ``broker``
    (the Redis broker)."""
    keyed = keyed_of(broker)
    return keyed if isinstance(keyed, RedisKeyed) and keyed.direct else None


def _run_ms(broker: dramatiq.Broker) -> int:
    """How long a run is taken to go on without being renewed: the heartbeat timeout, after which a
    silent worker counts as dead everywhere else too."""
    return int(settings_for(broker).worker.heartbeat_timeout_ms)


class KeyedLimits(ReleasedWhenDone):
    """In the worker: admits jobs that arrive unadmitted, marks the jobs it runs as running here
    (renewed while they run), gives a finished job's slot back (which pumps the next of its key),
    and sweeps for keys whose turn has come."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        #: The ids of the limited jobs this process runs, renewed in the store by the sweeper, with
        #: how many runs of each (a copy of a job may come to the process running it).
        self.running: Counter[str] = Counter()
        #: The messages marked running here (by object: a parked copy has the same id, not a mark).
        self.marked: set[int] = set()
        self.renewed = 0.0

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # A redelivered copy may have run to its end and given its slot back before its worker
        # died unacked (the ack comes after): it must hold a slot again, or the cap is one short.
        # Or its first run still goes on, on a worker that lost its connection to RabbitMQ: then
        # it waits in its lane until that run ends (see Keyed.run).
        if limits_of(message.actor_name, broker) is None:
            return
        admitted = message.options.get(ADMITTED)
        again = bool(admitted) and getattr(message, "redelivered", False)
        try:
            if (not admitted or again) and not admit_keyed(broker, [message._message], again=again):
                message.options[PARKED] = 1
                raise SkipMessage(f"{message.actor_name} {message.message_id} waits for its key's turn")
            if _with_queues(broker) is not None:
                # The Redis broker hands a job out again only once its worker's heartbeat is older
                # than the heartbeat timeout, and that worker writes its heartbeat to the same server
                # as often as it would renew the mark: the mark would have lapsed by then (no copy
                # would wait for it), so no write per job for it
                return
            self.marked.add(id(message))
            self.running[message.message_id] += 1
            keyed_of(broker).run([message.message_id], until_ms=time.time() * 1000 + _run_ms(broker))
        except CONNECTION_ERRORS as exc:  # the store is down: run it (at least once, as everywhere)
            report(exc)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        self._ended(message)
        super().after_process_message(broker, message, result=result, exception=exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._ended(message)
        super().after_skip_message(broker, message)

    def _ended(self, message: Any) -> None:
        if id(message) in self.marked:
            self.marked.discard(id(message))
            self.running[message.message_id] -= 1
            if self.running[message.message_id] <= 0:
                del self.running[message.message_id]

    def release(self, broker: dramatiq.Broker, message: Any) -> None:
        keyed = _with_queues(broker)
        if keyed is None:
            self._give_back(broker, message)
        elif (limits := limits_of(message.actor_name, broker)) is not None:  # its ack gives it back
            item = (message.actor_name, limits.key(message), message.message_id)
            setattr(message, ON_ACK, functools.partial(keyed.ack_and_release, item))  # consumer.py

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        vars(message).pop(ON_ACK, None)  # a nack gives nothing back itself
        self._give_back(broker, message)

    def _give_back(self, broker: dramatiq.Broker, message: Any) -> None:
        try:
            give_back(broker, message)
        except CONNECTION_ERRORS as exc:  # the slot lapses with its lease instead
            report(exc)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        from .registry import registered

        if any(getattr(t, "limits", None) is not None for t in registered().values()):
            self.stop.clear()
            self.thread = threading.Thread(target=self._sweep, args=(broker,), name="bgjobs-keyed",
                                           daemon=True)  # fmt: skip
            self.thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _sweep(self, broker: dramatiq.Broker) -> None:
        keyed = keyed_of(broker)
        run_ms = _run_ms(broker)
        while not self.stop.wait(SWEEP_S):
            try:
                now = time.time() * 1000
                if now - self.renewed > run_ms / 3:  # the runs still going on here
                    keyed.run(list(self.running.copy()), until_ms=now + run_ms)
                    self.renewed = now
                enqueue_pumped(broker, keyed, keyed.due())
            except CONNECTION_ERRORS as exc:
                report(exc)
            except Exception:  # keep sweeping: a bad lane entry must not stop every key's turn
                logger.exception("bgjobs: sweeping per-key lanes failed")
