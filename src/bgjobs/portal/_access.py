"""Who is calling the portal, and the checks every change passes.

- **Pages**: following a link (``/?token=...``) puts its token in an HttpOnly cookie scoped to the
  portal's path and redirects to a page without it (the token leaves the address bar and the
  history). A browser sends the cookie by itself, so every form carries a CSRF field (an HMAC of
  the token's id) and a cross-site request (``Origin``, ``Sec-Fetch-Site``) is refused.
- **API** (``/api/v1``): the token in ``Authorization: Bearer``; nothing ambient, so no CSRF field.
- **Every change**: at most ``BGJOBS_PORTAL__CHANGES_PER_MINUTE`` per owner (in the coordination
  store, so across every portal process), audited with the owner and the token's id.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from fastapi import HTTPException, Request

from .. import audit, runtime
from ..console._security import cross_site
from ._tokens import LinkRefused, Token, read

__all__ = ["COOKIE", "audited", "caller", "changing", "csrf_for", "jsonable", "needs"]

COOKIE = "bgjobs_portal"


def caller(request: Request) -> Token:
    """The checked token of this request (bearer first, then the cookie); 401 without a valid one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    bearer = scheme.lower() == "bearer" and bool(value.strip())
    raw = value.strip() if bearer else request.cookies.get(COOKIE, "")
    if not raw:
        raise HTTPException(401, "open the portal through the link you were given")
    try:
        token = read(raw)
    except LinkRefused as exc:
        raise HTTPException(401, str(exc)) from None
    request.state.ambient = not bearer
    request.state.token = token
    return token


def needs(token: Token, scope: str) -> None:
    if scope not in token.scopes:
        raise HTTPException(403, f"this link does not give access to {scope}")


def csrf_for(token: Token) -> str:
    """The CSRF field of every form on a page this token opened: not guessable without the key."""
    secret = runtime.current().settings.portal.secret
    key = b"" if secret is None else secret.get_secret_value().encode()
    return hmac.new(key, f"csrf:{token.id}".encode(), hashlib.sha256).hexdigest()[:32]


def _rate(token: Token) -> None:
    limit = runtime.current().settings.portal.changes_per_minute
    minute = int(time.time() // 60)
    used = runtime.current().coordination.count(f"portal:changes:{token.owner}:{minute}", ttl_s=120)
    if used > limit:
        raise HTTPException(
            429,
            f"too many changes: at most {limit} a minute; try again in a minute",
            headers={"Retry-After": str(60 - int(time.time()) % 60)},
        )


def changing(request: Request, token: Token, action: str, resource: str, csrf: str | None) -> None:
    """Refuse a change that is cross-site, lacks the CSRF field (pages) or is over the owner's rate;
    the refusal is audited."""
    why = None
    if getattr(request.state, "ambient", True):
        why = cross_site(request, frozenset())
        if why is None and not (csrf and hmac.compare_digest(csrf, csrf_for(token))):
            why = "missing or wrong CSRF field: reload the page and try again"
    if why is not None:
        audit.record(who=token.who, action=action, resource=resource, result="refused", detail=why)
        raise HTTPException(403, why)
    try:
        _rate(token)
    except HTTPException as exc:
        audit.record(
            who=token.who, action=action, resource=resource, result="refused", detail=str(exc.detail)
        )
        raise


def audited(token: Token, action: str, resource: str, detail: str = "", result: str = "ok") -> None:
    audit.record(who=token.who, action=action, resource=resource, result=result, detail=detail)


def jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)
