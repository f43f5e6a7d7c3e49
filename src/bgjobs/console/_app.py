"""``create_app()``: one ASGI application, the JSON API under ``/api/v1`` and the dashboard at ``/``."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import runtime
from ..errors import ConfigurationError, InvalidPayload
from ..outage import CONNECTION_ERRORS
from ..settings import Settings
from ._actions import ConsoleError, error_body, known_query
from ._security import Authorize, Guard

__all__ = ["create_app"]

logger = logging.getLogger("bgjobs.console")


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(where) or None
    message = str(first.get("msg")).removeprefix("Value error, ")
    text = f"{field}: {message}" if field else message
    return JSONResponse({"error": text, "field": field}, status_code=422)


def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    return JSONResponse(exc.body, status_code=exc.status)


def _wants_page(request: Request) -> bool:
    api = str(request.scope.get("root_path", "")) + "/api/"
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(api)


def _http(request: Request, exc: Exception) -> Response:
    """Errors in the documented shape (``{"error": ...}``), an unknown path's included."""
    assert isinstance(exc, StarletteHTTPException)
    if _wants_page(request) and exc.status_code in (401, 403):
        from ._pages import refused_page

        return refused_page(request, exc)
    if exc.status_code == 404 and exc.detail == "Not Found":
        error = f"no such page or endpoint: {request.url.path}; /api/v1/openapi.json lists the API"
        return JSONResponse({"error": error}, status_code=404)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _operation_error(request: Request, exc: Exception) -> Response:
    status, body = error_body(exc)
    if status == 500:
        logger.error("console: %s", body["error"])
    page = _wants_page(request) or request.headers.get("x-bgjobs-fragment") == "1"
    if page and status in (404, 422, 503):
        from ._pages import unavailable_page

        return unavailable_page(request, status, body["error"])
    return JSONResponse(body, status_code=status)


async def _no_store(request: Request, call_next: Any) -> Response:
    """Nothing the console answers is cached (it is live, and some of it is private); its static
    files excepted."""
    response: Response = await call_next(request)
    if "/static/" not in request.url.path:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(settings: Settings | None = None, authorize: Authorize | None = None) -> Any:
    """The console as an ASGI app: mount it in the host (``app.mount("/bgjobs", console)``) or run
    it with ``bgjobs console``.

    Args:
        settings: bgjobs's settings; the process's runtime's by default. Other settings than the
            runtime's become the process's runtime, as the worker's do.
        authorize: ``authorize(request, action, resource) -> bool``: the host app's own login decides
            who may read (``action="read"``) and act; see docs/console.md.
    """
    from ..worker import load_modules

    existing = runtime.peek()
    if settings is not None and (existing is None or existing.settings is not settings):
        runtime.install(runtime.Runtime(settings))
    current = runtime.current()
    load_modules(current.settings)  # the host's jobs, for the schedule and triggers
    app = FastAPI(
        title="bgjobs console API", version="1", openapi_url=None, docs_url=None,
        redoc_url=None, dependencies=[Depends(known_query)],
        description="Queues, workers, dead letters, runs, the schedule and the families' "
        "business state of a bgjobs deployment. Authenticate with `Authorization: Bearer <token>`.",
    )  # fmt: skip
    app.state.guard = Guard(current.settings.console, authorize)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ConsoleError, _console_error)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.middleware("http")(_no_store)
    for kind in (InvalidPayload, ConfigurationError, SQLAlchemyError, *CONNECTION_ERRORS):
        app.add_exception_handler(kind, _operation_error)
    from ._api import router as api
    from ._batches import api as batch_api
    from ._batches import pages as batch_pages
    from ._families import router as families
    from ._letters import router as letters
    from ._limits import api as limit_api
    from ._limits import pages as limit_pages
    from ._pages import router as pages
    from ._queues import router as queue_routes
    from ._workflows import api as workflow_api
    from ._workflows import pages as workflow_pages

    app.include_router(letters)  # before api: /dead-letters/progress is not a letter's id
    app.include_router(api)
    app.include_router(queue_routes)
    from ._api import healthz, readyz

    # Where probes and newcomers look first, as well as under /api/v1
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.include_router(families)
    app.include_router(batch_api)
    app.include_router(batch_pages)
    app.include_router(workflow_api)
    app.include_router(workflow_pages)
    app.include_router(limit_api)
    app.include_router(limit_pages)
    app.include_router(pages)
    static = resources.files("bgjobs.console") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
