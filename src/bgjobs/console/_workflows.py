"""Workflows in the console: ``/api/v1/workflows`` and the pages that draw a run's stages with each
step's state, the failed step's reason, and cancel (docs/batches.md, docs/console.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ._actions import Actor, Limit, NotFound, Reader, acting, paged

__all__ = ["api", "pages"]

api = APIRouter(prefix="/api/v1")
pages = APIRouter(include_in_schema=False)


def _run(s: Any) -> dict[str, Any]:
    steps = [step for stage in s.stages for step in stage]
    failed = s.failed_step
    return {**s.as_dict(), "steps": len(steps), "succeeded": sum(1 for x in steps if x.state == "succeeded"),
            "failed_step": None if failed is None else failed.__dict__}  # fmt: skip


def _found(workflow_id: str) -> Any:
    from ..errors import InvalidPayload
    from ..workflows import status

    try:
        return status(workflow_id)
    except InvalidPayload:
        raise NotFound(f"workflow_id: no workflow {workflow_id!r} (runs are kept 7 days)") from None


@api.get("/workflows", tags=["workflows"], summary="workflow runs, newest first, with their state")
def list_workflows(_: Reader, limit: Limit = 50) -> dict[str, Any]:
    from ..workflows import recent

    return paged([_run(s) for s in recent(limit + 1)], limit, 0)


@api.get("/workflows/{workflow_id}", tags=["workflows"], summary="one run: its stages and each step's state")
def show_workflow(workflow_id: str, _: Reader) -> dict[str, Any]:
    return _run(_found(workflow_id))


@api.post("/workflows/{workflow_id}/cancel", tags=["workflows"],
          summary="skip the running stage's steps not started yet and start no later stage")  # fmt: skip
def cancel_workflow(workflow_id: str, actor: Annotated[Actor, Depends(acting("cancel"))]) -> dict[str, Any]:
    from ..workflows import cancel

    def act() -> dict[str, Any]:
        _found(workflow_id)
        return _run(cancel(workflow_id))

    return actor.run(f"workflow:{workflow_id}", act)


@pages.get("/workflows", response_class=HTMLResponse)
def workflows_page(
    request: Request, access: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> Response:
    from ._pages import render

    runs = list_workflows(access, limit)["items"]
    return render(request, "workflows.html", access, "Workflows", runs=runs)


@pages.get("/workflows/{workflow_id}", response_class=HTMLResponse)
def workflow_page(request: Request, workflow_id: str, access: Reader) -> Response:
    from ._pages import render

    return render(request, "workflow.html", access, "Workflow", run=show_workflow(workflow_id, access))
