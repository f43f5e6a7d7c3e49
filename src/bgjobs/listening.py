"""What the long-running server commands (``bgjobs console``, ``bgjobs portal``) do before they
build their app: take their port, or refuse it in one line. Apart from both, so neither needs the
other's imports (the console's pull in FastAPI, which the portal command must not need to print
its refusal)."""

from __future__ import annotations

import socket
from typing import Any

from .errors import UsageError

__all__ = ["listen", "run_server"]


def listen(host: str, port: int, variable: str) -> socket.socket:
    """A socket listening on ``host:port``, for :func:`serve`. The command says where it listens
    only once this returns, so a client that connects at once waits in the backlog for the server
    to accept it, never refused (a test saw "connection refused" when the address was printed
    before the server had bound it).

    Raises:
        UsageError: the port is taken (or not allowed); names the address and where to choose another.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port "
                         f"or {variable}") from None  # fmt: skip
    return sock


def run_server(app: Any, sock: socket.socket) -> None:
    """Serve the ASGI ``app`` on the socket :func:`listen` gave, until Ctrl-C (or SIGTERM)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
