"""The portal served by a real uvicorn on 127.0.0.1 under ``/portal``, as a host mounts it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from bgjobs.embedded import free_port
from bgjobs.portal import create_app
from bgjobs.settings import PortalSettings
from tests.support.console import ConsoleServer

SECRET = "portal-signing-key-for-the-tests"


def portal_settings(port: int, **overrides: Any) -> PortalSettings:
    values: dict[str, Any] = {"base_url": f"http://127.0.0.1:{port}/portal", "secret": SecretStr(SECRET),
                              "brand_name": "Acme Travel"}  # fmt: skip
    return PortalSettings(**{**values, **overrides})


@contextmanager
def serving(start: Callable[[int], Any]) -> Iterator[str]:
    """Pick a port, let ``start(port)`` configure bgjobs for it (the portal's base URL), then serve
    the portal there; yields its base URL (``http://127.0.0.1:<port>/portal``)."""
    port = free_port()
    start(port)
    with ConsoleServer(Starlette(routes=[Mount("/portal", app=create_app())]), port=port) as server:
        yield f"{server.url}/portal"


@contextmanager
def session(link: str) -> Iterator[httpx.Client]:
    """A client that followed ``link`` as a browser does: it holds the session cookie."""
    with httpx.Client(timeout=10) as client:
        entered = client.get(link)
        assert entered.status_code == 303, entered.text
        yield client


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
