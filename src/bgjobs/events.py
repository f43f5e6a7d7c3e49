"""Durable domain events: ``publish(name, payload)`` -> one Dramatiq message per subscriber.

Never pub/sub: an event published while no worker runs waits in a queue. Subscribers are
typed actors, registered for an exact name or a pattern (``booking.*``); an event name may
declare its payload model, checked at publish.

``publish`` sends one fan-out message (``events.fanout``), and the worker that takes it sends
one message per subscriber *the worker* knows. Subscribers are declared in the modules the
worker loads (``BGJOBS_JOBS``), which the publishing process (a web app, a script) may never
import: resolving them in the publisher reached none of them, silently, and used up the key.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dramatiq
from pydantic import BaseModel, ValidationError

from . import runtime
from .errors import InvalidPayload
from .typed import Payload, TypedActor, actor, reachable, send_messages

__all__ = [
    "EventFanout", "declare", "fanout", "fanout_message", "on", "publish", "subscribe", "subscribers",
    "unsubscribe", "validate",
]  # fmt: skip

logger = logging.getLogger("bgjobs.events")

A = TypeVar("A", bound=TypedActor[Any, Any])

_lock = threading.Lock()
_models: dict[str, type[BaseModel]] = {}
_subscriptions: list[tuple[str, TypedActor[Any, Any], Callable[[str], bool] | None]] = []


def declare(name: str, model: type[BaseModel]) -> None:
    """Declare the payload model of event ``name``: publish validates against it."""
    with _lock:
        _models[name] = model


def subscribe(
    pattern: str, subscriber: TypedActor[Any, Any], *, when: Callable[[str], bool] | None = None
) -> None:
    """Deliver every event matching ``pattern`` (``booking.created``, ``booking.*``) to ``subscriber``.

    Args:
        when: asked with the event name at publish time; False skips this subscriber (a
            setting that turns it off costs no message).
    """
    with _lock:
        if not any(p == pattern and s is subscriber for p, s, _ in _subscriptions):
            _subscriptions.append((pattern, subscriber, when))


def unsubscribe(pattern: str, subscriber: TypedActor[Any, Any]) -> bool:
    """Stop delivering events matching ``pattern`` to ``subscriber``; False if it was not subscribed.

    For subscriptions made at run time (a plugin turned off, a test's watcher); events already
    expanded into messages are still delivered.
    """
    with _lock:
        before = len(_subscriptions)
        kept = [(p, s, w) for p, s, w in _subscriptions if not (p == pattern and s is subscriber)]
        _subscriptions[:] = kept
        return len(_subscriptions) < before


def on(pattern: str, *, when: Callable[[str], bool] | None = None) -> Callable[[A], A]:
    """Decorator form of :func:`subscribe`: put it above ``@bgjobs.actor``."""

    def decorate(subscriber: A) -> A:
        subscribe(pattern, subscriber, when=when)
        return subscriber

    return decorate


def subscribers(name: str) -> list[TypedActor[Any, Any]]:
    """The actors an event called ``name`` goes to, each once."""
    found: list[TypedActor[Any, Any]] = []
    with _lock:
        matching = [(s, w) for p, s, w in _subscriptions if fnmatch.fnmatchcase(name, p)]
    for subscriber, when in matching:
        if subscriber not in found and (when is None or when(name)):
            found.append(subscriber)
    return found


def _first_time(name: str, key: str, window_s: int) -> bool:
    return runtime.current().coordination.first_time(f"__bgjobs_events__:{name}:{key}", ttl_s=window_s)


def validate(name: str, payload: BaseModel | Mapping[str, Any]) -> BaseModel | Mapping[str, Any]:
    """The payload checked against the event's declared model, if it has one.

    Raises:
        InvalidPayload: names each field that does not fit.
    """
    model = _models.get(name)
    if model is None or isinstance(payload, model):
        return payload
    try:
        return model.model_validate(payload.model_dump() if isinstance(payload, BaseModel) else payload)
    except ValidationError as exc:
        raise InvalidPayload.from_validation_error(f"event {name}", exc) from None


class EventFanout(Payload):
    """One published event, before the worker expands it to its subscribers."""

    name: str
    payload: dict[str, Any]
    #: Each subscriber's message carries ``<delivery_key>:<actor>`` as its delivery key (see
    #: :func:`bgjobs.delivery_key`): ``event:<name>:<key>`` for a keyed event, ``outbox:<row>`` from
    #: the outbox; None for an unkeyed event.
    delivery_key: str | None = None


def publish(
    name: str, payload: BaseModel | Mapping[str, Any], *, key: str | None = None
) -> list[dramatiq.Message[Any]]:
    """Publish an event: one durable message, expanded by a worker into one per subscriber.

    Args:
        key: deduplicates; the same (name, key) within the window from settings is delivered once.

    Returns:
        The fan-out message sent; empty when the key was seen within the window.

    Raises:
        InvalidPayload: the payload does not fit the event's declared model (where this process
            declared it; the worker checks again against its own declarations and subscribers).
        BrokerUnavailable: the broker, or the store that keeps the dedupe keys, does not answer.
    """

    checked = validate(name, payload)
    data = checked.model_dump(mode="json") if isinstance(checked, BaseModel) else dict(checked)
    message = fanout_message(name, data, delivery_key=f"event:{name}:{key}" if key is not None else None)
    current = runtime.current()
    if key is not None:
        with reachable():
            if not _first_time(name, key, current.settings.events.dedupe_window_s):
                return []
    return send_messages(current.broker, [message])


def fanout_message(name: str, data: dict[str, Any], *, delivery_key: str | None) -> dramatiq.Message[Any]:
    """The one message that stands for an event until a worker expands it (publish and the outbox)."""
    return fanout.message(EventFanout(name=name, payload=data, delivery_key=delivery_key), bgjobs_event=name)


@actor(name="events.fanout", queue="default")
def fanout(event: EventFanout) -> None:
    """Send the event to every subscriber this worker knows, in one round trip (all or none).

    Raises:
        InvalidPayload: the payload fits the event's declared model or a subscriber's model
            in no way; nothing is sent and the fan-out is dead-lettered with the field named.
    """
    payload = validate(event.name, event.payload)
    targets = subscribers(event.name)
    if not targets:
        logger.warning("event %s has no subscriber in this worker (is its module in BGJOBS_JOBS?)",
                       event.name)  # fmt: skip
        return
    base = event.delivery_key
    messages = [
        t.message(payload, bgjobs_event=event.name, **({"bgjobs_key": f"{base}:{t.name}"} if base else {}))
        for t in targets
    ]

    send_messages(runtime.current().broker, messages)
