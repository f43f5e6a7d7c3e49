"""Worker boot: settings, broker, families, host jobs, setup hook, adapter checks.

Everything that can be wrong in configuration is found here, once, so a bad
setting stops the worker at boot with one line instead of failing message by message.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import Any

import dramatiq
from dramatiq.common import dq_name
from sqlalchemy.exc import SQLAlchemyError

from . import runtime
from .broker import build_broker
from .errors import ConfigurationError, PermanentError
from .families import FAMILY_MODULES, import_job_modules
from .outage import BrokerOutageLog
from .settings import Settings, get_settings, unknown_variables
from .typed import final_attempt
from .wiring import PORTS, load_object, resolve

__all__ = ["FAMILY_MODULES", "OneLineRetries", "boot", "import_job_modules", "load_modules"]

logger = logging.getLogger("bgjobs.worker")

class OneLineRetries(logging.Filter):
    """A failure that will be retried logs one line (the actor, the attempt, the error), not a
    traceback per attempt: a vendor down for an hour wrote 45 lines a retry. The traceback stays
    on the last attempt (the message is dead-lettered) and whenever ``bgjobs`` logs at DEBUG.

    Installed on Dramatiq's worker-thread logger at boot. It also lowers Dramatiq's "was skipped"
    line to INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Message %s was skipped." and record.levelno == logging.WARNING:
            # A skip is bgjobs's decision (a cancel, a replaced unique job, a callback that ran):
            # nothing went wrong, and a debounced burst would write one warning per replaced send
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        exc = record.exc_info[1] if record.exc_info else None
        message: Any = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if exc is None or message is None or not hasattr(message, "options"):
            return True
        if isinstance(exc, PermanentError) or logging.getLogger("bgjobs").isEnabledFor(logging.DEBUG):
            return True
        try:
            if final_attempt(message):
                return True
        except Exception:  # no broker to ask: keep the record as it was
            return True
        attempt = int(message.options.get("retries", 0)) + 1
        record.msg = "%s failed on attempt %d and will be retried: %s: %s"
        first = str(exc).splitlines()[0] if str(exc) else ""
        record.args = (message.actor_name, attempt, type(exc).__name__, first)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _requested_queues(argv: list[str]) -> list[str]:
    """The queues named with ``-Q``/``--queues`` on the dramatiq command line (none: all)."""
    found: list[str] = []
    taking = False
    for arg in argv:
        if arg in ("-Q", "--queues"):
            taking = True
        elif arg.startswith("--queues="):
            found.append(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            taking = False
        elif taking:
            found.append(arg)
    return found


def _check_queues(broker: dramatiq.Broker, requested: list[str]) -> None:
    """Dramatiq listens to an unknown ``-Q`` name in silence: a pool that never gets a message."""
    known = {q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
    unknown = sorted(set(requested) - known)
    if unknown:
        raise ConfigurationError(
            f"-Q {' '.join(unknown)}: no such queue; the queues are {', '.join(sorted(known))}"
        )


#: A refused RabbitMQ login is tried ``BGJOBS_RABBITMQ__LOGIN_TRIES`` times, this far apart.
LOGIN_PAUSE_S = 2.0


def _check_login(broker: dramatiq.Broker, settings: Settings) -> None:
    """A RabbitMQ that refuses the login stops the worker with one line (after its login tries),
    instead of every consumer retrying it for ever; one that does not answer yet is waited for."""
    if not hasattr(broker, "parameters"):  # not RabbitMQ
        return
    import pika.exceptions

    from .redis_connections import explain

    tries = settings.rabbitmq.login_tries
    for attempt in range(1, tries + 1):
        try:
            broker.connection  # type: ignore[attr-defined]  # noqa: B018  (opens it)
        except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError,
                pika.exceptions.AuthenticationError) as exc:  # fmt: skip
            if attempt == tries:
                raise ConfigurationError(explain(exc, settings.broker_url)) from None
            time.sleep(LOGIN_PAUSE_S)
        except pika.exceptions.AMQPError as exc:
            logger.error("%s; the consumers keep trying", explain(exc, settings.broker_url))
            return
        else:
            del broker.connection  # type: ignore[attr-defined]
            return


def _fold_connection_errors(broker: dramatiq.Broker) -> None:
    """Each consumer thread's connection errors go through the process's one outage account."""
    gate = BrokerOutageLog()
    for queue in broker.get_declared_queues():
        for name in (queue, dq_name(queue)):
            logging.getLogger(f"dramatiq.worker.ConsumerThread({name})").addFilter(gate)


def load_modules(settings: Settings) -> None:
    """Import the families, the host's job modules, and run the setup hook: every actor is declared."""
    import_job_modules(settings)
    if settings.setup:
        try:
            setup = load_object(settings.setup)
        except ConfigurationError as exc:
            raise ConfigurationError(f"BGJOBS_SETUP: {exc}") from None
        setup()


def build_runtime(settings: Settings) -> runtime.Runtime:
    """The worker's runtime: its broker with the worker's middleware (the outbox relay if on)."""
    from .outbox import OutboxRelay

    extra = [OutboxRelay(settings.outbox)] if settings.outbox.relay_in_worker else []
    broker = build_broker(settings, worker=True, middleware=extra)
    built = runtime.Runtime(settings, broker=broker, worker=True)
    runtime.install(built)
    return built


def _boot(settings: Settings) -> dramatiq.Broker:
    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(OneLineRetries())
    for line in unknown_variables(os.environ):
        logger.warning("%s", line)
    broker = build_runtime(settings).broker
    _adopt_letters(broker, settings)
    load_modules(settings)
    for name in PORTS:
        if getattr(settings, name):
            resolve(name, settings=settings)
    from .cleanup._policies import policies
    from .keying import check_settings
    from .migrations import require_current

    _check_login(broker, settings)
    _check_queues(broker, _requested_queues(sys.argv[1:]))
    _fold_connection_errors(broker)
    policies(settings)  # BGJOBS_CLEANUP__POLICIES: a bad age stops the worker here, not at 02:00
    check_settings(settings)  # BGJOBS_KEY_LIMITS naming an actor without per-key limits
    require_current(runtime.current().engine)
    # What booting made (modules, metadata, schemas, settings) lives as long as the process. Moved
    # out of the collector's sight, a full collection no longer walks it: one took 80 to 120 ms
    # in a worker, a pause every job running at that moment waited out (docs/performance.md).
    gc.collect()
    gc.freeze()
    return broker


def _adopt_letters(broker: dramatiq.Broker, settings: Settings) -> None:
    """Each worker process requeues the dead letters a worker without their actor left (a rolling
    deploy), and resends lost work when the store comes back empty, from its maintenance thread
    (:mod:`bgjobs.adoption`, :mod:`bgjobs.recovery`)."""
    from .adoption import EVERY_S, adopter
    from .batch_store import store_for
    from .middleware import Maintenance
    from .recovery import watcher

    for m in broker.middleware:
        if isinstance(m, Maintenance):
            m.also(EVERY_S, adopter(broker, grace_s=settings.worker.unknown_actor_grace_s))
            m.also(0, watcher(broker))
            # Batch callbacks a worker killed before relaying them left (RabbitMQ only: a no-op on Redis)
            m.also(1.0, store_for(broker).relay)


def boot() -> dramatiq.Broker:
    """Build the worker's broker and declare every actor; exit with one line on bad configuration."""
    from .migrations import DatabaseBehind

    try:
        return _boot(get_settings())
    except DatabaseBehind as exc:
        print(f"bgjobs: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except ConfigurationError as exc:
        print(f"bgjobs: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except SQLAlchemyError as exc:
        from .db import unreachable

        print(f"bgjobs: {unreachable(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
