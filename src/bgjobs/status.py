"""``bgjobs status``: queue sizes, waiting times and live workers, read from the broker's Redis.

Everything comes from keys every worker already keeps (Dramatiq's queues and
heartbeats, bgjobs's worker descriptions), so status needs no running worker to
answer, and reports the ones it finds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import dramatiq

from . import runtime
from .coordination import coordination_for
from .deadletters import operated_broker, queues
from .operated import WORKERS_KEY, OperatedBroker
from .redis_broker import BgjobsRedisBroker
from .scheduling import LOCK_NAME, cron_table
from .settings import HealthSettings, Settings

__all__ = ["QueueStatus", "Status", "WorkerStatus", "status"]

#: Messages read from the head of each queue to find the one waiting longest.
_HEAD = 20


@dataclass(frozen=True)
class QueueStatus:
    name: str
    ready: int
    delayed: int
    #: None where the engine cannot say (RabbitMQ without BGJOBS_RABBITMQ__MANAGEMENT_URL).
    in_flight: int | None
    dead_letters: int
    #: Seconds the oldest ready message has waited since it became ready; None when the queue is
    #: empty, and on RabbitMQ (which shows no message without taking it).
    oldest_age_s: float | None
    #: Live worker processes consuming the queue (those that describe themselves; see WorkerStatus).
    workers: int


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    #: Seconds since its last heartbeat.
    seen_s: float
    host: str | None = None
    pid: int | None = None
    queues: list[str] = field(default_factory=list)
    threads: int | None = None


@dataclass(frozen=True)
class Status:
    queues: list[QueueStatus]
    workers: list[WorkerStatus]
    scheduler: bool
    #: One line per crossed threshold; empty when healthy.
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def _ready_since(data: bytes | None) -> float | None:
    """When a message became ready: enqueued, or its eta for one released from the delay queue."""
    if data is None:
        return None
    message = json.loads(data)
    eta = message.get("options", {}).get("eta")
    return max(float(message.get("message_timestamp", 0)), float(eta or 0)) / 1000


def _oldest(client: Any, namespace: str, heads: dict[str, list[bytes]], now: float) -> dict[str, float]:
    """Seconds the oldest of each queue's first messages has waited since it became ready."""
    pipe = client.pipeline(transaction=False)
    for name, head in heads.items():
        pipe.hmget(f"{namespace}:{name}.msgs", head)
    found = {}
    for name, datas in zip(heads, pipe.execute(), strict=True):
        since = [t for t in map(_ready_since, datas) if t]
        if since:
            found[name] = round(max(now - min(since), 0.0), 1)
    return found


def _oldest_on_redis(broker: BgjobsRedisBroker, names: list[str], now: float) -> dict[str, float]:
    client, ns = cast(Any, broker.client), broker.namespace
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.lrange(f"{ns}:{name}", 0, _HEAD - 1)
    heads = {name: head for name, head in zip(names, pipe.execute(), strict=True) if head}
    return _oldest(client, ns, heads, now) if heads else {}


def _queues(broker: OperatedBroker, workers: list[WorkerStatus], now: float) -> list[QueueStatus]:
    names = queues(broker)
    sizes = broker.queue_sizes(names)
    # RabbitMQ shows no message without taking it, so the oldest one's age is Redis's alone.
    oldest = _oldest_on_redis(broker, names, now) if isinstance(broker, BgjobsRedisBroker) else {}
    return [
        QueueStatus(name, *sizes[name], oldest.get(name), sum(name in w.queues for w in workers))
        for name in names
    ]


def _workers(broker: OperatedBroker, now: float) -> list[WorkerStatus]:
    client = cast(Any, broker.client)
    timeout = broker.worker_settings.heartbeat_timeout_ms / 1000
    beats = client.zrangebyscore(
        broker.key("__heartbeats__"), (now - timeout) * 1000, "+inf", withscores=True
    )
    infos = client.hmget(broker.key(WORKERS_KEY), [worker for worker, _ in beats]) if beats else []
    found = []
    for (worker, seen), info in zip(beats, infos, strict=True):
        described = json.loads(info) if info else {}
        if "stopped" in described:  # shut down cleanly; its heartbeat has not expired yet
            continue
        described.pop("started", None)
        seen_s = round(max(now - seen / 1000, 0.0), 1)
        found.append(WorkerStatus(id=worker.decode(), seen_s=seen_s, **described))
    return sorted(found, key=lambda w: (w.host or "", w.pid or 0, w.id))


def scheduler_problem(settings: Settings, *, leading: bool) -> str | None:
    """Why the deployment is not healthy for want of a scheduler, or None.

    The one rule ``bgjobs status`` and ``/readyz`` both apply, so they never disagree: a cron table
    with entries and no scheduler leading means scheduled work silently stops. (Disable the
    entries, ``BGJOBS_SCHEDULE__<JOB>=""``, where an outside cron triggers the jobs instead.)
    """
    if leading or not cron_table(settings):
        return None
    return "the cron table has entries and no scheduler leads: start 'bgjobs scheduler'"


def status(*, health: HealthSettings | None = None, broker: dramatiq.Broker | None = None) -> Status:
    """The deployment's queues and workers now, judged against ``health`` (settings by default).

    Raises:
        ConfigurationError: the broker keeps no deployment state (the stub broker).
        redis.exceptions.ConnectionError: Redis does not answer.
    """

    found = operated_broker(broker)
    settings = runtime.current().settings
    limits = health or settings.health
    now = time.time()
    workers = _workers(found, now)
    queue_list = _queues(found, workers, now)
    scheduler = coordination_for(found).held(LOCK_NAME)
    problems = []
    dead = sum(q.dead_letters for q in queue_list)
    if dead > limits.max_dead_letters:
        problems.append(f"{dead} dead letters (more than {limits.max_dead_letters})")
    for q in queue_list:
        if q.oldest_age_s is not None and q.oldest_age_s > limits.max_age_s:
            problems.append(f"queue {q.name}: oldest message waited {q.oldest_age_s:.0f}s "
                            f"(more than {limits.max_age_s}s)")  # fmt: skip
    if len(workers) < limits.min_workers:
        problems.append(f"{len(workers)} live worker process(es) (fewer than {limits.min_workers})")
    for w in workers:
        if not w.queues:  # it heartbeats (fetches), but its maintenance has not run: nothing recovers
            problems.append(f"worker {w.id} has not described itself: its maintenance is not running")
    leaderless = scheduler_problem(settings, leading=scheduler)
    if leaderless is not None:
        problems.append(leaderless)
    return Status(queues=queue_list, workers=workers, scheduler=scheduler, problems=problems)
