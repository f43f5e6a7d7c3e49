"""What the host tells notifications: who consents to what, and what is due.

Each hook is a plain callable, set in code with :func:`configure` or by a
``BGJOBS_NOTIFICATIONS__*`` setting naming ``pkg.mod:function``. Code wins over settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any, Protocol

from ..settings import NotificationSettings
from ..wiring import load_object
from .models import AppointmentDue, Category, Channel, PastDueAccount, TripDue

__all__ = ["Consent", "configure", "hook", "reset"]


class Consent(Protocol):
    def __call__(self, *, user_id: str, category: Category, channel: Channel) -> bool: ...


class Appointments(Protocol):
    def __call__(self, *, start: datetime, end: datetime) -> Iterable[AppointmentDue]: ...


class UnpaidTrips(Protocol):
    def __call__(self, *, trip_date: date) -> Iterable[TripDue]: ...


class PastDue(Protocol):
    def __call__(self) -> Iterable[PastDueAccount]: ...


HOOKS = ("consent", "appointments", "unpaid_trips", "past_due")

_lock = threading.Lock()
_hooks: dict[str, Callable[..., Any]] = {}


def configure(
    *,
    consent: Consent | None = None,
    appointments: Appointments | None = None,
    unpaid_trips: UnpaidTrips | None = None,
    past_due: PastDue | None = None,
) -> None:
    """Set hooks in code; only those given change."""
    given = {"consent": consent, "appointments": appointments, "unpaid_trips": unpaid_trips,
             "past_due": past_due}  # fmt: skip
    with _lock:
        _hooks.update({name: fn for name, fn in given.items() if fn is not None})


def reset() -> None:
    with _lock:
        _hooks.clear()


def hook(name: str, settings: NotificationSettings) -> Callable[..., Any] | None:
    """The hook set in code, else the one named in settings, else None.

    Raises:
        ConfigurationError: the setting names something that cannot be imported.
    """
    with _lock:
        found = _hooks.get(name)
    if found is not None:
        return found
    path = getattr(settings, name)
    return None if path is None else load_object(path)
