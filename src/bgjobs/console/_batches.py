"""Batches in the console: ``/api/v1/batches`` and the pages that show their progress and cancel
them (docs/batches.md, docs/console.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ._actions import Actor, Limit, NotFound, Reader, acting, paged

__all__ = ["api", "pages"]

api = APIRouter(prefix="/api/v1")
pages = APIRouter(include_in_schema=False)


def _batch(s: Any) -> dict[str, Any]:
    return {**s.as_dict(), "counted": s.succeeded + s.failed + s.cancelled}


def _found(batch_id: str) -> Any:
    from ..batches import status
    from ..errors import InvalidPayload

    try:
        return status(batch_id)
    except InvalidPayload:
        raise NotFound(f"batch_id: no batch {batch_id!r} (finished batches are kept 7 days)") from None


@api.get("/batches", tags=["batches"], summary="batches, newest first, with their counts")
def list_batches(_: Reader, limit: Limit = 50) -> dict[str, Any]:
    from ..batches import recent

    return paged([_batch(s) for s in recent(limit + 1)], limit, 0)


@api.get("/batches/{batch_id}", tags=["batches"], summary="one batch: state, counts, progress")
def show_batch(batch_id: str, _: Reader) -> dict[str, Any]:
    return _batch(_found(batch_id))


@api.post("/batches/{batch_id}/cancel", tags=["batches"],
          summary="skip the batch's jobs not started yet; its callbacks still run")  # fmt: skip
def cancel_batch(batch_id: str, actor: Annotated[Actor, Depends(acting("cancel"))]) -> dict[str, Any]:
    from ..batches import cancel

    def act() -> dict[str, Any]:
        _found(batch_id)
        return _batch(cancel(batch_id))

    return actor.run(f"batch:{batch_id}", act)


@pages.get("/batches", response_class=HTMLResponse)
def batches_page(
    request: Request, access: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> Response:
    from ._pages import render

    return render(request, "batches.html", access, "Batches", batches=list_batches(access, limit)["items"])


@pages.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(request: Request, batch_id: str, access: Reader) -> Response:
    from ._pages import render

    return render(request, "batch.html", access, "Batch", batch=show_batch(batch_id, access))
