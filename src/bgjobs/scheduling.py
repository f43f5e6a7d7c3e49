"""``bgjobs scheduler``: the cron table, fired under a Redis lock, each tick exactly once.

Schedules are read with APScheduler's cron and interval triggers. One scheduler leads per
deployment: the others wait for the lock and take over within ``lock_timeout_s`` when the
leader dies, starting from the last tick fired (see :class:`Ticker`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import runtime
from .errors import BgjobsError, ConfigurationError
from .jobs import Job, JobRun, registered_jobs
from .outage import is_connection_error, report, store_outage
from .settings import Settings, schedule_key
from .stopping import stop_on_signals

if TYPE_CHECKING:
    from .coordination import Coordination
    from .operated import OperatedBroker

__all__ = ["Entry", "Ticker", "Upcoming", "cron_table", "run_scheduler", "upcoming", "validate"]

logger = logging.getLogger("bgjobs.scheduler")

_EVERY = re.compile(r"^@every\s+(\d+)s$")
LOCK_NAME = "bgjobs-scheduler"


@dataclass(frozen=True)
class Entry:
    job: Job
    schedule: str


def validate(job: str, schedule: str) -> None:
    """Check one schedule string the way the scheduler will read it.

    Raises:
        ConfigurationError: names the job and what is wrong.
    """
    if _EVERY.match(schedule):
        return
    fields = schedule.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"schedule of {job!r} is {schedule!r}: expected 5 cron fields or '@every Ns'"
        )
    if any(c.isdigit() for c in fields[4]):
        raise ConfigurationError(
            f"schedule of {job!r} is {schedule!r}: use literal weekdays (mon, tue, ... sun), not numbers"
        )
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(schedule, timezone=UTC)
    except ValueError as exc:
        raise ConfigurationError(f"schedule of {job!r} is {schedule!r}: {exc}") from None


def cron_table(settings: Settings) -> list[Entry]:
    """The scheduled jobs: every declared job with a schedule that settings did not disable.

    A job's own schedule applies only when what it ``needs`` is wired (``payouts.charges`` needs a
    payment gateway): a family not in use never fails on a timer. A schedule set in settings
    applies regardless. :func:`left_out` says which jobs wait, and for what.
    """
    table = []
    for name, spec in sorted(registered_jobs().items()):
        schedule = settings.schedule_for(name, spec.schedule)
        if schedule is None or (not _set_in(settings, name) and _missing(spec, settings)):
            continue
        validate(name, schedule)
        table.append(Entry(spec, schedule))
    return table


def _set_in(settings: Settings, job: str) -> bool:
    return schedule_key(job) in settings.schedule


def _missing(spec: Job, settings: Settings) -> list[str]:
    from .wiring import wired

    return [need for need in spec.needs if not wired(need, settings)]


def left_out(settings: Settings) -> list[str]:
    """One line per job whose default schedule waits for a port or hook to be wired."""
    from .wiring import describe

    lines = []
    for name, spec in sorted(registered_jobs().items()):
        missing = _missing(spec, settings)
        if spec.schedule and missing and not _set_in(settings, name):
            lines.append(
                f"{name} is not scheduled: it needs {', '.join(describe(m) for m in missing)}; "
                f"BGJOBS_SCHEDULE__{schedule_key(name).upper()} schedules it anyway"
            )
    return lines


@dataclass
class _Clock:
    """One entry's next tick, read from its trigger; ticks are instants on a shared grid."""

    entry: Entry
    trigger: Any
    next: datetime | None = None


#: ``@every`` grids start here, so every scheduler of a deployment ticks on the same instants.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _trigger(schedule: str, timezone: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    every = _EVERY.match(schedule)
    if every:
        return IntervalTrigger(seconds=int(every.group(1)), start_date=_EPOCH, timezone=UTC)
    return CronTrigger.from_crontab(schedule, timezone=timezone)


