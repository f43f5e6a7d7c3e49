"""The portal's JSON API (``/api/v1``), for hosts that build their own pages on it.

Authenticate with the token of a link (``Authorization: Bearer <token>``, the ``token`` query value
of :func:`bgjobs.portal.link`'s URL). Every body is strict: a field the API does not take is
refused by name. The same owner checks, rates and audit as the pages apply (:mod:`._actions`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidPayload
from ..notifications._preferences import preferences
from ..webhooks._catalog import catalog_schema
from . import _owned as owned
from ._access import caller, jsonable, needs
from ._actions import act
from ._preference_pages import change
from ._tokens import Token

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["portal"])
Caller = Annotated[Token, Depends(caller)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewEndpoint(_Strict):
    url: str = Field(max_length=2000)
    event_types: list[str] = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=200)


class EndpointChange(_Strict):
    url: str | None = Field(default=None, max_length=2000)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=200)


class Replay(_Strict):
    message_id: str = Field(min_length=1, max_length=40)


class Recover(_Strict):
    since: datetime


class QuietHours(_Strict):
    start: str
    end: str


class PreferenceChange(_Strict):
    off: dict[str, list[str]] | None = None
    timezone: str | None = None
    quiet_hours: QuietHours | None = None
    digest: bool | None = None


def _csrf(request: Request) -> str | None:
    return request.headers.get("x-csrf-token")


def _json(value: Any, status: int = 200) -> Response:
    return JSONResponse(jsonable(value), status_code=status)


@router.get("/endpoints")
def list_endpoints(token: Caller) -> Response:
    needs(token, "webhooks")
    return _json({"items": owned.overview(token)})


@router.post("/endpoints", status_code=201)
def add_endpoint(request: Request, token: Caller, body: NewEndpoint) -> Response:
    """The new endpoint with its ``secret``: the only answer that shows it, with rotate-secret's."""
    return _json(act(request, token, "add", None, _csrf(request), **body.model_dump()), status=201)


@router.get("/endpoints/{endpoint_id}")
def get_endpoint(token: Caller, endpoint_id: str) -> Response:
    needs(token, "webhooks")
    return _json(owned.summary(token, endpoint_id))


@router.patch("/endpoints/{endpoint_id}")
def change_endpoint(request: Request, token: Caller, endpoint_id: str, body: EndpointChange) -> Response:
    return _json(act(request, token, "edit", endpoint_id, _csrf(request), **body.model_dump()))


@router.delete("/endpoints/{endpoint_id}")
def delete_endpoint(request: Request, token: Caller, endpoint_id: str) -> Response:
    return _json(act(request, token, "delete", endpoint_id, _csrf(request)))


@router.post("/endpoints/{endpoint_id}/replay")
def replay(request: Request, token: Caller, endpoint_id: str, body: Replay) -> Response:
    return _json(act(request, token, "replay", endpoint_id, _csrf(request), message_id=body.message_id))


@router.post("/endpoints/{endpoint_id}/recover")
def recover(request: Request, token: Caller, endpoint_id: str, body: Recover) -> Response:
    return _json(act(request, token, "recover", endpoint_id, _csrf(request), since=body.since))


@router.post("/endpoints/{endpoint_id}/{action}")
def endpoint_action(request: Request, token: Caller, endpoint_id: str, action: str) -> Response:
    """``disable``, ``enable``, ``test`` (sends the test event) or ``rotate-secret``."""
    names = {"disable": "disable", "enable": "enable", "test": "test", "rotate-secret": "rotate"}
    if action not in names:
        raise InvalidPayload(
            f"action: no endpoint action {action!r}; use {', '.join(names)}, replay or recover"
        )
    return _json(act(request, token, names[action], endpoint_id, _csrf(request)))


@router.get("/endpoints/{endpoint_id}/attempts")
def attempts(
    token: Caller,
    endpoint_id: str,
    limit: int = Query(default=50, ge=1, le=500),
    before: int | None = Query(default=None, ge=1),
) -> Response:
    needs(token, "webhooks")
    return _json({"items": owned.attempt_log(token, endpoint_id, limit=limit, before=before)})


@router.get("/catalog")
def catalog(token: Caller) -> Response:
    """The event types endpoints can subscribe to, each with the JSON Schema of its data."""
    needs(token, "webhooks")
    return _json(catalog_schema())


def _shown(token: Token) -> dict[str, Any]:
    chosen = preferences(str(token.recipient))
    quiet = (
        None
        if chosen.quiet_hours is None
        else {"start": f"{chosen.quiet_hours[0]:%H:%M}", "end": f"{chosen.quiet_hours[1]:%H:%M}"}
    )
    return {
        "user_id": chosen.user_id,
        "off": chosen.off_by_category(),
        "timezone": chosen.timezone,
        "quiet_hours": quiet,
        "digest": chosen.digest,
    }


@router.get("/preferences")
def get_preferences(token: Caller) -> Response:
    needs(token, "preferences")
    return _json(_shown(token))


@router.put("/preferences")
def put_preferences(request: Request, token: Caller, body: PreferenceChange) -> Response:
    """Change what is given (``off`` replaces the whole set of pairs turned off)."""
    values: dict[str, Any] = {k: getattr(body, k) for k in body.model_fields_set}
    if "quiet_hours" in values:
        q = body.quiet_hours
        values["quiet_hours"] = None if q is None else (q.start, q.end)
    change(request, token, _csrf(request), "portal.preferences", **values)
    return _json(_shown(token))
