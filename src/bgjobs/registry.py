"""Every typed actor declared in this process, by name: the one place they are listed.

Declaring an actor (:func:`bgjobs.actor`) records it here and nowhere else; the runtime binds the
whole list to its broker when it builds one (:mod:`bgjobs.runtime`). Kept apart from
:mod:`bgjobs.typed` so that the runtime can bind actors without importing what declares them.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .errors import ConfigurationError

__all__ = ["QUEUES", "Declared", "declare", "declared", "registered"]

#: One queue per family, so operators can run separate pools with ``-Q``.
QUEUES = ("default", "notifications", "webhooks", "payouts", "exports", "cleanup")


class Declared(Protocol):
    """What the registry needs of a declared actor."""

    name: str
    origin: str

    def bind(self, broker: Any, settings: Any) -> Any: ...


_lock = threading.Lock()
_actors: dict[str, Any] = {}


def declare(actor: Declared) -> None:
    """Record ``actor``; declaring the same function twice (a re-import) replaces it.

    Raises:
        ConfigurationError: another function already holds the name.
    """
    with _lock:
        known = _actors.get(actor.name)
        if known is not None and known.origin != actor.origin:
            raise ConfigurationError(f"an actor named {actor.name!r} is already declared")
        _actors[actor.name] = actor


def registered() -> dict[str, Any]:
    """Every actor declared so far, by name."""
    with _lock:
        return dict(_actors)


def declared(name: str) -> Any:
    """The actor declared under ``name``, or None: one lookup, for the worker's per-message hooks
    (a dict read is atomic; :func:`registered` copies the whole registry)."""
    return _actors.get(name)
