"""Messages for an actor this worker does not know: given back during a grace period, then refused.

In a rolling deploy old and new workers share the queues, so a message a new release sends (a new
actor) can reach a worker of the old one. Dead-lettering it at once loses nothing but stalls the
work until an operator requeues it. Instead it is sent again a little later, for a worker that
knows the actor, for ``BGJOBS_WORKER__UNKNOWN_ACTOR_GRACE_S`` (15 minutes) from when a worker
first met it. Still unknown after that, it is dead-lettered as ``unknown_actor``, with the fix:
the actor's module is missing from ``BGJOBS_JOBS``, or no worker runs the release that has it.

Workers of a release before this one dead-letter such a message at once ("ActorNotFound"). So
each worker also adopts the dead letters that failed only for a missing actor it has
(:mod:`bgjobs.adoption`): a deploy from such a release loses nothing and waits for no operator.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dramatiq.middleware import Middleware, SkipMessage

from .errors import UnknownActor

__all__ = ["StandIn", "UnknownActor", "UnknownActors"]

logger = logging.getLogger("bgjobs.worker")

#: The option holding when a worker first met the message without knowing its actor (epoch ms).
SINCE_OPTION = "bgjobs_unknown_since"
#: Give-backs wait 5 s, 10 s, 20 s ... up to this.
MAX_WAIT_MS = 60_000


class StandIn:
    """What the broker hands Dramatiq's worker for an actor it does not declare: enough for the
    worker and the middleware to read (a priority, options), and a refusal if ever called."""

    priority = 0

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name
        self.options: dict[str, Any] = {"throws": (UnknownActor,), "max_retries": 0}

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise UnknownActor(f"no actor {self.actor_name!r} in this worker: add the module that declares "
                           "it to BGJOBS_JOBS")  # fmt: skip


class UnknownActors(Middleware):
    def __init__(self, grace_s: float) -> None:
        self.grace_ms = int(grace_s * 1000)

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.actor_name in broker.actors:
            return
        now = int(time.time() * 1000)
        since = int(message.options.get(SINCE_OPTION) or now)
        if now - since < self.grace_ms:
            tries = int(message.options.get("bgjobs_unknown_tries", 0))
            wait = min(MAX_WAIT_MS, 5_000 * 2**tries)
            message.options[SINCE_OPTION] = since
            message.options["bgjobs_unknown_tries"] = tries + 1
            logger.warning("no actor %r in this worker; message %s sent again in %d s for a worker that "
                           "has it (a rolling deploy?)", message.actor_name, message.message_id,
                           wait // 1000)  # fmt: skip
            broker.enqueue(message, delay=wait)
            raise SkipMessage(f"unknown actor {message.actor_name!r}, sent again")
        waited = (now - since) // 1000
        message.stuff_exception(UnknownActor(
            f"no worker declared actor {message.actor_name!r} within {waited} s: add the module that "
            "declares it to BGJOBS_JOBS, or run workers of the release that has it; then requeue this"
        ))  # fmt: skip
        message.fail()
