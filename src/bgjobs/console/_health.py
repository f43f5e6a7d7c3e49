"""``/readyz``: each check a probe needs, cheap enough to ask every few seconds.

Every check reads what the workers already keep (queue lengths, heartbeats, the scheduler's
lease) or asks the database one indexed question, so the cost does not grow with the backlog.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .. import runtime
from ..outage import CONNECTION_ERRORS

__all__ = ["Check", "readiness"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _head() -> str:
    from ..migrations import head

    return head()


def _broker() -> str | None:
    from ..deadletters import operated_broker
    from ..redis_broker import BgjobsRedisBroker

    found = operated_broker()
    found.client.ping()
    if not isinstance(found, BgjobsRedisBroker):  # RabbitMQ: its coordination store and itself
        found.channel  # type: ignore[attr-defined]  # noqa: B018  (opens this thread's connection)
    return None


def _database() -> str | None:
    from ..migrations import current

    found, needed = current(), _head()
    if found != needed:
        return (f"the database is at revision {found or 'none'}, this bgjobs needs {needed}: "
                "run 'bgjobs db upgrade'")  # fmt: skip
    return None


def _workers() -> str | None:
    from ..pausing import paused
    from ..status import status

    found = status()
    stopped = paused()
    idle = [f"{q.name} ({q.ready} ready)" for q in found.queues
            if q.ready and not q.workers and q.name not in stopped]  # fmt: skip
    return f"no live worker for {', '.join(idle)}" if idle else None


def _scheduler() -> str | None:
    from ..scheduling import LOCK_NAME
    from ..status import scheduler_problem

    current = runtime.current()
    return scheduler_problem(current.settings, leading=current.coordination.held(LOCK_NAME))


_CHECKS = (("broker", _broker), ("database", _database), ("workers", _workers), ("scheduler", _scheduler))


#: Each check answers within this, or fails: a probe must answer within about 2 s even when Redis
#: hangs (a stopped process keeps its connections open, and a client's timeout is 10 s).
CHECK_TIMEOUT_S = 0.9
#: Threads the checks run on; a check that hangs holds one until its own client times out.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bgjobs-readyz")


def _bounded(check: Callable[[], str | None]) -> str | None:
    try:
        return _pool.submit(check).result(timeout=CHECK_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        return f"did not answer within {CHECK_TIMEOUT_S} s"


def readiness() -> list[Check]:
    """Each check, in order, each bounded by ``CHECK_TIMEOUT_S``; a check after a failed broker
    check is not run (it would only time out)."""
    found: list[Check] = []
    broken = False
    for name, check in _CHECKS:
        started = time.perf_counter()
        if broken and name in ("workers", "scheduler"):
            found.append(Check(name, False, "not checked: the broker does not answer", 0.0))
            continue
        try:
            problem = _bounded(check)
        except CONNECTION_ERRORS as exc:
            problem = f"does not answer: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        except SQLAlchemyError as exc:
            from ..db import unreachable

            problem = unreachable(exc)
        broken = broken or (name == "broker" and problem is not None)
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        found.append(Check(name, problem is None, problem or "ok", elapsed))
    return found
