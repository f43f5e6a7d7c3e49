"""Long-running commands stop on SIGINT and SIGTERM, whatever their parent left them.

A command started from a script or a shell's background job inherits SIGINT as *ignored*, and
Python then installs no ``KeyboardInterrupt`` handler: Ctrl-C, or a supervisor's SIGINT, would be
lost, and ``bgjobs dev`` would run on with everything it started. ``bgjobs dev``, ``bgjobs scheduler``
and ``bgjobs outbox relay`` therefore set both signals themselves for as long as they run, and
take either as Ctrl-C: the ``finally`` blocks that stop what they started then run.

A handler, not the default disposition, is also what the commands' own children need: a signal
that is caught is reset to its default in a child at ``exec``, where an ignored one stays ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["stop_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _FirstSignal:
    """Raises ``KeyboardInterrupt`` once; a second signal while stopping is not allowed to cut the
    clean-up that the first one started."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT or SIGTERM raises ``KeyboardInterrupt`` in the main thread
    (once); the handlers before it are restored at its end."""
    handler = _FirstSignal()
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
