"""Durable domain events: ``publish(name, payload)`` -> one Dramatiq message per subscriber.

Never pub/sub: an event published while no worker runs waits in its subscribers'
queues. Subscribers are typed actors, registered for an exact name or a pattern
(``booking.*``); an event name may declare its payload model, checked at publish.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dramatiq
from pydantic import BaseModel, ValidationError

from .errors import InvalidPayload
from .typed import TypedActor, send_messages

__all__ = ["declare", "on", "publish", "subscribe", "subscribers", "validate"]

A = TypeVar("A", bound=TypedActor[Any, Any])

_lock = threading.Lock()
_models: dict[str, type[BaseModel]] = {}
_subscriptions: list[tuple[str, TypedActor[Any, Any], Callable[[str], bool] | None]] = []
_seen: dict[str, float] = {}  # dedupe keys for brokers without Redis (the stub broker)


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


def _first_time(broker: dramatiq.Broker, name: str, key: str, window_s: int) -> bool:
    dedupe_key = f"__bgjobs_events__:{name}:{key}"
    client = getattr(broker, "client", None)
    if client is not None:
        namespace = getattr(broker, "namespace", "dramatiq")
        return bool(client.set(f"{namespace}:{dedupe_key}", "1", nx=True, ex=window_s))
    now = time.monotonic()
    with _lock:
        if _seen.get(dedupe_key, 0) > now:
            return False
        _seen[dedupe_key] = now + window_s
        return True


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


def publish(
    name: str, payload: BaseModel | Mapping[str, Any], *, key: str | None = None
) -> list[dramatiq.Message[Any]]:
    """Publish an event: one durable message per subscriber, in one round trip.

    Args:
        key: deduplicates; the same (name, key) within the window from settings is delivered once.

    Returns:
        The messages sent; empty when there is no subscriber or the key was seen.

    Raises:
        InvalidPayload: the payload does not fit the event's declared model or a subscriber's.
    """
    from .broker import get_broker, settings_for

    payload = validate(name, payload)
    targets = subscribers(name)
    messages = [
        t.message(
            payload, bgjobs_event=name, **({"bgjobs_key": f"event:{name}:{key}:{t.name}"} if key else {})
        )
        for t in targets
    ]
    if not messages:
        return []
    broker = get_broker()
    if key is not None and not _first_time(broker, name, key, settings_for(broker).events.dedupe_window_s):
        return []
    return send_messages(broker, messages)