class Ticker:
    """Fires each tick of the cron table exactly once across every scheduler of a deployment.

    A tick is an instant of its schedule. Before its message is sent, the tick is claimed in
    Redis in the same script that enqueues it (``SET <ns>:bgjobs-tick:<job>:<epoch> NX``), so two
    leaders (a paused one that resumed, and its successor) can never both send it, and a
    leader killed mid-send leaves it either sent and claimed or neither. The last tick of each
    job is recorded; a new leader starts from there and fires what was missed within
    ``BGJOBS_SCHEDULER__CATCH_UP_S``, so a leader dying just before Monday 08:00 does not skip
    the weekly payout run.
    """

    def __init__(
        self, settings: Settings, table: list[Entry], broker: OperatedBroker, coordination: Coordination
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.coordination = coordination
        self.clocks = [_Clock(e, _trigger(e.schedule, settings.timezone)) for e in table]
        self.catch_up = timedelta(seconds=settings.scheduler.catch_up_s)
        # A claim outlives every tick a leader could still try to fire.
        self.claim_ttl_s = settings.scheduler.catch_up_s + 4 * settings.scheduler.lock_timeout_s + 60

    def _key(self, *parts: str) -> str:
        return ":".join((self.broker.namespace, *parts))

    def resume(self, now: datetime) -> None:
        """On taking the lead: each job's next tick is the first after the last one fired."""
        names = [c.entry.job.name for c in self.clocks]
        lasts = self.coordination.marks([f"bgjobs-tick-last:{n}" for n in names])
        for clock, last in zip(self.clocks, lasts, strict=True):
            previous = datetime.fromtimestamp(float(last), UTC) if last else None
            clock.next = clock.trigger.get_next_fire_time(previous, now)
            self._skip_stale(clock, now)

    def _skip_stale(self, clock: _Clock, now: datetime) -> None:
        if clock.next is not None and clock.next < now - self.catch_up:
            logger.warning(
                "%s: ticks from %s were missed by more than the catch-up window (%ds); not fired",
                clock.entry.job.name, clock.next.isoformat(), self.catch_up.total_seconds(),
            )  # fmt: skip
            clock.next = clock.trigger.get_next_fire_time(None, now - self.catch_up)

    def due(self, now: datetime) -> float:
        """Fire every tick due by ``now``; returns the seconds until the next one."""
        for clock in self.clocks:
            while clock.next is not None and clock.next <= now:
                self.fire(clock.entry, clock.next)
                clock.next = clock.trigger.get_next_fire_time(clock.next, now)
                self._skip_stale(clock, now)
        upcoming = [c.next for c in self.clocks if c.next is not None]
        return max(0.0, (min(upcoming) - now).total_seconds()) if upcoming else 3600.0

    def fire(self, entry: Entry, tick: datetime) -> bool:
        """Send one tick unless another scheduler already did; True when this call sent it."""
        name = entry.job.name
        stamp = str(int(tick.timestamp()))
        message = entry.job.typed.message(JobRun(trigger="cron", scheduled_for=tick.astimezone(UTC)))
        sent = self.broker.enqueue_once(
            message, key=self._key("bgjobs-tick", name, stamp), ttl_s=self.claim_ttl_s
        )
        self.coordination.mark(f"bgjobs-tick-last:{name}", stamp)
        if sent is None:
            logger.info("%s at %s was already fired by another scheduler", name, tick.isoformat())
            return False
        logger.info("scheduled %s for %s (%s)", name, tick.isoformat(), sent.message_id)
        return True


@dataclass(frozen=True)
class Upcoming:
    """One entry of the cron table as an operator sees it."""

    job: str
    schedule: str
    #: The next tick after now (in UTC).
    next_at: datetime | None
    #: The last tick a scheduler fired (None: none yet).
    last_tick_at: datetime | None


def upcoming(
    settings: Settings, coordination: Coordination, *, now: datetime | None = None
) -> list[Upcoming]:
    """The cron table with each entry's next tick and the last one fired, soonest first."""
    moment = now or datetime.now(UTC)
    table = cron_table(settings)
    lasts = coordination.marks([f"bgjobs-tick-last:{e.job.name}" for e in table]) if table else []
    found = []
    for entry, last in zip(table, lasts, strict=True):
        fired = datetime.fromtimestamp(float(last), UTC) if last else None
        following = _trigger(entry.schedule, settings.timezone).get_next_fire_time(None, moment)
        found.append(Upcoming(entry.job.name, entry.schedule, following, fired))
    return sorted(found, key=lambda u: (u.next_at is None, u.next_at or moment, u.job))


class _LostLead(BgjobsError):
    """The leader lock lapsed (a pause longer than its timeout) and may be another's now."""


def run_scheduler(settings: Settings) -> int:
    """Run until stopped: wait for the lock, then fire the cron table while holding it."""
    table = cron_table(settings)
    from .deadletters import operated_broker

    current = runtime.current()
    broker = operated_broker(current.broker)
    ticker = Ticker(settings, table, broker, current.coordination)
    lock = current.coordination.lease(LOCK_NAME, ttl_ms=settings.scheduler.lock_timeout_s * 1000)
    refresh_s = settings.scheduler.lock_refresh_s
    for entry in table:
        logger.info("cron: %-40s %s", entry.job.name, entry.schedule)
    for line in left_out(settings):
        logger.info("cron: %s", line)
    if not table:
        logger.warning("cron: the table is empty, so this scheduler will fire nothing: declare a job "
                       "with a schedule (@bgjobs.job(..., schedule=...)) in a module of BGJOBS_JOBS, "
                       "set BGJOBS_SCHEDULE__<JOB>, or wire what a bundled job needs (the lines above)")
    with stop_on_signals():
        return _lead_until_stopped(ticker, lock, refresh_s)


def _lead_until_stopped(ticker: Ticker, lock: Any, refresh_s: float) -> int:
    """Wait for the lock, fire the table while holding it, wait again if it is lost; 0 when stopped."""
    from redis.exceptions import RedisError

    waiting_said = False
    try:
        while True:
            try:
                acquired = lock.acquire()
                store_outage().recover(log=logger)
                if not acquired:
                    if not waiting_said:
                        logger.info("standing by: another scheduler holds the lock; taking over if it stops")
                        waiting_said = True
                    time.sleep(0.5)
                    continue
                waiting_said = False
            except RedisError as exc:
                if is_connection_error(exc):
                    report(exc, log=logger)
                else:
                    logger.error("Redis refused the scheduler lock (%s); trying again", exc)
                time.sleep(1)
                continue
            logger.info("scheduler lock acquired; firing %d job(s)", len(ticker.clocks))
            try:
                ticker.resume(datetime.now(UTC))
                refreshed = time.monotonic()
                while True:
                    if time.monotonic() - refreshed >= refresh_s:
                        if not lock.renew():
                            raise _LostLead
                        refreshed = time.monotonic()
                    wait = ticker.due(datetime.now(UTC))
                    # Never past the next refresh (it may be due already, after a long catch-up).
                    time.sleep(max(0.0, min(wait, refresh_s - (time.monotonic() - refreshed), 0.5)) + 0.001)
            except _LostLead:
                logger.error("lost the scheduler lock; waiting until it is free again")
            except RedisError as exc:
                # A tick not sent is not recorded as sent: the next leader (maybe this one) catches up.
                logger.error("Redis failed while leading (%s); waiting for the lock again", exc)
                time.sleep(1)
            finally:
                with contextlib.suppress(RedisError):
                    lock.release()
    except KeyboardInterrupt:
        logger.info("scheduler stopped")
        return 0
