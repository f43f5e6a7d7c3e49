"""Managing endpoints: add, change, disable, enable, delete, list, and rotate secrets."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select

from .. import db, runtime
from ..clock import now as _now
from ..errors import InvalidPayload
from ..settings import WebhookSettings
from ._guard import check_url
from ._models import Endpoint, EndpointRow, WebhookAttempt, WebhookDelivery
from ._signing import generate_secret, secret_key

__all__ = [
    "add_endpoint",
    "delete_endpoint",
    "disable_endpoint",
    "enable_endpoint",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "update_endpoint",
]

_EVENT_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?)$")


def current() -> WebhookSettings:
    return runtime.current().settings.webhooks


def _event_types(event_types: Sequence[str]) -> list[str]:
    if isinstance(event_types, str) or not event_types:
        raise InvalidPayload("event_types: a non-empty list of event types (payment.succeeded, payment.*, *)")
    for pattern in event_types:
        if not _EVENT_PATTERN.match(pattern) or len(pattern) > 100:
            raise InvalidPayload(f"event_types: {pattern!r} is not an event type or a prefix.* pattern")
    return list(dict.fromkeys(event_types))


def _secret(secret: str | None) -> str:
    if secret is None:
        return generate_secret()
    try:
        secret_key(secret)
    except ValueError as exc:
        raise InvalidPayload(f"secret: {exc}") from None
    return secret


def _rate_limit(rate_limit: int | None) -> int | None:
    if rate_limit is not None and rate_limit < 1:
        raise InvalidPayload("rate_limit: requests per second, at least 1 (None for no limit)")
    return rate_limit


def _check(url: str, settings: WebhookSettings) -> str:
    if len(url) > 2000:
        raise InvalidPayload(f"url: at most 2000 characters (it has {len(url)})")
    check_url(url, require_https=settings.require_https, allow=settings.allow)
    return url


def _description(description: str | None) -> str | None:
    if description is not None and len(description) > 1000:
        raise InvalidPayload(f"description: at most 1000 characters (it has {len(description)})")
    return description


def add_endpoint(
    url: str,
    *,
    event_types: Sequence[str],
    owner: str | None = None,
    secret: str | None = None,
    description: str | None = None,
    rate_limit: int | None = None,
) -> Endpoint:
    """Store an endpoint and return it; show its secret to the subscriber now (``endpoint.secret``).

    Args:
        event_types: exact types (``payment.succeeded``), ``prefix.*`` patterns, or ``*``.
        owner: whose endpoint it is; ``publish(..., owner=)`` reaches only that owner's endpoints.
        secret: ``whsec_`` and base64 of at least 24 bytes; generated when not given.
        rate_limit: requests per second to this endpoint; None for no limit.

    Raises:
        InvalidPayload: a bad event type, secret or rate limit, naming it.
        BlockedAddress: the URL is not HTTPS or reaches a blocked address (the SSRF guard).
    """
    row = EndpointRow(
        id=f"ep_{uuid.uuid4().hex}", url=_check(url, current()), owner=owner,
        event_types=_event_types(event_types), secret=_secret(secret), description=_description(description),
        rate_limit=_rate_limit(rate_limit),
    )  # fmt: skip
    with db.session() as s:
        s.add(row)
    return Endpoint.from_row(row)


def _load(s: Any, endpoint_id: str) -> EndpointRow:
    row = s.get(EndpointRow, endpoint_id)
    if row is None:
        raise InvalidPayload(f"endpoint: no webhook endpoint {endpoint_id!r}")
    return row  # type: ignore[no-any-return]


def get_endpoint(endpoint_id: str) -> Endpoint:
    """One endpoint by id.

    Raises:
        InvalidPayload: no endpoint has that id.
    """
    with db.session() as s:
        return Endpoint.from_row(_load(s, endpoint_id))


def list_endpoints(*, owner: str | None = None, enabled: bool | None = None) -> list[Endpoint]:
    """Endpoints, oldest first, optionally only one owner's or only enabled/disabled ones."""
    query = select(EndpointRow).order_by(col(EndpointRow.created_at))
    if owner is not None:
        query = query.where(EndpointRow.owner == owner)
    if enabled is not None:
        query = query.where(EndpointRow.enabled == enabled)
    with db.session() as s:
        return [Endpoint.from_row(row) for row in s.exec(query)]


_UNSET: Any = object()


def update_endpoint(
    endpoint_id: str,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = _UNSET,
    rate_limit: int | None = _UNSET,
) -> Endpoint:
    """Change an endpoint's URL, subscriptions, description or rate limit (the rest stays).

    Raises:
        InvalidPayload: unknown endpoint, or a bad value, naming the field.
        BlockedAddress: the new URL fails the SSRF guard.
    """
    with db.session() as s:
        row = _load(s, endpoint_id)
        if url is not None:
            row.url = _check(url, current())
        if event_types is not None:
            row.event_types = _event_types(event_types)
        if description is not _UNSET:
            row.description = _description(description)
        if rate_limit is not _UNSET:
            row.rate_limit = _rate_limit(rate_limit)
        row.updated_at = _now()
        s.add(row)
        return Endpoint.from_row(row)


def disable_endpoint(endpoint_id: str, *, reason: str = "disabled by an operator") -> Endpoint:
    """Stop delivering to an endpoint; its queued deliveries fail with the reason until enabled."""
    with db.session() as s:
        row = _load(s, endpoint_id)
        row.enabled, row.disabled_reason, row.disabled_at = False, reason[:1000], _now()
        row.updated_at = row.disabled_at
        s.add(row)
        return Endpoint.from_row(row)


def enable_endpoint(endpoint_id: str) -> Endpoint:
    """Deliver to an endpoint again, with a clean failure record (``recover`` resends what failed)."""
    with db.session() as s:
        row = _load(s, endpoint_id)
        row.enabled, row.disabled_reason, row.disabled_at = True, None, None
        row.failing_since, row.failures, row.updated_at = None, 0, _now()
        s.add(row)
        return Endpoint.from_row(row)


def delete_endpoint(endpoint_id: str) -> None:
    """Remove an endpoint with its deliveries and attempt log (messages stay for other endpoints)."""
    with db.session() as s:
        _load(s, endpoint_id)
        s.execute(delete(WebhookAttempt).where(col(WebhookAttempt.endpoint_id) == endpoint_id))
        s.execute(delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id))
        s.execute(delete(EndpointRow).where(col(EndpointRow.id) == endpoint_id))


def rotate_secret(
    endpoint_id: str, *, secret: str | None = None, grace: timedelta = timedelta(hours=24)
) -> str:
    """Give an endpoint a new secret; returns it.

    For ``grace`` every request is signed with both the old and the new secret, so the
    receiver can switch to the new one at any moment in that window without rejecting
    anything.

    Raises:
        InvalidPayload: unknown endpoint, or a malformed ``secret``.
    """
    new = _secret(secret)
    with db.session() as s:
        row = _load(s, endpoint_id)
        row.previous_secret, row.secret = row.secret, new
        row.previous_secret_until = _now() + grace
        row.updated_at = _now()
        s.add(row)
    return new
