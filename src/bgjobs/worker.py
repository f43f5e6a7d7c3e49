"""Worker boot: settings, broker, families, host jobs, setup hook, adapter checks.

Everything that can be wrong in configuration is found here, once, so a bad
setting stops the worker at boot with one line instead of failing message by message.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import dramatiq
from sqlalchemy.exc import SQLAlchemyError

from . import runtime
from .errors import ConfigurationError
from .settings import Settings, get_settings, unknown_variables
from .wiring import PORTS, load_object, resolve

__all__ = ["FAMILY_MODULES", "boot", "load_modules"]

logger = logging.getLogger("bgjobs.worker")

#: Modules whose import declares the bundled families' actors.
FAMILY_MODULES: tuple[str, ...] = (
    "bgjobs.outbox",
    "bgjobs.notifications",
    "bgjobs.webhooks",
    "bgjobs.payouts",
    "bgjobs.exports",
    "bgjobs.cleanup",
)


def load_modules(settings: Settings) -> None:
    """Import the families, the host's job modules, and run the setup hook: every actor is declared."""
    for module in (*FAMILY_MODULES, *settings.jobs):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"BGJOBS_JOBS: cannot import {module!r}: {exc}") from None
    if settings.setup:
        load_object(settings.setup)()


def build_runtime(settings: Settings) -> runtime.Runtime:
    """The worker's runtime: its broker with the worker's middleware (the outbox relay if on)."""
    from .outbox import OutboxRelay

    extra = [OutboxRelay(settings.outbox)] if settings.outbox.relay_in_worker else []
    built = runtime.Runtime(settings, worker=True, middleware=extra)
    runtime.install(built)
    return built


def _boot(settings: Settings) -> dramatiq.Broker:
    for line in unknown_variables(os.environ):
        logger.warning("%s", line)
    broker = build_runtime(settings).broker
    load_modules(settings)
    for name in PORTS:
        if getattr(settings, name):
            resolve(name, settings=settings)
    from .cleanup._policies import policies
    from .migrations import require_current

    policies(settings)  # BGJOBS_CLEANUP__POLICIES: a bad age stops the worker here, not at 02:00
    require_current(runtime.current().engine)
    return broker


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
