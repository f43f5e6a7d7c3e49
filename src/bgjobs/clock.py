"""The time bgjobs stamps rows and takes decisions with: aware datetimes in UTC.

One function instead of a ``_now()`` per module, so the clock is replaced in one place (a test
that needs another time, or a runtime that carries its own clock).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now"]


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
