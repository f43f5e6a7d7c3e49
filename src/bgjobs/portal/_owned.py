"""What an owner may see and do with their webhook endpoints: the webhooks family's operations,
each reached only through an endpoint the token's owner has.

An id of another owner's endpoint (or message) answers exactly as an id that does not exist, so
guessing ids tells nothing. Pages and the API both call these; neither reaches the family directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .. import runtime
from ..clock import now as _now
from ..errors import InvalidPayload, NotFound
from ..webhooks import _endpoints as endpoints
from ..webhooks import _operations as operations
from ..webhooks._catalog import catalog
from ..webhooks._models import Attempt, Endpoint
from ..webhooks._publishing import publish
from ._tokens import Token

__all__ = [
    "BODY_SHOWN",
    "GRACE",
    "add",
    "attempt_log",
    "edit",
    "endpoint_of",
    "overview",
    "recover",
    "replay",
    "rotate",
    "send_test",
    "shown",
    "subscribable",
    "summary",
]

#: The most of a request's or response's body an attempt log shows.
BODY_SHOWN = 4_096
#: What the attempt log shows of the signature header: its scheme, never the value.
SIGNATURE_SHOWN = "v1,••••••••"
GRACE = timedelta(hours=24)


def endpoint_of(token: Token, endpoint_id: str) -> Endpoint:
    """The owner's endpoint; NotFound (as for a missing one) when it is another owner's."""
    try:
        found = endpoints.get_endpoint(endpoint_id)
    except InvalidPayload:
        found = None
    if found is None or found.owner != token.owner:
        raise NotFound(f"endpoint: no webhook endpoint {endpoint_id!r}")
    return found


def _with_rates(found: list[Endpoint]) -> list[dict[str, Any]]:
    """Endpoints as shown, each with its success over the last 24 hours (one query for all)."""
    rates = operations.success_rates([e.id for e in found], since=_now() - timedelta(hours=24))
    rows = []
    for e in found:
        tried, good = rates.get(e.id, (0, 0))
        rows.append(
            {
                **shown(e),
                "attempts_24h": tried,
                "succeeded_24h": good,
                "success_rate_24h": round(good / tried, 4) if tried else None,
            }
        )
    return rows


def overview(token: Token) -> list[dict[str, Any]]:
    """The owner's endpoints with their success over the last 24 hours."""
    return _with_rates(endpoints.list_endpoints(owner=token.owner))


def summary(token: Token, endpoint_id: str) -> dict[str, Any]:
    """One of the owner's endpoints as :func:`overview` shows it (NotFound as :func:`endpoint_of`)."""
    return _with_rates([endpoint_of(token, endpoint_id)])[0]


def shown(e: Endpoint) -> dict[str, Any]:
    """An endpoint as the owner sees it: never its secret (shown once, at creation and rotation)."""
    return {
        "id": e.id,
        "url": e.url,
        "event_types": list(e.event_types),
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "failing_since": e.failing_since,
        "rotating": e.rotating,
        "created_at": e.created_at,
    }


def subscribable() -> list[str]:
    return [t.name for t in catalog()]


def _types(event_types: Sequence[str]) -> list[str]:
    """Subscriptions: the catalog's types (or ``prefix.*``/``*`` over them) when it has any."""
    known = subscribable()
    if known:
        for pattern in event_types:
            if pattern != "*" and not any(
                name == pattern or (pattern.endswith(".*") and name.startswith(pattern[:-1]))
                for name in known
            ):
                raise InvalidPayload(f"event_types: {pattern!r} is not in the catalog ({', '.join(known)})")
    return list(event_types)


def add(token: Token, *, url: str, event_types: Sequence[str], description: str | None) -> Endpoint:
    """A new endpoint of the owner (the SSRF guard and the API's validation apply); its secret is
    in the result, to be shown once."""
    return endpoints.add_endpoint(
        url, event_types=_types(event_types), owner=token.owner, description=description or None
    )


def edit(
    token: Token,
    endpoint_id: str,
    *,
    url: str | None,
    event_types: Sequence[str] | None,
    description: str | None,
) -> Endpoint:
    endpoint_of(token, endpoint_id)
    return endpoints.update_endpoint(
        endpoint_id,
        url=url,
        event_types=None if event_types is None else _types(event_types),
        description=description or None,
    )


def rotate(token: Token, endpoint_id: str) -> str:
    """A new secret; the old one still signs for :data:`GRACE` (docs/portal.md)."""
    endpoint_of(token, endpoint_id)
    return endpoints.rotate_secret(endpoint_id, grace=GRACE)


def send_test(token: Token, endpoint_id: str) -> str:
    """Send the test event to this endpoint only; its message id."""
    endpoint = endpoint_of(token, endpoint_id)
    if not endpoint.enabled:
        raise InvalidPayload("endpoint: it is disabled; enable it to send a test event")
    kind = runtime.current().settings.portal.test_event_type
    data = {"message": "a test event from the portal", "endpoint_id": endpoint_id}
    return publish(kind, data, owner=token.owner, endpoint=endpoint_id)


def replay(token: Token, endpoint_id: str, message_id: str) -> operations.Replayed:
    endpoint_of(token, endpoint_id)
    try:
        return operations.replay(message_id, endpoint_id=endpoint_id)
    except InvalidPayload:
        raise NotFound(f"message: no delivery of {message_id!r} to this endpoint") from None


def recover(token: Token, endpoint_id: str, since: datetime) -> operations.Replayed:
    endpoint_of(token, endpoint_id)
    if since > _now():
        raise InvalidPayload("since: a time in the past")
    return operations.recover(endpoint_id, since=since)


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= BODY_SHOWN:
        return text
    return f"{text[:BODY_SHOWN]}… ({len(text) - BODY_SHOWN} more characters)"


def attempt_log(
    token: Token, endpoint_id: str, *, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """The endpoint's attempts, newest first, each with its request (headers masked) and response."""
    endpoint = endpoint_of(token, endpoint_id)
    found: list[Attempt] = operations.endpoint_attempts(endpoint_id, limit=limit, before=before)
    sent = operations.bodies(sorted({a.message_id for a in found}))
    return [
        {
            "id": a.id,
            "message_id": a.message_id,
            "attempt": a.attempt,
            "trigger": a.trigger,
            "requested_at": a.requested_at,
            "succeeded": a.succeeded,
            "duration_ms": a.duration_ms,
            "request": {
                "method": "POST",
                "url": endpoint.url,
                "headers": {
                    "content-type": "application/json",
                    "webhook-id": a.message_id,
                    "webhook-signature": SIGNATURE_SHOWN,
                },
                "body": _bounded(sent.get(a.message_id)),
            },
            "response": {
                "status_code": a.status_code,
                "body": _bounded(a.response),
                "error": _bounded(a.error),
            },
        }
        for a in found
    ]
