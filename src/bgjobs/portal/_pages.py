"""The webhooks pages: the owner's endpoints, one endpoint with its attempt log, and their forms.

Server-rendered, no script: each form posts, the change is made through :func:`._actions.act`,
and the browser is sent back to the page with a notice (a secret is shown on the answer itself,
once).
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from ..errors import InvalidPayload
from ..webhooks._catalog import catalog
from . import _owned as owned
from ._access import caller, needs
from ._actions import act, event_types
from ._render import page, root
from ._tokens import Token

__all__ = ["NOTICES", "form", "router"]

router = APIRouter(include_in_schema=False)
Caller = Annotated[Token, Depends(caller)]

#: What a page says after a change (``?notice=<key>``; any other key is refused, never shown).
NOTICES = {
    "saved": "Saved.",
    "test": "A test event is on its way: its attempt appears below in a moment.",
    "disabled": "The endpoint is disabled: nothing is delivered to it until it is enabled.",
    "enabled": "The endpoint is enabled.",
    "deleted": "The endpoint is deleted.",
    "replayed": "The message is being sent again.",
    "recovered": "The failed deliveries are being sent again.",
    "nothing": "Nothing to send again: no delivery was finished or failed.",
}
_ACTION_NOTICE = {
    "test": "test",
    "disable": "disabled",
    "enable": "enabled",
    "replay": "replayed",
    "recover": "recovered",
}


def _notice(key: str | None) -> str | None:
    if key is not None and key not in NOTICES:
        raise InvalidPayload(f"notice: {key!r} is not a notice")
    return None if key is None else NOTICES[key]


async def form(request: Request, fields: set[str]) -> dict[str, list[str]]:
    """The posted form, every field named in ``fields`` (and ``csrf``); any other is refused by name.

    Forms are URL-encoded (no uploads), read here rather than through a multipart parser."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidPayload(f"content-type: a form is application/x-www-form-urlencoded, not {kind!r}")
    data = urllib.parse.parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
    unknown = sorted(set(data) - fields - {"csrf"})
    if unknown:
        raise InvalidPayload(f"{unknown[0]}: this form has no field {unknown[0]!r}")
    return data


def _one(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[-1] if found else None


def _back(request: Request, where: str, notice: str) -> Response:
    return RedirectResponse(f"{root(request)}/webhooks{where}?notice={notice}", status_code=303)


@router.get("/webhooks")
def endpoints_page(request: Request, token: Caller, notice: str | None = Query(default=None)) -> Response:
    needs(token, "webhooks")
    return page(
        request,
        "endpoints.html",
        "Webhooks",
        section="webhooks",
        notice=_notice(notice),
        rows=owned.overview(token),
        catalog=catalog(),
    )


@router.post("/webhooks")
async def add_endpoint(request: Request, token: Caller) -> Response:
    values = await form(request, {"url", "event_types", "description"})
    created = act(
        request,
        token,
        "add",
        None,
        _one(values, "csrf"),
        url=_one(values, "url") or "",
        event_types=event_types(values.get("event_types", [])),
        description=_one(values, "description"),
    )
    return page(
        request,
        "secret.html",
        "Endpoint added",
        section="webhooks",
        secret=created["secret"],
        endpoint_id=created["id"],
        rotated=False,
    )


@router.get("/webhooks/{endpoint_id}")
def endpoint_page(
    request: Request, endpoint_id: str, token: Caller, notice: str | None = Query(default=None)
) -> Response:
    needs(token, "webhooks")
    row = owned.summary(token, endpoint_id)
    return page(
        request,
        "endpoint.html",
        row["description"] or "Endpoint",
        section="webhooks",
        e=row,
        row=row,
        notice=_notice(notice),
        attempts=owned.attempt_log(token, endpoint_id),
        catalog=catalog(),
    )


@router.post("/webhooks/{endpoint_id}")
async def edit_endpoint(request: Request, endpoint_id: str, token: Caller) -> Response:
    values = await form(request, {"url", "event_types", "description"})
    act(
        request,
        token,
        "edit",
        endpoint_id,
        _one(values, "csrf"),
        url=_one(values, "url"),
        event_types=event_types(values.get("event_types", [])),
        description=_one(values, "description"),
    )
    return _back(request, f"/{endpoint_id}", "saved")


def _since(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError:
        raise InvalidPayload(f"since: {text!r} is not a date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.post("/webhooks/{endpoint_id}/{action}")
async def endpoint_action(request: Request, endpoint_id: str, action: str, token: Caller) -> Response:
    fields: dict[str, set[str]] = {
        "test": set(),
        "disable": set(),
        "enable": set(),
        "rotate": set(),
        "delete": {"confirm"},
        "replay": {"message_id"},
        "recover": {"since"},
    }
    if action not in fields:
        raise InvalidPayload(f"action: no endpoint action {action!r}; use {', '.join(fields)}")
    values = await form(request, fields[action])
    kwargs: dict[str, Any] = {}
    if action == "delete" and _one(values, "confirm") != "yes":
        raise InvalidPayload("confirm: tick the box to delete the endpoint")
    if action == "replay":
        kwargs["message_id"] = _one(values, "message_id") or ""
    if action == "recover":
        kwargs["since"] = _since(_one(values, "since"))
    result = act(request, token, action, endpoint_id, _one(values, "csrf"), **kwargs)
    if action == "rotate":
        return page(
            request,
            "secret.html",
            "New signing secret",
            section="webhooks",
            secret=result["secret"],
            endpoint_id=endpoint_id,
            rotated=True,
            grace_hours=result["previous_valid_hours"],
        )
    if action == "delete":
        return _back(request, "", "deleted")
    notice = _ACTION_NOTICE[action]
    if action in ("replay", "recover") and not result["queued"]:
        notice = "nothing"
    return _back(request, f"/{endpoint_id}", notice)
