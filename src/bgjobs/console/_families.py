"""The families' business state in the API: webhooks, notifications, payouts, exports, the outbox.

What a broker UI cannot show: a webhook's attempts and why each failed, a payout's gateway
refusal, an export's checksum and link. Every route calls the family's public functions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..redact import mask_url
from ._actions import Actor, Limit, NotFound, Offset, Reader, acting, listed, paged

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
T = TypeVar("T")


def _found(look_up: Callable[[], T]) -> T:
    """What ``look_up`` finds; its "no such thing" (``InvalidPayload``) answered as a 404."""
    from ..errors import InvalidPayload

    try:
        return look_up()
    except InvalidPayload as exc:
        raise NotFound(str(exc)) from None


def _known(endpoint_id: str) -> str:
    """The endpoint's id, or a 404 naming it."""
    from ..webhooks import get_endpoint

    _found(lambda: get_endpoint(endpoint_id))
    return endpoint_id


def _replayed(done: Any) -> dict[str, Any]:
    return {"queued": len(done.queued), "deliveries": done.queued, "skipped": done.skipped}


def endpoint_data(e: Any) -> dict[str, Any]:
    """An endpoint without its secret, its URL's password masked."""
    found = e.model_dump(mode="json", exclude={"secret"})
    found["url"] = mask_url(e.url)
    found["health"] = "disabled" if not e.enabled else "failing" if e.failures else "healthy"
    return dict(found)


@router.get("/webhooks/endpoints", tags=["webhooks"], summary="endpoints with their health; secrets never")
def endpoints(_: Reader, owner: str | None = None, enabled: bool | None = None) -> dict[str, Any]:
    from ..webhooks import list_endpoints

    return listed([endpoint_data(e) for e in list_endpoints(owner=owner, enabled=enabled)])


CREATED_SINCE = "created at or after: a date, or an ISO 8601 time (UTC without a zone)"


def message_data(m: Any) -> dict[str, Any]:
    return {"id": m.id, "event_type": m.event_type, "owner": m.owner, "created_at": m.created_at.isoformat(),
            "deliveries": m.deliveries}  # fmt: skip


@router.get("/webhooks/messages", tags=["webhooks"],
            summary="published messages, newest first, by endpoint, event type, status, time")  # fmt: skip
def messages(
    _: Reader, endpoint_id: str | None = None, event_type: str | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivering|delivered|failed)$",
                                        description="a delivery in this state")] = None,
    owner: str | None = None,
    since: Annotated[str | None, Query(description=CREATED_SINCE)] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..moments import parse_moment
    from ..webhooks import messages as message_list

    found = message_list(endpoint_id=endpoint_id or None, event_type=event_type or None,
                         status=status or None, owner=owner or None, since=parse_moment(since),
                         limit=limit + 1, offset=offset)  # fmt: skip
    return paged([message_data(m) for m in found], limit, offset)


@router.get("/webhooks/messages/{message_id}/attempts", tags=["webhooks"], summary="a message's attempt log")
def attempts(message_id: str, _: Reader) -> dict[str, Any]:
    from .. import db
    from ..webhooks import attempts as attempt_log
    from ..webhooks._models import WebhookMessage

    found = [a.model_dump(mode="json") for a in attempt_log(message_id)]
    if not found:
        with db.session() as s:
            if s.get(WebhookMessage, message_id) is None:
                raise NotFound(f"message_id: no webhook message {message_id!r}")
    return listed(found)


class ReplayBody(BaseModel):
    endpoint_id: str | None = None


@router.post("/webhooks/messages/{message_id}/replay", tags=["webhooks"], summary="send a message again")
def replay(
    message_id: str, actor: Annotated[Actor, Depends(acting("replay"))], body: ReplayBody | None = None
) -> dict[str, Any]:
    from ..webhooks import replay as replay_message

    chosen = body.endpoint_id if body else None

    def act() -> dict[str, Any]:
        return _replayed(_found(lambda: replay_message(message_id, endpoint_id=chosen)))

    return actor.run(f"webhook-message:{message_id}", act)


class RecoverBody(BaseModel):
    since: datetime


@router.post("/webhooks/endpoints/{endpoint_id}/recover", tags=["webhooks"],
             summary="resend an endpoint's failed deliveries since a time")  # fmt: skip
def recover(
    endpoint_id: str, body: RecoverBody, actor: Annotated[Actor, Depends(acting("recover"))]
) -> dict[str, Any]:
    from ..webhooks import recover as recover_endpoint

    return actor.run(f"endpoint:{endpoint_id}",
                     lambda: _replayed(recover_endpoint(_known(endpoint_id), since=body.since)))  # fmt: skip


class DisableBody(BaseModel):
    reason: str = Field(default="disabled by an operator", max_length=500)


@router.post("/webhooks/endpoints/{endpoint_id}/disable", tags=["webhooks"], summary="stop delivering to it")
def disable(
    endpoint_id: str, actor: Annotated[Actor, Depends(acting("disable"))], body: DisableBody | None = None
) -> dict[str, Any]:
    from ..webhooks import disable_endpoint

    reason = body.reason if body else DisableBody().reason
    return actor.run(f"endpoint:{endpoint_id}",
                     lambda: endpoint_data(disable_endpoint(_known(endpoint_id), reason=reason)))  # fmt: skip


