"""Batch jobs: host functions (and the families' runs) as scheduled, locked, audited actors.

``@bgjobs.job("stock.reconcile", schedule="*/5 * * * *")`` turns a function taking a
:class:`JobContext` and returning a dict of counts into a typed actor that:

- holds a per-job lease (:mod:`bgjobs.coordination`), so a manual trigger never overlaps a scheduled
  run: the second waits (looks again later) or is skipped, by setting; a killed run's lease
  lapses with its worker's heartbeat;
- writes a ``bgjobs_runs`` row with the trigger, the outcome, the counts and any error;
- tells the function how much of its time budget is left, so long sweeps stop cleanly.

A job declares the arguments it reads as a :class:`JobArguments` model. An argument it does not
declare is refused wherever a trigger comes from (``bgjobs trigger``, the console, :func:`trigger`,
and the worker for a message sent by an older sender): a misspelt ``--perod`` that was dropped
would pay the default period instead of the one asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import dramatiq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import runs, runtime
from .errors import ConfigurationError, InvalidPayload, UnknownArgument
from .typed import Payload, TypedActor, actor

__all__ = [
    "Job", "JobArguments", "JobContext", "JobRun", "UnknownArgument", "job", "registered_jobs", "trigger",
]  # fmt: skip

logger = logging.getLogger("bgjobs.jobs")


class JobArguments(BaseModel):
    """The arguments a batch job reads, one field each; subclass it and pass ``arguments=`` to :func:`job`.

    Triggers carry them as strings (``--period 2025-W23``), so give fields types pydantic reads from
    a string (``str``, ``int``, ``bool``, ``date``, ``Literal``). Unknown names are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class JobRun(Payload):
    """The payload of every batch job message."""

    trigger: Literal["cron", "manual", "event", "continuation"] = "manual"
    args: dict[str, str] = Field(default_factory=dict)
    scheduled_for: datetime | None = None
    #: How many times this trigger has found its job running and looked again later.
    waits: int = Field(default=0, ge=0)


