"""Per-key limits in the console: ``/api/v1/limits`` and the Limits page, with each limited actor's
cap and rate, its keys at their caps with the jobs waiting, and changes at run time, audited
(docs/controls.md, docs/console.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ._actions import Actor, Reader, acting, listed

__all__ = ["api", "pages"]

api = APIRouter(prefix="/api/v1")
pages = APIRouter(include_in_schema=False)


class LimitChange(BaseModel):
    """What to change; a field left out keeps its value. An unknown field is refused by name."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, description="one key's cap instead of the actor's")
    limit: int | None = Field(default=None, description="jobs at once per key; 0 holds every job")
    rate: str | None = Field(default=None, description="starts per key, like 100/m or 5/s")
    burst: int | None = Field(default=None, description="starts a key may take at once")
    reset: bool = Field(default=False, description="back to what the code declares first")


@api.get("/limits", tags=["limits"], summary="each actor with per-key limits: its limits and busy keys")
def list_limits(_: Reader) -> dict[str, Any]:
    from ..key_limits import overview

    return listed(overview())


@api.get("/limits/{actor}", tags=["limits"], summary="an actor's keys holding slots or with jobs waiting")
def actor_keys(actor: str, _: Reader) -> dict[str, Any]:
    from ..key_limits import keys

    return listed(keys(actor))


@api.post("/limits/{actor}", tags=["limits"],
          summary="change an actor's cap, rate or burst, or one key's cap, at run time")  # fmt: skip
def change_limits(
    actor: str, body: LimitChange, who: Annotated[Actor, Depends(acting("set-limit"))]
) -> dict[str, Any]:
    from ..key_limits import change

    resource = f"limits:{actor}" + (f"/{body.key}" if body.key else "")
    return who.run(resource, lambda: change(actor, **body.model_dump()))


@pages.get("/limits", response_class=HTMLResponse)
def limits_page(request: Request, access: Reader) -> Response:
    from ._pages import render

    return render(request, "limits.html", access, "Limits", actors=list_limits(access)["items"])
