"""What every portal page shares: the templates, the mount's root path, the session cookie."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from .. import runtime
from ._access import COOKIE, csrf_for
from ._tokens import Token

__all__ = ["page", "root", "start_session", "templates"]

templates = Jinja2Templates(directory=str(resources.files("bgjobs.portal") / "templates"))


def root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(request: Request, template: str, title: str, status: int = 200, **context: Any) -> Response:
    """A page with the brand, the navigation and the token's CSRF field."""
    token: Token | None = getattr(request.state, "token", None)
    values = {
        "title": title,
        "root": root(request),
        "brand": runtime.current().settings.portal,
        "token": token,
        "csrf": csrf_for(token) if token else "",
        **context,
    }
    return templates.TemplateResponse(request, template, values, status_code=status)


def start_session(request: Request, response: Response, raw: str, grant: Token) -> None:
    framed = bool(runtime.current().settings.portal.frame_ancestors)
    secure = framed or request.url.scheme == "https"
    life = max(1, (grant.expires_ms - grant.issued_ms) // 1000)
    response.set_cookie(
        COOKIE,
        raw,
        max_age=life,
        path=root(request) + "/",
        httponly=True,
        secure=secure,
        samesite="none" if framed else "lax",
    )
    if framed:  # in a frame on the host's site: a cookie of that site's partition (CHIPS)
        name, value = response.raw_headers[-1]
        response.raw_headers[-1] = (name, value + b"; Partitioned")
