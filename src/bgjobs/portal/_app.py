"""``create_app()``: the portal as one ASGI app: pages, and the JSON API under ``/api/v1``.

Mount it in the host app at a path (``app.mount("/portal", create_app())``) and set
``BGJOBS_PORTAL__BASE_URL`` to that path's absolute URL, or run ``bgjobs portal``.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import runtime
from ..console._actions import error_body, known_query
from ..errors import ConfigurationError, InvalidPayload, PermanentError
from ..outage import CONNECTION_ERRORS
from ..settings import Settings
from ._access import COOKIE
from ._render import page, root, start_session
from ._tokens import LinkRefused, read

__all__ = ["create_app"]

logger = logging.getLogger("bgjobs.portal")


def _api(request: Request) -> bool:
    return request.url.path.startswith(root(request) + "/api/")


def _answer(request: Request, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    if _api(request):
        return JSONResponse({"error": text}, status_code=status, headers=headers)
    back = request.headers.get("referer") if status in (404, 409, 422) else None
    title = {401: "Link not valid", 403: "Not allowed", 404: "Not found", 429: "Slow down"}.get(
        status, "Not done"
    )
    response = page(request, "message.html", title, status=status, text=text, back=back, code=status)
    response.headers.update(headers or {})
    return response


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    text = str(exc.detail)
    if exc.status_code == 404 and text == "Not Found":
        text = f"no such page: {request.url.path}"
    return _answer(request, exc.status_code, text, dict(exc.headers or {}))


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = str(first.get("msg")).removeprefix("Value error, ")
    return _answer(request, 422, f"{where}: {message}" if where else message)


def _operation(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PermanentError) and not isinstance(exc, InvalidPayload):
        return _answer(request, 422, str(exc).splitlines()[0])  # the SSRF guard's BlockedAddress
    status, body = error_body(exc)
    if isinstance(exc, ConfigurationError):
        status = 503
    if status == 500:
        logger.error("portal: %s", body["error"])
    return _answer(request, status, body["error"])


async def _headers(request: Request, call_next: Any) -> Response:
    """Nothing cached, no referrer outside the portal, framing only where allowed."""
    response: Response = await call_next(request)
    ancestors = " ".join(runtime.current().settings.portal.frame_ancestors) or "'none'"
    response.headers.setdefault(
        "Content-Security-Policy",
        (
            "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; "
            f"base-uri 'none'; frame-ancestors {ancestors}"
        ),
    )
    if ancestors == "'none'":
        response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # No page URL holds a token but the link's own (answered with no-referrer, below); pages are
    # same-origin, as no-referrer would make a browser send ``Origin: null`` with every form.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if "/static/" not in request.url.path:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def enter(request: Request, token: str | None = Query(default=None, max_length=4096)) -> Response:
    """Where a link lands: its token goes into the session cookie and the address loses it."""
    if token is None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            raise HTTPException(401, "open the portal through the link you were given")
        token = raw
    try:
        grant = read(token)
    except LinkRefused as exc:
        raise HTTPException(401, str(exc)) from None
    first = "webhooks" if "webhooks" in grant.scopes else "preferences"
    response = RedirectResponse(f"{root(request)}/{first}", status_code=303)
    response.headers["Referrer-Policy"] = "no-referrer"  # the address holds the token
    start_session(request, response, token, grant)
    return response


def _brand(request: Request) -> Response:
    colour = runtime.current().settings.portal.accent_colour  # validated: #rrggbb
    return Response(f":root {{ --accent: {colour}; }}\n", media_type="text/css")


def create_app(settings: Settings | None = None) -> Any:
    """The portal as an ASGI app; see docs/portal.md for mounting it in FastAPI, Django or Flask.

    Args:
        settings: bgjobs's settings; the process's runtime's by default.
    """
    existing = runtime.peek()
    if settings is not None and (existing is None or existing.settings is not settings):
        runtime.install(runtime.Runtime(settings))
    from ..worker import load_modules

    load_modules(runtime.current().settings)  # the host's modules register the event catalog
    app = FastAPI(
        title="bgjobs portal API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(known_query)],
    )
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for kind in (PermanentError, ConfigurationError, SQLAlchemyError, *CONNECTION_ERRORS):
        app.add_exception_handler(kind, _operation)
    app.middleware("http")(_headers)
    from ._api import router as api
    from ._pages import router as pages
    from ._preference_pages import router as preference_pages

    app.add_api_route("/", enter, methods=["GET"], include_in_schema=False)
    app.add_api_route("/brand.css", _brand, methods=["GET"], include_in_schema=False)
    app.include_router(api)
    app.include_router(pages)
    app.include_router(preference_pages)
    app.mount(
        "/static", StaticFiles(directory=str(resources.files("bgjobs.portal") / "static")), name="static"
    )
    return app
