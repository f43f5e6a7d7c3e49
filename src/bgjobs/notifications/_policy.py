"""Notifications' rules, shared by the sender and the delivery: keys, quiet hours, consent.

Both sides ask the same questions (is this message held for quiet hours? does consent refuse
it?), the sender to hold or skip at once, the worker again at delivery; one module answers them.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..settings import NotificationSettings, Settings
from . import _sources as sources
from ._models import Category, Channel, ChannelMessage
from ._preferences import Preferences

__all__ = [
    "FINAL", "MAX_KEY_LENGTH", "channel_key", "consent_refusal", "hold_until", "ms_until", "quiet_until",
]  # fmt: skip

MAX_KEY_LENGTH = 200
#: Statuses after which a copy of the message is a duplicate and nothing more is done.
FINAL = ("sent", "skipped")


def channel_key(key: str, channel: Channel | str) -> str:
    """The delivery log's key of one channel of a notification: ``notif:<key>:<channel>``."""
    return f"notif:{key}:{channel}"


def quiet_until(now: datetime, zone: str, start: time, end: time) -> datetime | None:
    """When the quiet hours around ``now`` end in ``zone``, or None outside them."""
    if start == end:
        return None
    local = now.astimezone(ZoneInfo(zone))
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside, day = start <= clock < end, local.date()
    else:  # the hours wrap past midnight (21:00-08:00)
        inside = clock >= start or clock < end
        day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return datetime.combine(day, end, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def hold_until(
    message: ChannelMessage, channel: Channel, settings: Settings, now: datetime,
    chosen: Preferences | None = None,
) -> datetime | None:  # fmt: skip
    """When quiet hours end for this message (None: send now): the recipient's own hours and zone
    when they chose them, the host's otherwise."""
    if channel is Channel.EMAIL or message.urgent:
        return None
    n = settings.notifications
    start, end = n.quiet_hours_start, n.quiet_hours_end
    if chosen is not None and chosen.quiet_hours is not None:
        start, end = chosen.quiet_hours
    zone = (chosen.timezone if chosen else None) or message.recipient.timezone or settings.timezone
    return quiet_until(now, zone, start, end)


def consent_refusal(
    category: Category, user_id: Any, channel: Channel, settings: NotificationSettings,
    chosen: Preferences | None = None,
) -> str | None:  # fmt: skip
    """Why this message may not go (None: it may): the recipient turned it off, or the host's
    consent hook (or its absence, for marketing) says no. Critical categories always go."""
    if category in settings.critical:
        return None
    if chosen is not None and not chosen.allows(category, channel):
        return f"user {user_id} turned off {category} by {channel} (their preferences)"
    if category in (Category.TRANSACTIONAL, Category.OPERATIONAL):
        return None
    ask = sources.hook("consent", settings)
    if ask is None:
        if category is Category.MARKETING:
            return "marketing needs consent and no consent hook is configured"
        return None
    if ask(user_id=user_id, category=category, channel=channel):
        return None
    return f"user {user_id} does not accept {category} by {channel}"




def ms_until(moment: datetime, now: datetime) -> int:
    return max(0, int((moment - now).total_seconds() * 1000))
