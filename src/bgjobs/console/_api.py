"""The JSON API's core: health, queues, workers, dead letters, runs, the schedule, triggers, audit.

Each route calls the same operations the CLI calls (``bgjobs.status``, ``bgjobs.deadletters``,
``bgjobs.runs``, ``bgjobs.jobs``); nothing here reads Redis or the tables on its own.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import runtime
from ._actions import Actor, Limit, NotFound, Offset, Reader, acting, listed, paged
from ._masking import masked
from ._queues import queue_list

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


def _health_body() -> tuple[int, dict[str, Any]]:
    from ._health import readiness

    checks = readiness()
    ok = all(c.ok for c in checks)
    failed = [c.name for c in checks if not c.ok]
    return (200 if ok else 503), {"ready": ok, "failed": failed, "checks": [c.as_dict() for c in checks]}


@router.get("/healthz", tags=["health"], summary="the console process is alive (no authentication)")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Reader) -> JSONResponse:
    """The API's schema, for those the console serves (it maps every operation)."""
    return JSONResponse(request.app.openapi())


@router.get("/readyz", tags=["health"], summary="broker, database revision, workers and scheduler (no auth)")
def readyz() -> JSONResponse:
    code, body = _health_body()
    return JSONResponse(body, status_code=code)


def overview_data() -> dict[str, Any]:
    """What the overview page and ``GET /overview`` show."""
    from ..deadletters import dead_letters
    from ..scheduling import upcoming
    from ..status import status

    current = runtime.current()
    found = status()
    _, health = _health_body()
    queues = queue_list(found)
    return {
        "health": health,
        "queues": queues,
        "workers": [asdict(w) for w in found.workers],
        "problems": found.problems,
        "scheduler": found.scheduler,
        "dead_letters": sum(q["dead_letters"] for q in queues),
        "latest_dead_letters": [_letter(d) for d in dead_letters(limit=5)],
        "next_ticks": [asdict(u) for u in upcoming(current.settings, current.coordination)[:8]],
    }


@router.get("/overview", tags=["overview"], summary="health, queues, workers, dead letters, the next ticks")
def overview(_: Reader) -> dict[str, Any]:
    return overview_data()


@router.get("/workers", tags=["workers"], summary="live worker processes: host, pid, queues, last heartbeat")
def workers(_: Reader) -> dict[str, Any]:
    from ..status import status

    return listed([asdict(w) for w in status().workers])


def _letter(d: Any, *, full: bool = False) -> dict[str, Any]:
    found = {
        "id": d.redis_id, "message_id": d.message_id, "queue": d.queue, "actor": d.actor,
        "failed_at": d.failed_at.isoformat(), "kind": d.kind, "reason": d.reason, "attempts": d.attempts,
    }  # fmt: skip
    if full:
        message = d.message
        found["args"] = masked(message.get("args", []))
        found["kwargs"] = masked(message.get("kwargs", {}))
        found["options"] = {k: v for k, v in message.get("options", {}).items() if k not in ("traceback",)}
        found["traceback"] = d.traceback
    return found


SINCE = "failed at or after: a date, or an ISO 8601 time (UTC without a zone)"


