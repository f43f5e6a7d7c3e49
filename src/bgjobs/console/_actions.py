"""Reading and acting: authentication for every route, and one path for every action.

An action is checked (read-only, CSRF, the host's hook), run, and written to the audit log with
who took it and how it ended, refused and failed ones included. Errors become one JSON line with
a 4xx naming the field, never a 500: bad input 422, a missing thing 404, a setting 409, a broker or
database that does not answer 503.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigurationError, ConsoleError, InvalidPayload, NotFound
from ..outage import CONNECTION_ERRORS
from ._security import Access, Guard

__all__ = [
    "Actor", "ConsoleError", "Limit", "NotFound", "Offset", "Reader", "acting", "error_body", "known_query",
    "listed", "paged", "reader",
]  # fmt: skip

logger = logging.getLogger("bgjobs.console")


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def reader(request: Request) -> Access:
    """Every route but the probes: who is asking (401/403 if nobody the console serves)."""
    return _guard(request).access(request)


#: The parameters every API route shares: who reads, and a page.
Reader = Annotated[Any, Depends(reader)]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many")]
Offset = Annotated[int, Query(ge=0, description="skip this many (newest first)")]


def known_query(request: Request) -> None:
    """Every route: a query parameter the route does not take is refused with its name (422), never
    dropped. A filter dropped for a typo lists everything; with a bulk action that was a purge of
    every dead letter."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    taken: set[str] = set()
    todo = [dependant]
    while todo:  # the route's parameters and its dependencies'
        found = todo.pop()
        taken |= {p.alias for p in found.query_params}
        todo += found.dependencies
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        takes = f"it takes {', '.join(sorted(taken))}" if taken else "it takes none"
        raise InvalidPayload(f"{unknown[0]}: {request.url.path} has no parameter {unknown[0]!r}; {takes}")


def listed(items: list[Any]) -> dict[str, Any]:
    """A whole list in the shape every list answers in (``items``, ``more``, ``offset``), so a client
    reads each list the same way, paged or not."""
    return {"items": items, "more": False, "offset": 0}


def paged(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """A page of a list read with one item more than ``limit``: that one says whether there is more."""
    return {"items": items[:limit], "more": len(items) > limit, "offset": offset}


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for an error an operation raised."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, InvalidPayload):
        field = text.split(":", 1)[0] if ":" in text and " " not in text.split(":", 1)[0] else None
        # "<field>: no <thing> '<id>'" is the families' way of saying a named thing does not exist
        missing = (isinstance(exc, NotFound) or text.startswith("id: no dead letter")
                   or re.match(r"[\w.]+: no [\w ]+ '", text) is not None)  # fmt: skip
        status = 404 if missing else 422
        return status, {"error": text, "field": field}
    if isinstance(exc, ConfigurationError):
        return 409, {"error": text}
    if isinstance(exc, CONNECTION_ERRORS):
        return 503, {"error": f"the broker does not answer ({text}); check BGJOBS_BROKER_URL"}
    if isinstance(exc, SQLAlchemyError):
        from ..db import unreachable

        return 503, {"error": unreachable(exc)}
    return 500, {"error": f"{type(exc).__name__}: {text}"}


class Actor:
    """One action by one caller: :meth:`run` checks, runs and audits it."""

    def __init__(self, request: Request, access: Access, action: str) -> None:
        self.request, self.access, self.action = request, access, action

    def _audit(self, resource: str, result: str, detail: str) -> None:
        from ..audit import record

        try:
            record(who=self.access.who, action=self.action, resource=resource, result=result, detail=detail)
        except SQLAlchemyError:
            logger.exception("could not write the audit log for %s %s", self.action, resource)

    def run(self, resource: str, act: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        refused = _guard(self.request).allow(self.request, self.access, self.action, resource)
        if refused is not None:
            self._audit(resource, "refused", refused)
            raise ConsoleError(403, {"error": refused})
        try:
            result = act()
        except Exception as exc:
            status, body = error_body(exc)
            self._audit(resource, "failed", body["error"])
            if status == 500:
                logger.exception("console action %s on %s failed", self.action, resource)
            raise ConsoleError(status, body) from None
        self._audit(resource, "ok", ", ".join(f"{k}={v}" for k, v in result.items())[:2000])
        return result


def acting(action: str) -> Callable[[Request], Actor]:
    """A dependency giving the route an :class:`Actor` for ``action`` (authenticated first)."""

    def dependency(request: Request) -> Actor:
        return Actor(request, reader(request), action)

    return dependency
