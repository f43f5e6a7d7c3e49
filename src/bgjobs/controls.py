"""Per-key controls on any job: uniqueness and debounce (docs/controls.md).

::

    @bgjobs.actor(unique=bgjobs.Unique(key=("tenant_id", "report_id"), window="10m"))
    def build_report(payload: Report) -> None: ...

    @bgjobs.actor(debounce="30s", unique=bgjobs.Unique(key=("user_id",)))
    def reindex_user(payload: User) -> None: ...     # the last of a burst runs, 30 s after it

A job's key (its actor and the named payload fields) is held in the coordination store (the Redis
broker's Redis, or RabbitMQ's coordination store) under the message id that holds it, from the
send until the job finishes (or the window lapses, whichever is first). ``drop``: a send while
the key is held sends nothing and returns the holder's message id. ``replace``: the new message
takes the key, and the one it replaced is skipped when a worker takes it (acked, never run).
Debounce is ``replace`` with every send delayed by the debounce: each send of a burst replaces
the one before, so only the last runs, once the burst has been quiet that long.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import dramatiq
from dramatiq.middleware import SkipMessage

from .errors import ConfigurationError
from .outage import CONNECTION_ERRORS, report
from .releasing import ReleasedWhenDone

if TYPE_CHECKING:
    from .typed import TypedActor

__all__ = [
    "Controls", "Unique", "Uniqueness", "admit", "controls_of", "holder_of", "holders_for", "parse_span",
]  # fmt: skip

_SPAN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
#: How long past its debounce a debounced job's key is kept for it to be taken and run.
DEBOUNCE_GRACE_MS = 3_600_000

_CLAIM = """
local old = redis.call('GET', KEYS[1])
if old then return old end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
#: A ``replace`` key whose holder has finished holds this plus the holder's id until its window lapses:
#: a message it replaced that is taken later still finds itself replaced (freeing the key would let it run).
DONE = "done:"


def parse_span(value: str | int | timedelta, *, what: str) -> int:
    """``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"500ms"``, seconds, or a timedelta; in ms.

    Raises:
        ConfigurationError: a span that does not parse, or is not positive; ``what`` names it.
    """
    if isinstance(value, timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, int):
        ms = value * 1000
    elif match := _SPAN.match(value):
        ms = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ConfigurationError(f"{what}={value!r}: give a span like 30s, 10m, 2h or 1d")
    if ms <= 0:
        raise ConfigurationError(f"{what}={value!r}: it must be more than nothing")
    return ms


@dataclass(frozen=True)
class Unique:
    """At most one job per key at a time: the key is the actor and these payload fields (none: the
    actor alone), held from the send until the job finishes, for at most ``window``."""

    key: tuple[str, ...] = ()
    window: str | int | timedelta = "10m"
    on_conflict: Literal["drop", "replace"] = "drop"
    window_ms: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.on_conflict not in ("drop", "replace"):
            raise ConfigurationError(f"Unique: on_conflict={self.on_conflict!r}; it is drop or replace")
        object.__setattr__(self, "key", (self.key,) if isinstance(self.key, str) else tuple(self.key))
        object.__setattr__(self, "window_ms", parse_span(self.window, what="Unique: window"))


@dataclass(frozen=True)
class Controls:
    """What an actor declared: its uniqueness and its debounce (ms, 0 for none)."""

    unique: Unique
    debounce_ms: int = 0

    @classmethod
    def declared(
        cls, where: str, payload: type[Any], unique: Unique | None, debounce: str | int | timedelta | None
    ) -> Controls | None:
        """The actor's controls, checked against its payload's fields; None without any."""
        if unique is None and debounce is None:
            return None
        if unique is not None and not isinstance(unique, Unique):
            raise ConfigurationError(f"{where}: unique= takes bgjobs.Unique(key=..., window=...)")
        debounce_ms = 0 if debounce is None else parse_span(debounce, what=f"{where}: debounce")
        unique = unique or Unique()
        if debounce_ms:
            unique = Unique(key=unique.key, window=timedelta(milliseconds=debounce_ms + DEBOUNCE_GRACE_MS),
                            on_conflict="replace")  # fmt: skip
        fields = set(getattr(payload, "model_fields", {}))
        unknown = [f for f in unique.key if f not in fields]
        if unknown:
            raise ConfigurationError(f"{where}: unique key {', '.join(unknown)} is not a field of "
                                     f"{payload.__name__} ({', '.join(sorted(fields))})")  # fmt: skip
        return cls(unique, debounce_ms)

    def name(self, actor: str, message: dramatiq.Message[Any]) -> str:
        data = message.args[0] if message.args else {}
        values = [data.get(f) for f in self.unique.key] if isinstance(data, dict) else []
        return f"bgjobs-unique:{actor}:{json.dumps(values, separators=(',', ':'), default=str)}"


