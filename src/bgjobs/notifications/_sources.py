"""What the host tells notifications: who consents to what, and what is due.

Each hook is a plain callable, set in code with :func:`bgjobs.configure` or by a
``BGJOBS_NOTIFICATIONS__*`` setting naming ``pkg.mod:function``. Code wins over settings.
The protocols below say what each is called with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any, Protocol

from .. import wiring
from ..settings import NotificationSettings
from ._models import AppointmentDue, Category, Channel, PastDueAccount, TripDue

__all__ = ["Appointments", "Consent", "PastDue", "UnpaidTrips", "hook"]


class Consent(Protocol):
    def __call__(self, *, user_id: str, category: Category, channel: Channel) -> bool: ...


class Appointments(Protocol):
    def __call__(self, *, start: datetime, end: datetime) -> Iterable[AppointmentDue]: ...


class UnpaidTrips(Protocol):
    def __call__(self, *, trip_date: date) -> Iterable[TripDue]: ...


class PastDue(Protocol):
    def __call__(self) -> Iterable[PastDueAccount]: ...


def hook(name: str, settings: NotificationSettings) -> Callable[..., Any] | None:
    """The hook set in code, else the one named in settings, else None.

    Raises:
        ConfigurationError: the setting names something that cannot be imported.
    """
    return wiring.hook(name, getattr(settings, name))