@router.get(
    "/dead-letters", tags=["dead letters"], summary="newest first, filtered by queue, actor, reason, time"
)
def list_dead_letters(
    _: Reader, queue: str | None = None, actor: str | None = None, kind: str | None = None,
    reason: Annotated[str | None, Query(description="text the reason contains")] = None,
    since: Annotated[str | None, Query(description=SINCE)] = None,
    before: Annotated[str | None, Query(description="failed before this (a search's more_before)")] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..deadletters import dead_letters
    from ..moments import parse_moment

    found = dead_letters(queue=queue or None, actor=actor or None, kind=kind or None, reason=reason or None,
                         since=parse_moment(since), before=parse_moment(before), limit=limit + 1,
                         offset=offset)  # fmt: skip
    more = found.more_before
    # A reason search reads a bounded number of letters per request; more_before continues it
    return {**paged([_letter(d) for d in found], limit, offset),
            "more_before": None if more is None else more.isoformat()}  # fmt: skip


@router.get("/dead-letters/{letter_id}", tags=["dead letters"], summary="one dead letter, payload masked")
def show_dead_letter(letter_id: str, _: Reader) -> dict[str, Any]:
    from ..deadletters import find

    (letter,) = find([letter_id])
    return _letter(letter, full=True)


def _run(r: Any) -> dict[str, Any]:
    return {"id": r.id, "job": r.job, "trigger": r.trigger, "outcome": r.outcome,
            "started_at": r.started_at.isoformat(), "duration_s": r.duration_s, "counts": r.figures,
            "error": r.error}  # fmt: skip


@router.get("/runs", tags=["runs"], summary="batch runs, newest first, by job and outcome")
def list_runs(
    _: Reader, job: str | None = None,
    outcome: Annotated[str | None, Query(pattern="^(running|succeeded|failed|stopped|skipped)$")] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from .. import runs

    found = runs.recent(job=job, outcome=outcome, limit=limit + 1, offset=offset)
    return paged([_run(r) for r in found], limit, offset)


@router.get("/runs/{run_id}", tags=["runs"], summary="one run and its counts")
def show_run(run_id: str, _: Reader) -> dict[str, Any]:
    from .. import runs

    found = runs.get(run_id)
    if found is None:
        raise NotFound(f"run_id: no run {run_id!r}")
    return _run(found)


@router.get("/schedule", tags=["schedule"], summary="the cron table: next tick, last tick, last run, leader")
def schedule(_: Reader) -> dict[str, Any]:
    return schedule_data()


def schedule_data() -> dict[str, Any]:
    from .. import runs
    from ..scheduling import LOCK_NAME, left_out, upcoming

    current = runtime.current()
    entries = []
    for u in upcoming(current.settings, current.coordination):
        last = runs.recent(job=u.job, limit=1)
        entries.append({**asdict(u), "last_run": _run(last[0]) if last else None})
    return {"leader": current.coordination.held(LOCK_NAME), "entries": entries,
            "left_out": left_out(current.settings)}  # fmt: skip


@router.get("/jobs", tags=["jobs"], summary="every batch job the console knows, with its default schedule")
def jobs(_: Reader) -> dict[str, Any]:
    from ..jobs import registered_jobs

    return listed([{"name": j.name, "schedule": j.schedule, "queue": j.queue,
                    "doc": ((j.fn.__doc__ or "").strip().splitlines() or [""])[0]}
                   for j in sorted(registered_jobs().values(), key=lambda j: j.name)])  # fmt: skip


class TriggerBody(BaseModel):
    """The job's arguments, as ``bgjobs trigger JOB --name value`` takes them."""

    model_config = ConfigDict(extra="forbid")

    args: dict[str, str] = Field(default_factory=dict)


@router.post("/jobs/{name}/trigger", tags=["jobs"],
             summary="run a batch job now (the endpoint an external cron calls with the token)")  # fmt: skip
def trigger(
    name: str, actor: Annotated[Actor, Depends(acting("trigger"))], body: TriggerBody | None = None
) -> dict[str, Any]:
    from ..errors import InvalidPayload
    from ..jobs import UnknownArgument, registered_jobs
    from ..jobs import trigger as trigger_job

    args = body.args if body else {}

    def act() -> dict[str, Any]:
        if name not in registered_jobs():
            raise NotFound(f"name: no job {name!r}; GET /api/v1/jobs lists them")
        try:
            sent = trigger_job(name, **args)
        except UnknownArgument as exc:  # named as the body names it
            raise InvalidPayload(f"args.{exc.name}: {exc.line()}") from None
        return {"job": name, "message_id": sent.message_id, "args": args}

    return actor.run(f"job:{name}", act)


UNTIL = "before: a date, or an ISO 8601 time (UTC without a zone)"


@router.get("/audit", tags=["audit"], summary="who did what through the console, newest first")
def audit(
    _: Reader, action: str | None = None,
    who: Annotated[str | None, Query(description="text the actor's name contains")] = None,
    resource: Annotated[str | None, Query(description="text the resource contains")] = None,
    since: Annotated[str | None, Query(description=SINCE.replace("failed", "taken"))] = None,
    until: Annotated[str | None, Query(description=UNTIL)] = None, limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..audit import entries
    from ..moments import parse_moment

    found = entries(action=action or None, who=who or None, resource=resource or None,
                    since=parse_moment(since), until=parse_moment(until, field="until"),
                    limit=limit + 1, offset=offset)  # fmt: skip
    return paged([{**e.model_dump(mode="json"), "at": e.at.isoformat()} for e in found], limit, offset)
