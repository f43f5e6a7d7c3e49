"""Workflows: stages of jobs run one after another, a stage's steps in parallel, each step's result
readable by the steps after it (docs/batches.md).

::

    run = bgjobs.workflow(
        fetch.message({"id": 1}),
        bgjobs.group(resize.message({"size": s}) for s in (64, 256, 1024)),
        publish.message({"id": 1}),
    ).start()
    bgjobs.workflows.status(run.id)

Each stage is a batch (:mod:`bgjobs.batches`) whose ``on_success`` callback opens the next stage:
so a stage starts once, when every step of the one before has succeeded, whatever is killed when,
and a dead-lettered step stops the run until it is requeued and succeeds, which resumes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import dramatiq

from . import runtime
from .batch_store import KEEP_S, store_for
from .batching import BATCH, CALLBACK_OF, INDEX
from .errors import ConfigurationError, InvalidPayload
from .typed import Payload, _check_sizes, send_messages, task
from .workflow_steps import STEP, WORKFLOW, Records, records_for, step

__all__ = [
    "Group", "StepStatus", "Workflow", "WorkflowRun", "WorkflowStatus", "advance", "cancel", "group",
    "recent", "results", "status", "workflow", "workflow_results",
]  # fmt: skip

#: The most steps a workflow may have, over all its stages (its record holds every message).
MAX_STEPS = 1000


class Advance(Payload):
    workflow: str
    stage: int


#: Opens stage ``stage`` of a workflow: the ``on_success`` callback of the stage before it.
advance = task("bgjobs.workflow_advance", payload=Advance)


class Group:
    """Steps that run in parallel, as one stage of a workflow (Celery's ``group``)."""

    def __init__(self, messages: Iterable[dramatiq.Message[Any]]) -> None:
        self.messages = tuple(messages)
        if not self.messages:
            raise InvalidPayload("group: it has no steps")


def group(messages: Iterable[dramatiq.Message[Any]]) -> Group:
    """Steps (``actor.message(payload)``) that run in parallel, as one stage of a workflow."""
    return Group(messages)


@dataclass(frozen=True)
class StepStatus:
    stage: int
    index: int
    actor: str
    message_id: str
    #: ``waiting`` (its stage has not started), ``queued``, ``running``, ``succeeded``, ``failed``
    #: (dead-lettered), or ``cancelled`` (skipped after a cancel).
    state: str
    reason: str | None


@dataclass(frozen=True)
class WorkflowStatus:
    id: str
    description: str
    #: ``running``, ``succeeded``, ``failed`` (a step was dead-lettered), or ``cancelled`` (the run,
    #: or one of its steps with :func:`bgjobs.cancel`: the stage after it never starts).
    state: str
    #: The stage running now, or the last one (0-based).
    stage: int
    stages: list[list[StepStatus]]
    created_at: datetime
    finished_at: datetime | None

    @property
    def failed_step(self) -> StepStatus | None:
        return next((s for stage in self.stages for s in stage if s.state == "failed"), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times in ISO 8601 (the console's API)."""
        return {
            "id": self.id, "description": self.description, "state": self.state, "stage": self.stage,
            "stages": [[s.__dict__ for s in stage] for stage in self.stages],
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }  # fmt: skip


@dataclass(frozen=True)
class WorkflowRun:
    id: str

    def status(self) -> WorkflowStatus:
        return status(self.id)


class Workflow:
    """Stages run in order; a stage is one step (a message) or a :func:`group` of parallel steps."""

    def __init__(self, *stages: dramatiq.Message[Any] | Group, description: str = "") -> None:
        if not stages:
            raise InvalidPayload("workflow: it has no stages")
        self.stages = [s.messages if isinstance(s, Group) else (s,) for s in stages]
        for stage in self.stages:
            for found in stage:
                if not isinstance(found, dramatiq.Message):
                    kind = type(found).__name__
                    raise InvalidPayload(f"workflow: a step is {kind}, not actor.message(...)")
        if sum(len(s) for s in self.stages) > MAX_STEPS:
            raise InvalidPayload(f"workflow: more than {MAX_STEPS} steps; send a batch from a step instead")
        self.description = description[:200]

    def start(self) -> WorkflowRun:
        """Record the run and enqueue its first stage.

        Raises:
            InvalidPayload: a step's message is larger than ``BGJOBS_WORKER__MAX_MESSAGE_BYTES``;
                nothing is started.
        """
        broker = runtime.current().broker
        _check_sizes(broker, [m for stage in self.stages for m in stage])  # not at stage 3, in a worker
        records, id, now = records_for(broker), f"w_{uuid4().hex[:24]}", time.time()
        stages = [[m.asdict() for m in stage] for stage in self.stages]
        records.put(id, {"description": self.description, "stages": json.dumps(stages),
                         "created_at": repr(now), "stage": "0"})  # fmt: skip
        records.index(id, now)
        _open(broker, id, 0)
        return WorkflowRun(id)


def workflow(*stages: dramatiq.Message[Any] | Group, description: str = "") -> Workflow:
    """A workflow of ``stages``: call ``.start()`` to run it."""
    return Workflow(*stages, description=description)


def _open(broker: dramatiq.Broker, id: str, stage: int) -> None:
    """Open stage ``stage`` of workflow ``id`` once: run again (a redelivered callback, a kill
    halfway), it finds the stage's batch closed and does nothing, or still open and sends its
    steps again (a step sent twice is counted once). The steps go in one round trip, which keeps
    that window to one call."""
    records, batches = records_for(broker), store_for(broker)
    found = records.get(id)
    if not found or found.get("finished_at"):
        return
    stages = json.loads(found["stages"])
    if found.get("cancel") == "1" or stage == len(stages):
        records.put(id, {"finished_at": repr(time.time())})
        return
    batch_id = f"{id}.{stage}"
    steps: list[dramatiq.Message[Any]] = [dramatiq.Message(**m) for m in stages[stage]]
    made = batches.read(batch_id)
    if made and made.get("state") != "open":
        return
    if not made:
        after = advance.message(Advance(workflow=id, stage=stage + 1))
        after = after.copy(queue_name=steps[0].queue_name, options={**after.options, CALLBACK_OF: batch_id})
        batches.create(batch_id, description=f"workflow {id}: stage {stage + 1} of {len(stages)}",
                       parent=None, on_success=after, on_complete=None, reserved=len(steps))  # fmt: skip
    records.put(id, {"stage": str(stage)})
    tags = [{BATCH: batch_id, INDEX: i, WORKFLOW: id, STEP: f"{stage}.{i}"} for i in range(len(steps))]
    send_messages(broker, [m.copy(options={**m.options, **t}) for m, t in zip(steps, tags, strict=True)])
    batches.close(batch_id, len(steps))


@advance.handler
def _advance(payload: Advance) -> None:
    _open(runtime.current().broker, payload.workflow, payload.stage)


def _records() -> Records:
    return records_for(runtime.current().broker)


def status(id: str) -> WorkflowStatus:
    """Raises: InvalidPayload: no workflow has that id (or it started more than 7 days ago)."""
    records = _records()
    found = records.get(id)
    if not found:
        raise InvalidPayload(f"workflow: no workflow {id!r} (runs are kept {KEEP_S // 86400} days)")
    done, states = records.fields(f"{id}:results"), records.get(f"{id}:steps")
    current = int(found.get("stage", "0"))
    stages = []
    for n, stage in enumerate(json.loads(found["stages"])):
        row = []
        for i, m in enumerate(stage):
            name = f"{n}.{i}"
            state, _, why = states.get(name, "queued" if n <= current else "waiting").partition("\t")
            if name in done:
                state, why = "succeeded", ""
            row.append(StepStatus(n, i, m["actor_name"], m["message_id"], state, why or None))
        stages.append(row)
    finished = found.get("finished_at")
    now = {s.state for s in stages[current]}
    if found.get("cancel") == "1" or (not finished and "cancelled" in now):  # the run, or one of its steps
        state = "cancelled"
    elif finished:
        state = "succeeded"
    else:
        state = "failed" if "failed" in now else "running"
    return WorkflowStatus(
        id=id, description=found.get("description", ""), state=state, stage=current, stages=stages,
        created_at=datetime.fromtimestamp(float(found["created_at"]), UTC),
        finished_at=datetime.fromtimestamp(float(finished), UTC) if finished else None,
    )  # fmt: skip


def recent(limit: int = 50) -> list[WorkflowStatus]:
    """The newest runs first, up to ``limit`` (runs are kept 7 days)."""
    found = []
    for id in _records().newest(limit):
        try:
            found.append(status(id))
        except InvalidPayload:  # expired: its id stays in the index until the next start trims it
            continue
    return found


def cancel(id: str) -> WorkflowStatus:
    """Stop the run: its running stage's steps not started yet are skipped, a running step sees
    :func:`bgjobs.cancelled` turn true, and no later stage starts.

    Raises:
        InvalidPayload: no workflow has that id.
    """
    from . import batches

    found = status(id)
    if found.state != "running":
        return found
    _records().put(id, {"cancel": "1", "finished_at": repr(time.time())})
    batch_id = f"{id}.{found.stage}"
    if store_for(runtime.current().broker).read(batch_id):
        batches.cancel(batch_id)
    return status(id)


def results(id: str) -> list[list[Any]]:
    """Every stage's results so far, by stage then step (None for a step without one yet)."""
    found = status(id)
    kept = _records().get(f"{id}:results")
    return [[_decoded(kept.get(f"{s.stage}.{s.index}")) for s in stage] for stage in found.stages]


def workflow_results() -> list[list[Any]]:
    """In a workflow's step: the results of the stages before its own, by stage then step.

    Raises:
        ConfigurationError: called outside a workflow's step.
    """
    running = step.get()
    if running is None:
        raise ConfigurationError("workflow_results(): not in a workflow's step (use workflows.results(id))")
    id, name = running
    return results(id)[: int(name.split(".")[0])]


def _decoded(found: str | None) -> Any:
    return None if found is None else json.loads(found)
