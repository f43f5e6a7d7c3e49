"""The server commands take their port before they say where they listen (bgjobs.listening)."""

from __future__ import annotations

import socket

import pytest

from bgjobs.errors import UsageError
from bgjobs.listening import listen


def test_a_client_that_connects_as_soon_as_the_port_is_taken_is_queued_not_refused() -> None:
    sock = listen("127.0.0.1", 0, "BGJOBS_PORTAL__PORT")
    try:
        port = sock.getsockname()[1]
        # No server accepts yet: the connection waits in the backlog (it was refused when the
        # command printed its address before the server had bound it)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.getpeername()[1] == port
        with pytest.raises(UsageError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*BGJOBS_PORTAL__PORT"):
            listen("127.0.0.1", port, "BGJOBS_PORTAL__PORT")
    finally:
        sock.close()