@dataclass
class JobContext:
    """What a job function is given: its run, its arguments, and the time it has left."""

    job: str
    run_id: str
    trigger: str
    args: dict[str, str]
    deadline: float | None = None
    #: ``args`` read by the job's :class:`JobArguments` model (None for a job that takes none).
    arguments: JobArguments | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    #: Arguments of the follow-up run asked for with :meth:`continue_later`.
    continuation: dict[str, str] | None = None
    #: Called once the run's outcome and counts are recorded (see :meth:`after_finish`).
    finishers: list[Callable[[], None]] = field(default_factory=list)
    #: Set when the job's lease is lost (its worker was held up past the lease's ttl): another
    #: run may have started, so this one stops at its next safe point.
    lease_lost: threading.Event = field(default_factory=threading.Event)

    def time_left(self) -> float:
        """Seconds left in the time budget (infinity without a budget)."""
        return float("inf") if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def out_of_time(self) -> bool:
        """True once the budget is spent, or the job's lease is lost: stop at the next safe point
        and report what remains."""
        return self.time_left() <= 0 or self.lease_lost.is_set()

    def after_finish(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after the run's row is finished: for work that completes after the job returns
        (a payout run's report, rewritten once its payouts settle) and must not be overwritten by it."""
        self.finishers.append(fn)

    def continue_later(self, **args: str) -> None:
        """Record this run as ``stopped`` and run the job again with ``args`` once it has ended.

        The follow-up is sent after this run has released the job's lease, so it never finds
        its own predecessor running (and is never skipped by ``BGJOBS_SCHEDULER__OVERLAP=skip``).
        """
        self.continuation = dict(args)


JobFunction = Callable[[JobContext], Mapping[str, Any] | None]

_lock = threading.Lock()
_jobs: dict[str, Job] = {}
#: How long a trigger that found its job running first waits before looking again; each further
#: look waits twice as long, up to the lease's lifetime (one heartbeat timeout).
OVERLAP_RECHECK_MS = 1_000


@dataclass
class Job:
    name: str
    fn: JobFunction
    schedule: str | None
    queue: str
    time_budget: float | None
    typed: TypedActor[JobRun, None]
    #: Checks a trigger's arguments before it is sent (raises InvalidPayload naming the argument).
    check: Callable[[dict[str, str]], object] | None = None
    #: Ports or hooks the job cannot run without; its cron entry is left out until they are wired.
    needs: tuple[str, ...] = ()
    #: The arguments it reads; None: it takes none.
    arguments: type[JobArguments] | None = None

    def send(self, *, trigger: str = "manual", **args: str) -> dramatiq.Message[Any]:
        """Raises:
        UnknownArgument: an argument the job does not declare; nothing is sent.
        InvalidPayload: an argument the job cannot read (``period=2025-13``); nothing is sent.
        """
        self.validate(args)
        return self.typed.send(JobRun(trigger=trigger, args=args))

    def validate(self, args: Mapping[str, str]) -> JobArguments | None:
        """The arguments, read by the job's model and checked by its ``check``.

        Raises:
            UnknownArgument: an argument the job does not declare.
            InvalidPayload: a value the job cannot read, naming the argument.
        """
        known = sorted(self.arguments.model_fields) if self.arguments is not None else []
        for name in args:
            if name not in known:
                raise UnknownArgument(self.name, name, known)
        parsed = None
        if self.arguments is not None:
            try:
                parsed = self.arguments.model_validate(dict(args))
            except ValidationError as exc:
                raise InvalidPayload.from_validation_error(self.name, exc) from None
        if self.check is not None:
            self.check(dict(args))
        return parsed


def registered_jobs() -> dict[str, Job]:
    """Every batch job declared so far, by name."""
    with _lock:
        return dict(_jobs)


def _run_job(spec: Job, payload: JobRun) -> None:
    current = runtime.current()
    settings = current.settings
    ttl_ms = settings.worker.heartbeat_timeout_ms
    lease = current.coordination.lease(f"bgjobs-job:{spec.name}", ttl_ms=ttl_ms)
    if not lease.acquire():
        if settings.scheduler.overlap == "skip" and payload.trigger != "continuation":
            run = runs.start(spec.name, payload.trigger)
            runs.finish(run, "skipped", error="another run of this job was in progress")
            logger.warning("skipped %s (%s): another run is in progress", spec.name, payload.trigger)
            return
        # Wait without spending the retry budget: a fresh message, due a little later, backing
        # off so that a long run is not answered by a message a second.
        delay = min(OVERLAP_RECHECK_MS * 2 ** min(payload.waits, 16), ttl_ms)
        spec.typed.send(payload.model_copy(update={"waits": payload.waits + 1}), delay=delay)
        logger.info("%s is already running; %s trigger rechecks in %d ms", spec.name, payload.trigger, delay)
        return
    with lease.kept() as held:
        run = runs.start(spec.name, payload.trigger)
        try:  # a message from a sender that did not check them (an older release, a hand-made one)
            parsed = spec.validate(payload.args)
        except InvalidPayload as exc:
            runs.finish(run, "failed", error=str(exc))
            raise
        budget = spec.time_budget
        ctx = JobContext(
            job=spec.name, run_id=run.id, trigger=payload.trigger, args=dict(payload.args),
            deadline=time.monotonic() + budget if budget else None, arguments=parsed, lease_lost=held.lost,
        )  # fmt: skip
        try:
            result = spec.fn(ctx)
        except BaseException as exc:
            runs.finish(run, "failed", counts=ctx.counts, error=f"{type(exc).__name__}: {exc}")
            raise
        counts = {**ctx.counts, **(result or {})}
        stopped = ctx.out_of_time or ctx.continuation is not None
        runs.finish(run, "stopped" if stopped else "succeeded", counts=counts)
        for finisher in ctx.finishers:
            finisher()
    if ctx.continuation is not None:
        spec.typed.send(JobRun(trigger="continuation", args=ctx.continuation))


def job(
    name: str, *, schedule: str | None = None, queue: str = "default", time_budget: float | None = None,
    check: Callable[[dict[str, str]], object] | None = None, needs: tuple[str, ...] = (),
    arguments: type[JobArguments] | None = None, **options: Any,
) -> Callable[[JobFunction], Job]:  # fmt: skip
    """Declare a batch job.

    Args:
        name: the job name (``stock.reconcile``); its schedule setting is
            ``BGJOBS_SCHEDULE__STOCK_RECONCILE``.
        schedule: a 5-field cron string with literal weekdays (``0 8 * * mon``) or ``@every 30s``;
            settings override it, an empty setting disables it, None means manual only.
        queue: the queue its messages go to.
        time_budget: seconds the function may use; it reads ``ctx.time_left()``.
        arguments: the arguments it reads (a :class:`JobArguments` model); without it, it takes
            none. A trigger naming another is refused, here and in the worker.
        check: called with a trigger's arguments before it is sent; raises ``InvalidPayload`` for
            one the job cannot read, so a bad ``bgjobs trigger`` fails at once, not in the worker.
        needs: ports (``payment``, ``storage``, ...) or hooks (``appointments``, ...) the job cannot
            run without: its default schedule applies only once they are wired, so a family not in
            use never fails on a timer. A schedule set in settings applies regardless.
        **options: Dramatiq actor options (``max_retries`` ...), winning over settings.
    """

    def decorate(fn: JobFunction) -> Job:
        spec: Job

        def run(payload: JobRun) -> None:
            _run_job(spec, payload)

        run.__module__ = fn.__module__
        typed = actor(name=name, queue=queue, **options)(run)
        spec = Job(name=name, fn=fn, schedule=schedule, queue=queue, time_budget=time_budget, typed=typed,
                   check=check, needs=needs, arguments=arguments)  # fmt: skip
        with _lock:
            _jobs[name] = spec
        return spec

    return decorate


def trigger(job_name: str, **args: str) -> dramatiq.Message[Any]:
    """Enqueue a batch job declared in this process now. :func:`bgjobs.trigger` (and ``bgjobs
    trigger``) also finds bgjobs's own jobs and ``BGJOBS_JOBS``'s without importing them first;
    this one sits below the families, which declare their jobs with :func:`job`, so it imports none.

    Raises:
        ConfigurationError: no job has that name; the message lists the known ones.
        UnknownArgument: an argument the job does not declare; nothing is sent.
        InvalidPayload: an argument the job cannot read; nothing is sent.
    """
    known = registered_jobs()
    if job_name not in known:
        names = ", ".join(sorted(known)) or "none are declared"
        raise ConfigurationError(f"unknown job {job_name!r}; known jobs: {names}")
    return known[job_name].send(trigger="manual", **args)