class _Holders:
    """Who holds each key: the coordination store's Redis, or this process for the stub."""

    def __init__(self, coordination: Any) -> None:
        self.coordination = coordination
        self.client = getattr(coordination, "client", None)
        if self.client is not None:
            self._claim = self.client.register_script(_CLAIM)
            self._release = self.client.register_script(_RELEASE)

    def claim(self, names: list[str], ids: list[str], ttl_ms: int, *, replace: bool) -> list[str | None]:
        """Take each key for its id; each key's holder before (None where it was free)."""
        if self.client is None:
            return [self._local(n, i, ttl_ms, replace) for n, i in zip(names, ids, strict=True)]
        pipe = self.client.pipeline(transaction=False)
        for name, id in zip(names, ids, strict=True):
            key = self.coordination.key(name)
            if replace:
                pipe.set(key, id, px=ttl_ms, get=True)
            else:
                self._claim(keys=[key], args=[id, ttl_ms], client=pipe)
        return [None if v is None else v.decode() for v in pipe.execute()]

    def holder(self, name: str) -> str | None:
        if self.client is None:
            return self._local(name, None, 0, False)
        found = self.client.get(self.coordination.key(name))
        return None if found is None else str(found.decode())

    def release(self, name: str, id: str, *, replaced: bool = False) -> None:
        """Free the key if ``id`` holds it; for ``replace`` keys (``replaced``), mark it done instead."""
        done = DONE + id if replaced else ""
        if self.client is None:
            with self.coordination.lock:
                if self.coordination.values.get(name) == id:
                    if done:
                        self.coordination.values[name] = done
                    else:
                        del self.coordination.values[name]
            return
        self._release(keys=[self.coordination.key(name)], args=[id, done])

    def _local(self, name: str, id: str | None, ttl_ms: int, replace: bool) -> str | None:
        c = self.coordination
        now = c.now()
        with c.lock:
            if c.expiry.get(name, now + 1) <= now:
                c.values.pop(name, None)
            old = c.values.get(name)
            if id is not None and (old is None or replace):
                c.values[name], c.expiry[name] = id, now + ttl_ms / 1000
            return None if old is None else str(old)


_holders: dict[int, tuple[Any, _Holders]] = {}


def holders_for(broker: dramatiq.Broker) -> _Holders:
    from .coordination import coordination_for

    coordination = coordination_for(broker)
    found = _holders.get(id(coordination))
    if found is None or found[0] is not coordination:
        found = _holders[id(coordination)] = (coordination, _Holders(coordination))
    return found[1]


def holder_of(broker: dramatiq.Broker, typed: Any, values: tuple[Any, ...]) -> str | None:
    """The message id holding ``typed``'s unique key ``values`` (its key fields' values, in order),
    which gives the key up: for a cancel by key. None when no job holds it.

    Raises:
        ConfigurationError: the actor has no ``unique=``, or the values do not match its key.
    """
    controls, name = getattr(typed, "controls", None), getattr(typed, "name", typed)
    if controls is None:
        raise ConfigurationError(f"cancel by key: {name} was declared without unique=")
    if len(values) != len(controls.unique.key):
        raise ConfigurationError(f"cancel by key: {name}'s key is {controls.unique.key}, given {values!r}")
    fields = dict(zip(controls.unique.key, values, strict=True))
    probe: dramatiq.Message[Any] = dramatiq.Message(queue_name="", actor_name=name, args=(fields,), kwargs={},
                                                    options={})  # fmt: skip
    name, holders = controls.name(typed.name, probe), holders_for(broker)
    found = holders.holder(name)
    if found is None or found.startswith(DONE):
        return None
    holders.release(name, found)
    return found


def admit(
    broker: dramatiq.Broker, typed: TypedActor[Any, Any], messages: list[dramatiq.Message[Any]]
) -> tuple[list[dramatiq.Message[Any]], list[dramatiq.Message[Any]]]:
    """The messages to enqueue, and what each send returns: a dropped duplicate returns a copy
    carrying the holder's message id (nothing is enqueued for it). A message that already holds
    its key (sent again by the outbox's relay, say) is sent."""
    controls = typed.controls
    assert controls is not None
    names = [controls.name(typed.name, m) for m in messages]
    replace = controls.unique.on_conflict == "replace"
    before = holders_for(broker).claim(names, [m.message_id for m in messages], controls.unique.window_ms,
                                  replace=replace)  # fmt: skip
    sent, answers = [], []
    for message, holder in zip(messages, before, strict=True):
        if replace or holder is None or holder == message.message_id:
            sent.append(message)
            answers.append(message)
        else:
            answers.append(message.copy(message_id=holder))
    return sent, answers


class Uniqueness(ReleasedWhenDone):
    """In the worker: skips a job whose key a later send took over (``replace``, debounce), and
    gives the key up when the job finishes (succeeded, dead-lettered, or skipped)."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        controls = controls_of(message)
        if controls is not None and controls.unique.on_conflict == "replace":
            try:
                holder = holders_for(broker).holder(controls.name(message.actor_name, message))
            except CONNECTION_ERRORS as exc:  # the store is down: run it (at least once, as everywhere)
                report(exc)
                return
            if holder is not None and holder != message.message_id:
                raise SkipMessage(f"{message.actor_name} {message.message_id} was replaced by {holder}")

    def release(self, broker: dramatiq.Broker, message: Any) -> None:
        controls = controls_of(message)
        if controls is not None:
            try:
                holders_for(broker).release(controls.name(message.actor_name, message), message.message_id,
                                            replaced=controls.unique.on_conflict == "replace")  # fmt: skip
            except CONNECTION_ERRORS as exc:  # the key lapses with its window instead
                report(exc)


def controls_of(message: Any) -> Controls | None:
    from .registry import declared

    return getattr(declared(message.actor_name), "controls", None)
