"""Where actors and jobs are declared: bgjobs's families and the host's ``BGJOBS_JOBS`` modules.

Importing a module declares its actors and jobs, so everything that runs or sends them by name
(the worker, the scheduler, ``bgjobs trigger`` and :func:`bgjobs.trigger`) imports the same list.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    import dramatiq

    from .settings import Settings

__all__ = ["FAMILY_MODULES", "import_job_modules", "trigger"]

#: The modules that declare bgjobs's actors and jobs with their handlers: a family's package
#: itself loads nothing until a name is used (:mod:`bgjobs.lazy`), so sending never imports these.
FAMILY_MODULES: tuple[str, ...] = (
    "bgjobs.outbox",
    "bgjobs.workflows",
    "bgjobs.notifications.actors",
    "bgjobs.webhooks.actors",
    "bgjobs.payouts.actors",
    "bgjobs.exports.actors",
    "bgjobs.cleanup.actors",
)


def import_job_modules(settings: Settings) -> None:
    """Import the families and the host's job modules, from the current directory first, as
    ``dramatiq`` looks, so a command finds ``BGJOBS_JOBS=["myapp.jobs"]`` wherever the worker does."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    for module in (*FAMILY_MODULES, *settings.jobs):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"BGJOBS_JOBS: cannot import {module!r}: {exc}") from None


def trigger(job_name: str, **args: str) -> dramatiq.Message[Any]:
    """Enqueue a batch job now, as ``bgjobs trigger`` does: bgjobs's own jobs and ``BGJOBS_JOBS``'s
    are found without importing their modules first.

    Raises:
        ConfigurationError: no job has that name; the message lists the known ones.
        UnknownArgument: an argument the job does not declare; nothing is sent.
        InvalidPayload: an argument the job cannot read; nothing is sent.
    """
    from . import jobs
    from .settings import get_settings

    if job_name not in jobs.registered_jobs():
        import_job_modules(get_settings())
    return jobs.trigger(job_name, **args)
