"""``bgjobs console``: the console on its own, served by uvicorn."""

from __future__ import annotations

import ipaddress
import logging

from .. import runtime
from ..errors import ConfigurationError
from ..listening import listen, run_server

__all__ = ["serve"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(*, host: str | None = None, port: int | None = None) -> int:
    """Serve the console until Ctrl-C (or SIGTERM).

    Raises:
        ConfigurationError: a non-loopback address without a token or password configured.
        UsageError: the port is taken.
    """
    from ._app import create_app

    settings = runtime.current().settings
    console = settings.console
    host = host or console.host
    port = console.port if port is None else port
    configured = console.token is not None or (console.username is not None and console.password is not None)
    if not _loopback(host) and not configured:
        raise ConfigurationError(
            f"the console would listen on {host} with no authentication: set BGJOBS_CONSOLE__TOKEN (or "
            "BGJOBS_CONSOLE__USERNAME and __PASSWORD), or listen on 127.0.0.1"
        )
    sock = listen(host, port, "BGJOBS_CONSOLE__PORT")
    app = create_app()
    logging.getLogger("bgjobs.console").info("console on http://%s:%d/", host, port)
    print(
        f"bgjobs console: http://{host}:{port}/ (API: http://{host}:{port}/api/v1/openapi.json)", flush=True
    )
    run_server(app, sock)
    return 0
