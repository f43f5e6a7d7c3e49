"""The queues in the API: sizes and history, pause and resume, each one's jobs (with their
arguments, deleted or run now one by one), and each actor's throughput and run times."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from ._actions import Actor, Limit, Offset, Reader, acting, listed, paged
from ._masking import masked

__all__ = ["queue_list", "router"]

router = APIRouter(prefix="/api/v1")


def queue_list(found: Any = None) -> list[dict[str, Any]]:
    """Each queue now, whether it is paused, and its last 30 minutes (``history``: jobs done and
    ready messages per minute, oldest first); from ``found`` (a ``bgjobs.status.status()`` read
    already), or read now."""
    from ..deadletters import operated_broker
    from ..history import series
    from ..pausing import paused
    from ..status import status

    broker = operated_broker()
    found, stopped = found or status(), paused()
    history = series(broker.client, broker.namespace, [q.name for q in found.queues])
    return [{**asdict(q), "paused": q.name in stopped, "history": history[q.name]} for q in found.queues]


@router.get("/queues", tags=["queues"], summary="each queue: sizes, oldest wait, paused, the last 30 minutes")
def queues(_: Reader) -> dict[str, Any]:
    return listed(queue_list())


@router.post("/queues/{name}/pause", tags=["queues"], summary="workers stop taking its messages within 1 s")
def pause(name: str, actor: Annotated[Actor, Depends(acting("pause"))]) -> dict[str, Any]:
    from ..pausing import pause as pause_queue

    return actor.run(f"queue:{name}", lambda: {"queue": name, "paused": True, "changed": pause_queue(name)})


@router.post("/queues/{name}/resume", tags=["queues"], summary="workers take its messages again")
def resume(name: str, actor: Annotated[Actor, Depends(acting("resume"))]) -> dict[str, Any]:
    from ..pausing import resume as resume_queue

    return actor.run(f"queue:{name}", lambda: {"queue": name, "paused": False, "changed": resume_queue(name)})


def queued_job(j: Any) -> dict[str, Any]:
    """A job of a queue, its arguments masked as everywhere."""
    return {
        "id": j.id, "message_id": j.message_id, "queue": j.queue, "state": j.state, "actor": j.actor,
        "args": masked(j.args), "kwargs": masked(j.kwargs), "enqueued_at": j.enqueued_at.isoformat(),
        "eta": j.eta.isoformat() if j.eta else None, "retries": j.retries, "worker": j.worker,
    }  # fmt: skip


@router.get("/queues/{name}/jobs", tags=["queues"],
            summary="a queue's waiting, delayed or in-progress jobs, with arguments (Redis)")  # fmt: skip
def queue_jobs(
    name: str, _: Reader,
    state: Annotated[str, Query(pattern="^(waiting|delayed|in_progress)$")] = "waiting",
    limit: Limit = 50, offset: Offset = 0,
) -> dict[str, Any]:  # fmt: skip
    from ..queued import jobs as queued

    found = queued(name, state=state, limit=limit + 1, offset=offset)
    return paged([queued_job(j) for j in found], limit, offset)


@router.post("/queues/{name}/jobs/{job_id}/delete", tags=["queues"],
             summary="delete one waiting or delayed job before a worker takes it")  # fmt: skip
def delete_job(
    name: str, job_id: str, actor: Annotated[Actor, Depends(acting("delete-job"))]
) -> dict[str, Any]:
    from ..queued import delete

    return actor.run(f"job:{name}/{job_id}", lambda: {"deleted": queued_job(delete(name, job_id))})


@router.post("/queues/{name}/jobs/{job_id}/run-now", tags=["queues"],
             summary="put one waiting or delayed job at the head of its queue")  # fmt: skip
def run_job_now(
    name: str, job_id: str, actor: Annotated[Actor, Depends(acting("run-job-now"))]
) -> dict[str, Any]:
    from ..queued import run_now

    return actor.run(f"job:{name}/{job_id}", lambda: {"moved": queued_job(run_now(name, job_id))})


@router.get("/jobs/{message_id}/explain", tags=["jobs"],
            summary="why a job is not running yet, or what became of it")  # fmt: skip
def explain_job(message_id: str, _: Reader) -> dict[str, Any]:
    from ..explain import explain

    return {"message_id": message_id, "explanation": explain(message_id)}


@router.post("/jobs/{message_id}/cancel", tags=["jobs"],
             summary="skip the job if it is waiting; a running one sees bgjobs.cancelled()")  # fmt: skip
def cancel_job(message_id: str, actor: Annotated[Actor, Depends(acting("cancel"))]) -> dict[str, Any]:
    from ..cancels import cancel

    by = f"console:{actor.access.who}"
    return actor.run(f"job:{message_id}", lambda: {"cancelled": cancel(message_id, by=by)})


@router.get("/actors", tags=["actors"],
            summary="each actor's runs, failures and run time p50/p95 over the last hour or day")  # fmt: skip
def actors(
    _: Reader,
    span: Annotated[str, Query(pattern="^(hour|day)$", description="hour or day")] = "hour",
) -> dict[str, Any]:
    from ..deadletters import operated_broker
    from ..history import actor_series

    broker = operated_broker()
    found = actor_series(broker.client, broker.namespace, span=span)
    return listed([{"actor": name, "span": span, **figures} for name, figures in found.items()])
