"""Reading a moment an operator typed: a filter's "since" from a form, a query string or a body.

A form's ``datetime-local`` input sends a time without a zone, a person types a date, an API
caller sends ISO 8601 with an offset. All three are accepted; a time without a zone is UTC (the
console labels such fields "UTC"). An empty field means no filter, and anything else is refused
with one line naming the field and the forms it takes, never compared as it is (a naive time
compared with an aware one was a 500).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from .errors import InvalidPayload

__all__ = ["as_utc", "parse_moment"]


def as_utc(moment: datetime) -> datetime:
    """``moment`` with a zone: one without is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_moment(value: str | datetime | None, *, field: str = "since") -> datetime | None:
    """The moment ``value`` names, aware; None for an empty field.

    Raises:
        InvalidPayload: naming ``field``, for text that is neither a date nor a time.
    """
    if value is None or isinstance(value, datetime):
        return None if value is None else as_utc(value)
    text = value.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1)))
    except ValueError:
        raise InvalidPayload(
            f"{field}: {value!r} is not a date or a time; write 2026-12-01, 2026-12-01T08:30 (UTC) "
            "or 2026-12-01T08:30+01:00"
        ) from None
