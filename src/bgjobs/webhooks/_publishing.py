"""Publishing a webhook (the host side): store the message once, one delivery per endpoint.

``publish`` checks what a worker would refuse (event type, key, JSON, size) so a bad call fails
in the caller, stores the message and its deliveries in one transaction, puts the message in
its owner's lane and wakes a dispatcher (:mod:`._dispatch`). A crash between the commit and the
lane leaves the deliveries ``pending``: the health sweep sends them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlmodel import col

from .. import db, runtime, tracing
from ..clock import now as _now
from ..errors import InvalidPayload
from ..typed import reachable
from ._catalog import check
from ._endpoints import current
from ._lanes import TRACE_SEPARATOR, lanes_for
from ._models import DeliveryJob, EndpointRow, WebhookDelivery, WebhookMessage
from .tasks import dispatch_webhooks

__all__ = ["MAX_KEY_LENGTH", "matches", "publish"]

MAX_KEY_LENGTH = 200
_EVENT_TYPE_LENGTH = 100


def matches(event_type: str, patterns: list[str]) -> bool:
    """True if ``event_type`` is one of ``patterns`` (exact, ``prefix.*``, or ``*``)."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def _body(event_type: str, data: BaseModel | Mapping[str, Any], now: datetime) -> bytes:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        return pydantic_core.to_json({"type": event_type, "timestamp": stamp, "data": payload})
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidPayload(f"data: not JSON-serialisable: {exc}") from None


def _message_id(event_type: str, owner: str | None, key: str | None) -> str:
    if key is None:
        return f"msg_{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{event_type}\0{owner or ''}\0{key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _delivery_row(message_id: str, endpoint_id: str, now: datetime, enabled: bool) -> dict[str, Any]:
    # A disabled endpoint's delivery is kept, failed, so recovering the endpoint later sends it.
    return {"id": f"dlv_{uuid.uuid4().hex}", "message_id": message_id, "endpoint_id": endpoint_id,
            "status": "pending" if enabled else "failed", "attempts": 0,
            "next_attempt_at": now if enabled else None,
            "last_error": None if enabled else "endpoint disabled",
            "created_at": now, "updated_at": now}  # fmt: skip


@tracing.one_trace(runtime.current)
def publish(
    event_type: str,
    data: BaseModel | Mapping[str, Any],
    *,
    owner: str | None = None,
    key: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Store a message once and send it to every enabled endpoint of ``owner`` subscribed to it.

    Disabled endpoints subscribed to it get a delivery marked failed, which ``recover`` sends
    once the endpoint is enabled again.

    Args:
        data: the event's data (a mapping or a model); the body is
            ``{"type", "timestamp", "data"}``.
        owner: only endpoints with this owner receive it (None: endpoints without an owner).
        key: publishing the same (event type, owner, key) again returns the first message's id
            and delivers nothing new.
        endpoint: only this endpoint of ``owner`` receives it, subscribed to the type or not (a
            test event); an id that is not the owner's delivers to nobody.

    Returns:
        The message id (``msg_...``), the ``webhook-id`` receivers see on every attempt.

    Raises:
        InvalidPayload: a bad event type or key, data that is not JSON or does not match the
            type's schema in the catalog, or a body over ``BGJOBS_WEBHOOKS__MAX_PAYLOAD_BYTES``.
        BrokerUnavailable: the broker or the coordination store does not answer; the message
            is stored, and publishing it again with the same key sends what did not go.
    """
    settings = current()
    if not 0 < len(event_type) <= _EVENT_TYPE_LENGTH or "*" in event_type or event_type != event_type.strip():
        raise InvalidPayload(f"event_type: {event_type!r} must be 1 to {_EVENT_TYPE_LENGTH} characters, no *")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidPayload(f"key: must be 1 to {MAX_KEY_LENGTH} characters")
    now = _now()
    body = _body(event_type, check(event_type, data), now)
    if len(body) > settings.max_payload_bytes:
        raise InvalidPayload(
            f"data: the webhook body is {len(body)} bytes; the limit is {settings.max_payload_bytes} "
            "(BGJOBS_WEBHOOKS__MAX_PAYLOAD_BYTES)"
        )
    message_id = _message_id(event_type, owner, key)
    jobs: list[DeliveryJob] = []
    with db.session() as s:
        values = {"id": message_id, "event_type": event_type, "owner": owner, "body": body.decode(),
                  "created_at": now}  # fmt: skip
        if db.insert_new(s, WebhookMessage, values):
            owned = col(EndpointRow.owner).is_(None) if owner is None else col(EndpointRow.owner) == owner
            subscribed = select(
                col(EndpointRow.id), col(EndpointRow.event_types), col(EndpointRow.enabled)
            ).where(owned)
            if endpoint is not None:
                subscribed = subscribed.where(col(EndpointRow.id) == endpoint)
            rows = [
                _delivery_row(message_id, endpoint_id, now, enabled)
                for endpoint_id, types, enabled in s.execute(subscribed)
                if endpoint is not None or matches(event_type, types)
            ]
            if rows:
                s.connection().execute(insert(WebhookDelivery.__table__), rows)  # type: ignore[attr-defined]
            jobs = [
                DeliveryJob(delivery_id=r["id"], endpoint_id=r["endpoint_id"], attempt=1)
                for r in rows
                if r["status"] == "pending"
            ]
        else:
            # Published before: resend what has not started, in case the first call died before
            # sending (copies of a job already queued are dropped by the attempt number).
            unstarted = select(col(WebhookDelivery.id), col(WebhookDelivery.endpoint_id)).where(
                col(WebhookDelivery.message_id) == message_id, col(WebhookDelivery.status) == "pending",
                col(WebhookDelivery.attempts) == 0,
            )  # fmt: skip
            jobs = [DeliveryJob(delivery_id=d, endpoint_id=e, attempt=1) for d, e in s.execute(unstarted)]
    if jobs:
        carrier = tracing.deferred_context()  # the dispatcher sends it in this trace
        item = message_id if carrier is None else f"{message_id}{TRACE_SEPARATOR}{carrier}"
        with reachable():  # the lanes live in the coordination store
            lanes_for(runtime.current().coordination).push(owner, item, len(jobs))
        dispatch_webhooks.send({})
    return message_id
