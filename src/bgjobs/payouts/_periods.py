"""Payout periods: ISO weeks (``2025-W23``, Monday to Sunday) and calendar months (``2025-06``),
in the deployment's time zone (``BGJOBS_TIMEZONE``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..errors import InvalidPayload

__all__ = ["Period", "period_for"]

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    kind: str
    label: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """The run's key, which makes a second trigger of the same period resume, not pay again."""
        return f"{self.kind}:{self.label}"


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def period_for(kind: str, label: str | None, *, timezone: str, now: datetime | None = None) -> Period:
    """The period named by ``label``, or the last complete one before ``now``.

    Raises:
        InvalidPayload: a label that is not ``YYYY-Www`` (weekly) or ``YYYY-MM`` (monthly).
    """
    zone = ZoneInfo(timezone)
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    if kind == "weekly":
        if label is None:
            this_monday = today - timedelta(days=today.weekday())
            year, week, _ = (this_monday - timedelta(days=7)).isocalendar()
            label = f"{year}-W{week:02d}"
        match = _WEEK.match(label)
        try:
            monday = date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1) if match else None
        except ValueError:
            monday = None
        if monday is None:
            raise InvalidPayload(f"period: {label!r} is not an ISO week like 2025-W23")
        return Period(kind, label, _midnight(monday, zone), _midnight(monday + timedelta(days=7), zone))
    if kind == "monthly":
        if label is None:
            last = today.replace(day=1) - timedelta(days=1)
            label = f"{last.year}-{last.month:02d}"
        match = _MONTH.match(label)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise InvalidPayload(f"period: {label!r} is not a month like 2025-06")
        first = date(int(match.group(1)), int(match.group(2)), 1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(kind, label, _midnight(first, zone), _midnight(following, zone))
    raise InvalidPayload(f"kind: {kind!r}; payout runs are weekly or monthly")
