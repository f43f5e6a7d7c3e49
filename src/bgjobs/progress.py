"""A progress line for long CLI operations: drawn on a terminal, silent when piped or logged."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress("requeue", total=n) as bar: bar.advance(k)``.

    Draws on stderr only when it is a terminal, at most ten times a second, so
    output captured by scripts, cron or CI stays exactly what the command prints.
    """

    def __init__(self, label: str, *, total: int | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            filled = min(30, 30 * self.done // self.total)
            bar = "#" * filled + "-" * (30 - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total}"
        else:
            text = f"{self.label}: {self.done}"
        self.stream.write(f"\r{text}")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
