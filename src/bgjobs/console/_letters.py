"""Requeue and purge of dead letters from the console: by id, or every letter matching a filter,
a page at a time, with the progress of each running operation (docs/console.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._actions import Actor, Reader, acting

__all__ = ["LetterFilter", "LetterSelection", "router"]

router = APIRouter(prefix="/api/v1")

#: The bulk operations running in this console process: id -> action, done, total, started_at.
_running: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


class LetterFilter(BaseModel):
    """Which dead letters. An unknown key is refused, never dropped: a dropped criterion once
    turned a purge of a few letters into a purge of all of them."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = None
    actor: str | None = None
    #: invalid, permanent, configuration, exhausted, poison, undecodable, unknown_actor, unknown.
    kind: str | None = None
    #: Text the reason contains (any case).
    reason: str | None = None
    #: Failed at or after this time (a date, or a time; UTC without a zone).
    since: datetime | None = None

    @field_validator("since", mode="before")
    @classmethod
    def _moment(cls, value: Any) -> Any:
        from ..errors import InvalidPayload
        from ..moments import parse_moment

        if not isinstance(value, str):
            return value
        try:
            return parse_moment(value)
        except InvalidPayload as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None


class LetterSelection(BaseModel):
    """Dead letters by id (``ids``), or every one matching ``match``; one of the two. A ``match``
    with no criterion selects every dead letter, and needs ``"all": true`` to say so."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=10_000)
    match: LetterFilter | None = None
    all: bool = False


def _selected(body: LetterSelection) -> tuple[Iterator[list[Any]], int | None]:
    """The selected letters, a page at a time ("all matching" streams through a million letters in
    bounded memory, and leaves alone the letters dead-lettered after the request), and how many
    there are (None for a reason search, which cannot tell without reading them)."""
    from ..deadletters import count_matching, find, matching
    from ..errors import InvalidPayload

    if (body.ids is None) == (body.match is None):
        raise InvalidPayload("ids: give ids or match, one of the two")
    if body.ids is not None:
        found = find(body.ids)
        return iter([found]), len(found)
    m = body.match
    assert m is not None
    if not m.model_dump(exclude_none=True) and not body.all:
        raise InvalidPayload('match: no criterion selects every dead letter; send "all": true to mean that')
    pages = matching(queue=m.queue, actor=m.actor, kind=m.kind, reason=m.reason, since=m.since)
    total = None if m.reason else count_matching(queue=m.queue, actor=m.actor, kind=m.kind, since=m.since)
    return pages, total


def _resource(body: LetterSelection) -> str:
    if body.ids is not None:
        return f"dead-letters:{','.join(body.ids[:20])}{'...' if len(body.ids) > 20 else ''}"
    return f"dead-letters:match {body.match.model_dump(exclude_none=True, mode='json') if body.match else {}}"



@router.get("/dead-letters/progress", tags=["dead letters"],
            summary="the bulk requeues and purges this console is running, with how far each is")  # fmt: skip
def bulk_progress(_: Reader) -> dict[str, Any]:
    with _lock:
        return {"operations": [dict(op) for op in _running.values()]}


@contextmanager
def _tracked(action: str, total: int | None) -> Iterator[dict[str, Any]]:
    id = uuid4().hex[:12]
    op: dict[str, Any] = {"id": id, "action": action, "done": 0, "total": total,
                          "started_at": datetime.now(UTC).isoformat()}  # fmt: skip
    with _lock:
        _running[id] = op
    try:
        yield op
    finally:
        with _lock:
            _running.pop(id, None)


def _bulk(body: LetterSelection, action: str, move: Callable[[list[Any]], int]) -> dict[str, Any]:
    pages, total = _selected(body)
    selected = moved = 0
    with _tracked(action, total) as op:
        for page in pages:
            selected += len(page)
            moved += move(page)
            with _lock:
                op["done"] = selected
    return {"selected": selected, action + "d": moved}


@router.post("/dead-letters/requeue", tags=["dead letters"], summary="back on their queues, retries reset")
def requeue(body: LetterSelection, actor: Annotated[Actor, Depends(acting("requeue"))]) -> dict[str, Any]:
    from ..deadletters import requeue as requeue_letters

    return actor.run(_resource(body), lambda: _bulk(body, "requeue", requeue_letters))


@router.post("/dead-letters/purge", tags=["dead letters"], summary="delete them for good")
def purge(body: LetterSelection, actor: Annotated[Actor, Depends(acting("purge"))]) -> dict[str, Any]:
    from ..deadletters import purge_letters

    return actor.run(_resource(body), lambda: _bulk(body, "purge", purge_letters))