@router.post("/webhooks/endpoints/{endpoint_id}/enable", tags=["webhooks"], summary="deliver to it again")
def enable(endpoint_id: str, actor: Annotated[Actor, Depends(acting("enable"))]) -> dict[str, Any]:
    from ..webhooks import enable_endpoint

    return actor.run(f"endpoint:{endpoint_id}", lambda: endpoint_data(enable_endpoint(_known(endpoint_id))))


class RotateBody(BaseModel):
    grace_hours: float = Field(default=24.0, ge=0, le=24 * 30)


@router.post("/webhooks/endpoints/{endpoint_id}/rotate-secret", tags=["webhooks"],
             summary="a new secret (not shown); the old one also signs for the grace period")  # fmt: skip
def rotate(
    endpoint_id: str,
    actor: Annotated[Actor, Depends(acting("rotate-secret"))],
    body: RotateBody | None = None,
) -> dict[str, Any]:
    from datetime import timedelta

    from ..webhooks import get_endpoint, rotate_secret

    hours = body.grace_hours if body else RotateBody().grace_hours

    def act() -> dict[str, Any]:
        rotate_secret(_known(endpoint_id), grace=timedelta(hours=hours))  # the new secret is never shown here
        return endpoint_data(get_endpoint(endpoint_id))

    return actor.run(f"endpoint:{endpoint_id}", act)


@router.get("/notifications", tags=["notifications"], summary="the delivery log, by key, recipient, template")
def notifications(
    _: Reader, key: str | None = None,
    user_id: Annotated[str | None, Query(description="the recipient's user id")] = None,
    template: str | None = None,
    status: Annotated[str | None, Query(pattern="^(queued|sending|sent|skipped|failed|dead)$")] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..notifications import deliveries

    found = deliveries(key=key, user_id=user_id, template=template, status=status, limit=limit + 1,
                       offset=offset)  # fmt: skip
    return paged([d.model_dump(mode="json") for d in found], limit, offset)


@router.get("/payouts", tags=["payouts"], summary="payouts by status, with the gateway's reason for failures")
def payouts(
    _: Reader, status: Annotated[str | None, Query(pattern="^(pending|paid|failed)$")] = None,
    vendor_id: str | None = None, run_key: str | None = None, limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..payouts import payouts as payout_list

    found = payout_list(status=status, vendor_id=vendor_id, run_key=run_key, limit=limit + 1, offset=offset)
    return paged(
        [{**p.model_dump(mode="json"), "amount": str(p.amount.amount)} for p in found], limit, offset
    )


@router.post("/payouts/{payout_id}/retry", tags=["payouts"],
             summary="pay a refused payout's vendor now, under a new idempotency key")  # fmt: skip
def retry_payout(payout_id: str, actor: Annotated[Actor, Depends(acting("retry-payout"))]) -> dict[str, Any]:
    from ..payouts import retry_payout as retry

    def act() -> dict[str, Any]:
        found = retry(payout_id)
        return {"payout_id": found.id, "amount": str(found.amount.amount), "currency": found.currency,
                "status": found.status}  # fmt: skip

    return actor.run(f"payout:{payout_id}", act)


@router.get("/exports", tags=["exports"], summary="exports with status, size, checksum and download link")
def exports(_: Reader, dataset: str | None = None, limit: Limit = 50) -> dict[str, Any]:
    from ..exports import exports as export_list

    found = [e.model_dump(mode="json") for e in export_list(dataset=dataset, limit=limit + 1)]
    return paged(found, limit, 0)


@router.get("/exports/{export_id}", tags=["exports"], summary="one export and its link")
def export(export_id: str, _: Reader) -> dict[str, Any]:
    from ..exports import get

    return dict(_found(lambda: get(export_id)).model_dump(mode="json"))


#: What a download is served as, by the export's format.
_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json", "jsonl": "application/x-ndjson"}


@router.get("/exports/{export_id}/download", tags=["exports"],
            summary="the export's file, through the storage adapter (authenticated)")  # fmt: skip
def download(export_id: str, _: Reader) -> StreamingResponse:
    """The file of a finished export, streamed from the storage adapter: a ``file://`` link (the
    local adapter's URL) opens nothing in a browser, and the console's own authentication guards
    it where a signed URL would be a bearer link."""
    from ..errors import InvalidPayload
    from ..exports import get
    from ..wiring import storage

    found = _found(lambda: get(export_id))
    if found.status != "done":
        raise InvalidPayload(f"export: {export_id} is {found.status}; only a finished export is downloaded")
    name = found.storage_key.rsplit("/", 1)[-1]
    return StreamingResponse(storage().open(key=found.storage_key), media_type=_TYPES.get(found.fmt),
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.get("/outbox", tags=["outbox"], summary="rows committed and not yet relayed, and the oldest's age")
def outbox(_: Reader) -> dict[str, Any]:
    from ..clock import now
    from ..outbox import backlog

    count, oldest = backlog()
    age = round((now() - oldest).total_seconds(), 1) if oldest else None
    return {"pending": count, "oldest_at": oldest.isoformat() if oldest else None, "oldest_age_s": age}

