"""The preferences page of one recipient, and one-click unsubscribe (RFC 8058).

An email of a category a recipient can turn off carries ``List-Unsubscribe: <.../unsubscribe/T>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``: a mail client's POST there turns that
category's email off at once (the token is the authority, as the RFC wants: no cookie, no form);
a person following the link lands on the preferences page with that category picked out.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from .. import runtime
from ..clock import now as _now
from ..errors import InvalidPayload
from ..notifications._preferences import Preferences, preferences, set_preferences, unsubscribe
from ._access import audited, caller, changing, needs
from ._pages import form
from ._render import page, root, start_session
from ._tokens import LinkRefused, Token, read, sign

__all__ = ["CATEGORIES", "CHANNELS", "change", "router"]

router = APIRouter(include_in_schema=False)
Caller = Annotated[Token, Depends(caller)]
CHANNELS = ("email", "sms", "push")
CHANNEL_LABELS = {"email": "Email", "sms": "Text message", "push": "Push"}
#: The categories a recipient sees (operators' alerts are not theirs to choose).
CATEGORIES = ("transactional", "reminders", "marketing")
ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Lisbon",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def change(request: Request, token: Token, csrf: str | None, action: str, **values: Any) -> Preferences:
    """Store the recipient's choices, checked and audited like every portal change."""
    needs(token, "preferences")
    resource = f"recipient:{token.recipient}"
    changing(request, token, action, resource, csrf)
    try:
        chosen = set_preferences(str(token.recipient), **values)
    except InvalidPayload as exc:
        audited(token, action, resource, str(exc), result="failed")
        raise
    audited(token, action, resource, str(values)[:2000])
    return chosen


def _digests() -> str:
    labels = runtime.current().settings.portal.category_labels
    return ", ".join(labels.get(n, n) for n in runtime.current().settings.notifications.digests)


@router.get("/preferences")
def preferences_page(
    request: Request,
    token: Caller,
    unsubscribe: str | None = Query(default=None),
    saved: bool = Query(default=False),
) -> Response:
    needs(token, "preferences")
    if unsubscribe is not None and unsubscribe not in CATEGORIES:
        raise InvalidPayload(f"unsubscribe: {unsubscribe!r} is not a category")
    settings = runtime.current().settings
    chosen = preferences(str(token.recipient))
    n = settings.notifications
    start, end = chosen.quiet_hours or (n.quiet_hours_start, n.quiet_hours_end)
    return page(
        request,
        "preferences.html",
        "Notification preferences",
        section="preferences",
        prefs=chosen,
        notice="Your preferences are saved." if saved else None,
        categories=CATEGORIES,
        channels=CHANNELS,
        channel_labels=CHANNEL_LABELS,
        labels=settings.portal.category_labels,
        zones=ZONES,
        critical={str(c) for c in n.critical},
        unsubscribing=unsubscribe,
        digests=_digests(),
        default_quiet="none"
        if n.quiet_hours_start == n.quiet_hours_end
        else f"{n.quiet_hours_start:%H:%M} to {n.quiet_hours_end:%H:%M}",
        quiet_start=f"{start:%H:%M}",
        quiet_end=f"{end:%H:%M}",
    )


def off_from(on: list[str], critical: set[str]) -> dict[str, list[str]]:
    """The pairs a form left unticked: every category x channel not in ``on``."""
    unknown = [p for p in on if p.partition(":")[0] not in CATEGORIES or p.partition(":")[2] not in CHANNELS]
    if unknown:
        raise InvalidPayload(f"on: {unknown[0]!r} is not a category:channel")
    return {c: [ch for ch in CHANNELS if f"{c}:{ch}" not in on] for c in CATEGORIES if c not in critical}


@router.post("/preferences")
async def save_preferences(request: Request, token: Caller) -> Response:
    values = await form(request, {"on", "quiet", "quiet_start", "quiet_end", "timezone", "digest"})
    one = {k: v[-1] for k, v in values.items()}
    critical = {str(c) for c in runtime.current().settings.notifications.critical}
    quiet: tuple[str, str] | None = None
    match one.get("quiet", "default"):
        case "default":
            quiet = None
        case "none":
            quiet = ("00:00", "00:00")
        case "custom":
            quiet = (one.get("quiet_start", ""), one.get("quiet_end", ""))
        case other:
            raise InvalidPayload(f"quiet: {other!r}; use default, custom or none")
    fields: dict[str, Any] = {
        "off": off_from(values.get("on", []), critical),
        "quiet_hours": quiet,
        "timezone": one.get("timezone") or None,
    }
    if runtime.current().settings.notifications.digests:
        fields["digest"] = one.get("digest") == "yes"
    change(request, token, one.get("csrf"), "portal.preferences", **fields)
    return RedirectResponse(f"{root(request)}/preferences?saved=true", status_code=303)


@router.post("/preferences/unsubscribe")
async def unsubscribe_in_page(request: Request, token: Caller) -> Response:
    values = await form(request, {"category"})
    category = (values.get("category") or [""])[-1]
    if category not in CATEGORIES:
        raise InvalidPayload(f"category: {category!r} is not a category")
    off = preferences(str(token.recipient)).turning_off(category, "email")
    change(request, token, (values.get("csrf") or [""])[-1], "portal.unsubscribe", off=off)
    return RedirectResponse(f"{root(request)}/preferences?saved=true", status_code=303)


def _unsubscribing(raw: str) -> Token:
    try:
        grant = read(raw, purpose="unsubscribe")
    except LinkRefused as exc:
        raise HTTPException(401, str(exc)) from None
    if grant.category not in CATEGORIES or not grant.recipient:
        raise HTTPException(401, "this link is not valid: ask for a new one")
    return grant


@router.get("/unsubscribe/{raw}")
def unsubscribe_link(request: Request, raw: str) -> Response:
    """A person followed the link: a one-hour preferences session for them, the category picked out."""
    grant = _unsubscribing(raw)
    issued = int(_now().timestamp() * 1000)
    session = sign(
        {
            "o": grant.owner,
            "s": ["preferences"],
            "r": grant.recipient,
            "j": secrets.token_hex(8),
            "i": issued,
            "e": issued + 3_600_000,
        }
    )
    response = RedirectResponse(f"{root(request)}/preferences?unsubscribe={grant.category}", status_code=303)
    start_session(request, response, session, read(session))
    return response


@router.post("/unsubscribe/{raw}")
async def unsubscribe_one_click(request: Request, raw: str) -> Response:
    """RFC 8058: the body is ``List-Unsubscribe=One-Click``; the category's email is turned off."""
    grant = _unsubscribing(raw)
    body = (await request.body()).decode(errors="replace").strip()
    if body != "List-Unsubscribe=One-Click":
        raise InvalidPayload("body: a one-click unsubscribe posts List-Unsubscribe=One-Click (RFC 8058)")
    unsubscribe(str(grant.recipient), str(grant.category), "email")
    audited(grant, "portal.unsubscribe", f"recipient:{grant.recipient}", f"{grant.category}:email one-click")
    return PlainTextResponse(f"Unsubscribed from {grant.category} emails.")
