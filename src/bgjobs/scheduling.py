"""``bgjobs scheduler``: the cron table, run by dramatiq-crontab under a Redis lock.

dramatiq-crontab is a Django app that reads Django settings at import. Only this
process configures a minimal Django (time zone, the lock's Redis URL) and imports it;
workers never import Django. Exactly one scheduler fires per deployment: the others
wait for the lock and take over within ``lock_timeout_s`` when the leader dies.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ConfigurationError
from .jobs import Job, JobRun, registered_jobs
from .settings import Settings

__all__ = ["Entry", "cron_table", "run_scheduler", "validate"]

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
    """The scheduled jobs: every declared job with a schedule that settings did not disable."""
    table = []
    for name, spec in sorted(registered_jobs().items()):
        schedule = settings.schedule_for(name, spec.schedule)
        if schedule is not None:
            validate(name, schedule)
            table.append(Entry(spec, schedule))
    return table


class _Tick:
    """What dramatiq-crontab schedules: an object with ``actor_name``, ``fn`` and ``send()``."""

    def __init__(self, spec: Job) -> None:
        self.spec = spec
        self.actor_name = spec.name
        self.fn: Callable[..., Any] = spec.fn

    def send(self) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        message = self.spec.typed.send(JobRun(trigger="cron", scheduled_for=now))
        logger.info("scheduled %s (%s)", self.spec.name, message.message_id)


def _configure_django(settings: Settings) -> None:
    import django
    from django.conf import settings as django_settings

    if not django_settings.configured:
        django_settings.configure(
            USE_TZ=True,
            TIME_ZONE=settings.timezone,
            INSTALLED_APPS=[],
        )
        django.setup()


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def run_scheduler(settings: Settings) -> int:
    """Run until stopped: wait for the lock, then fire the cron table while holding it."""
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError("bgjobs scheduler needs a Redis BGJOBS_BROKER_URL for its lock")
    table = cron_table(settings)
    _configure_django(settings)
    import redis
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from dramatiq_crontab import cron, interval
    from redis.exceptions import LockError

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client = redis.Redis.from_url(settings.broker_url)
    lock = client.lock(
        LOCK_NAME, timeout=settings.scheduler.lock_timeout_s, blocking=False, thread_local=False
    )
    for entry in table:
        logger.info("cron: %-40s %s", entry.job.name, entry.schedule)
    try:
        while True:
            if not lock.acquire(blocking=False):
                time.sleep(0.5)
                continue
            logger.info("scheduler lock acquired; firing %d job(s)", len(table))
            scheduler = BlockingScheduler(timezone=settings.timezone)
            # dramatiq-crontab registers on its module-level scheduler; point it at ours.
            import dramatiq_crontab

            dramatiq_crontab.scheduler = scheduler
            for entry in table:
                every = _EVERY.match(entry.schedule)
                tick = _Tick(entry.job)
                if every:
                    interval(seconds=int(every.group(1)))(tick)
                else:
                    cron(entry.schedule)(tick)

            def refresh(scheduler: BlockingScheduler = scheduler) -> None:
                try:
                    lock.extend(settings.scheduler.lock_timeout_s, replace_ttl=True)
                except LockError:
                    logger.error("lost the scheduler lock; stopping until it is free again")
                    scheduler.shutdown(wait=False)

            scheduler.add_job(
                refresh, IntervalTrigger(seconds=settings.scheduler.lock_refresh_s), name="lock"
            )
            try:
                scheduler.start()
            finally:
                with contextlib.suppress(LockError):
                    lock.release()
    except KeyboardInterrupt:
        logger.info("scheduler stopped")
        return 0
