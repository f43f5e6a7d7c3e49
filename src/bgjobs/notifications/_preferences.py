"""A recipient's own choices: which categories reach them by which channel, their quiet hours and
time zone, and whether digests collect their messages.

They are stored in ``bgjobs_notification_preferences`` (one row per recipient, written by the
portal's preferences page, its API, one-click unsubscribe, or the host) and read by the worker at
delivery, so a change stops messages already queued. Categories in
``BGJOBS_NOTIFICATIONS__CRITICAL`` cannot be turned off; the host's consent hook still applies to
what the recipient left on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, Column, bindparam, select
from sqlmodel import Field, SQLModel

from .. import db, runtime
from ..clock import now as _now
from ..errors import InvalidPayload
from ._models import Category, Channel

__all__ = ["NotificationPreference", "Preferences", "preferences", "set_preferences", "unsubscribe"]

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class NotificationPreference(SQLModel, table=True):
    """``bgjobs_notification_preferences``: one recipient's choices; no row means the host's defaults."""

    __tablename__ = "bgjobs_notification_preferences"

    user_id: str = Field(primary_key=True, max_length=100)
    #: ``category:channel`` pairs turned off (``marketing:email``).
    off: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: An IANA zone; None: the recipient's own (as sent) or BGJOBS_TIMEZONE.
    timezone: str | None = Field(default=None, max_length=64)
    #: ``HH:MM``; both None: the host's quiet hours; equal: none.
    quiet_start: str | None = Field(default=None, max_length=5)
    quiet_end: str | None = Field(default=None, max_length=5)
    #: False: messages a digest would collect are sent one by one; None or True: the host's digests.
    digest: bool | None = None
    updated_at: datetime = Field(default_factory=_now)


class Preferences(BaseModel):
    """What :func:`preferences` returns: the stored choices, or the defaults for a recipient without any."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    #: ``(category, channel)`` pairs turned off.
    off: frozenset[tuple[str, str]] = frozenset()
    timezone: str | None = None
    #: ``(start, end)``; None: the host's quiet hours.
    quiet_hours: tuple[time, time] | None = None
    digest: bool | None = None

    def allows(self, category: str, channel: str) -> bool:
        return (category, channel) not in self.off

    def off_by_category(self) -> dict[str, list[str]]:
        """The pairs turned off as ``set_preferences(off=)`` takes them: ``{"marketing": ["email"]}``."""
        off: dict[str, list[str]] = {}
        for category, channel in sorted(self.off):
            off.setdefault(category, []).append(channel)
        return off

    def turning_off(self, category: str, channel: str) -> dict[str, list[str]]:
        """What ``set_preferences(off=)`` takes to turn one more pair off, the others kept."""
        return self.model_copy(update={"off": self.off | {(category, channel)}}).off_by_category()

    @classmethod
    def from_row(cls, row: NotificationPreference) -> Preferences:
        quiet = None
        if row.quiet_start is not None and row.quiet_end is not None:
            quiet = (time.fromisoformat(row.quiet_start), time.fromisoformat(row.quiet_end))
        pairs = frozenset(tuple(p.split(":", 1)) for p in row.off if ":" in p)
        return cls(
            user_id=row.user_id, off=pairs, timezone=row.timezone, quiet_hours=quiet, digest=row.digest
        )


_table: Any = NotificationPreference.__table__  # type: ignore[attr-defined]
#: Read on every delivery: one Core statement, compiled once, on a read-only connection.
_ONE = select(_table).where(_table.c.user_id == bindparam("user_id"))


def preferences(user_id: str) -> Preferences:
    """A recipient's preferences (the defaults when they never chose)."""
    with db.read() as conn:
        row = conn.execute(_ONE, {"user_id": user_id}).first()
    return Preferences(user_id=user_id) if row is None else Preferences.from_row(row)  # type: ignore[arg-type]


def _critical() -> set[str]:
    return {str(c) for c in runtime.current().settings.notifications.critical}


def _pairs(off: Mapping[str, Any] | Any) -> list[str]:
    """``{"marketing": ["email", "sms"]}`` as stored pairs, every name checked."""
    if not isinstance(off, Mapping):
        raise InvalidPayload("off: a mapping of category to the channels turned off")
    critical, pairs = _critical(), []
    for category, channels in off.items():
        if category not in {c.value for c in Category} or category == Category.OPERATIONAL:
            raise InvalidPayload(
                f"off: {category!r} is not a category; use transactional, reminders or marketing"
            )
        if isinstance(channels, str) or not isinstance(channels, list | tuple | set | frozenset):
            raise InvalidPayload(f"off.{category}: a list of channels (email, sms, push)")
        for channel in channels:
            if channel not in {c.value for c in Channel}:
                raise InvalidPayload(f"off.{category}: {channel!r} is not a channel; use email, sms or push")
            if category in critical:
                raise InvalidPayload(f"off.{category}: {category} messages cannot be turned off")
            pairs.append(f"{category}:{channel}")
    return sorted(set(pairs))


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidPayload(f"timezone: {value!r} is not an IANA time zone (Europe/Lisbon)") from None
    return value


def _clock(name: str, value: str) -> str:
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise InvalidPayload(f"{name}: {value!r} is not a time of day as HH:MM")
    return value


_UNSET: Any = object()


def set_preferences(
    user_id: str,
    *,
    off: Mapping[str, Any] = _UNSET,
    timezone: str | None = _UNSET,
    quiet_hours: tuple[str, str] | None = _UNSET,
    digest: bool | None = _UNSET,
) -> Preferences:
    """Store a recipient's choices (what is not given stays); returns them.

    Args:
        off: every category's channels turned off (``{"marketing": ["email"]}``); it replaces the
            previous choice, so a category left out is on again.
        quiet_hours: ``("21:00", "08:00")``; equal times: no quiet hours; None: the host's.
        digest: False to receive each message at once rather than in the host's digests.

    Raises:
        InvalidPayload: an unknown category or channel, a critical category turned off, a bad
            zone or time, naming it.
    """
    if not 0 < len(user_id) <= 100:
        raise InvalidPayload("user_id: 1 to 100 characters")
    values: dict[str, Any] = {}
    if off is not _UNSET:
        values["off"] = _pairs(off)
    if timezone is not _UNSET:
        values["timezone"] = _zone(timezone)
    if quiet_hours is not _UNSET:
        start, end = (None, None) if quiet_hours is None else quiet_hours
        values["quiet_start"] = None if start is None else _clock("quiet_hours.start", start)
        values["quiet_end"] = None if end is None else _clock("quiet_hours.end", end)
    if digest is not _UNSET:
        if digest is not None and not isinstance(digest, bool):
            raise InvalidPayload("digest: true, false or null")
        values["digest"] = digest
    with db.session() as s:
        row = s.get(NotificationPreference, user_id)
        if row is None:
            row = NotificationPreference(user_id=user_id)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = _now()
        s.add(row)
        s.flush()
        return Preferences.from_row(row)


def unsubscribe(user_id: str, category: str, channel: str = "email") -> Preferences:
    """Turn one category off for one channel (what a one-click unsubscribe does), the rest kept."""
    return set_preferences(user_id, off=preferences(user_id).turning_off(category, channel))
