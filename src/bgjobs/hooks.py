"""Middleware hooks called only where a middleware has one: Dramatiq's ``emit_before`` and
``emit_after`` call every middleware for every signal, and most of the ~20 in a bgjobs worker
inherit the base class's no-op for most signals. Looping over them (a ``getattr`` and an empty
call each) was a fifth of a no-op job's worker CPU (docs/performance.md, the overhead section).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError

__all__ = ["HookedBroker"]


class HookedBroker(dramatiq.Broker):
    """A broker that calls, for each signal, only the middleware overriding its hook, in the same
    order and with the same error handling as Dramatiq's."""

    _hooked: dict[str, tuple[int, list[Any]]]

    def _callers(self, signal: str, *, reverse: bool) -> list[Any]:
        cache = self.__dict__.setdefault("_hooked", {})
        found = cache.get(signal)
        if found is None or found[0] != len(self.middleware):
            base = getattr(Middleware, signal, None)
            order = reversed(self.middleware) if reverse else self.middleware
            found = cache[signal] = (len(self.middleware), [
                (m, getattr(m, signal)) for m in order
                if base is None or getattr(type(m), signal, None) is not base or signal in vars(m)
            ])  # fmt: skip
        callers: list[Any] = found[1]
        return callers

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "before_" + signal
        for middleware, hook in self._callers(signal, reverse=False):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "after_" + signal
        for middleware, hook in self._callers(signal, reverse=True):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def add_middleware(self, middleware: Middleware, **where: Any) -> None:
        self.__dict__.pop("_hooked", None)
        super().add_middleware(middleware, **where)
        self.__dict__.pop("_hooked", None)
