"""The portal for a WSGI host (Flask, Django's WSGI): a2wsgi runs the ASGI app on its own loop."""

from __future__ import annotations

from typing import Any

from ..settings import Settings

__all__ = ["wsgi_app"]


def wsgi_app(settings: Settings | None = None) -> Any:
    """:func:`~bgjobs.portal.create_app` as a WSGI application, to mount under a prefix
    (``DispatcherMiddleware(flask_app.wsgi_app, {"/portal": wsgi_app()})``)."""
    from a2wsgi import ASGIMiddleware

    from ._app import create_app

    return ASGIMiddleware(create_app(settings))
