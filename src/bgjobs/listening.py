"""What the long-running server commands (``bgjobs console``, ``bgjobs portal``) check before they
build their app: that their port is free. Apart from both, so neither needs the other's imports (the
console's pull in FastAPI, which the portal command must not need to print its refusal)."""

from __future__ import annotations

from .errors import UsageError

__all__ = ["free"]


def free(host: str, port: int, variable: str) -> None:
    """Refuse, in one line, a port something else listens on (before the app is built).

    Raises:
        UsageError: naming the address and where to choose another.
    """
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port "
                             f"or {variable}") from None  # fmt: skip
