"""bgjobs: ready background jobs on Dramatiq, with ports for your vendors.

Names load on first use (PEP 562): ``import bgjobs`` costs next to nothing, and a host that only
sends notifications never imports the payouts family, SQLAlchemy or the Redis broker until it
needs them.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from . import batches, cleanup, events, exports, notifications, outbox, payouts, webhooks, workflows
    from .batches import batch, cancelled, current_batch
    from .cancels import cancel
    from .controls import Unique
    from .errors import BgjobsError, ConfigurationError, InvalidPayload, PermanentError, TransientError
    from .families import trigger
    from .jobs import JobArguments, JobContext, job
    from .money import Money
    from .per_key import PerKey
    from .runtime import get_broker, set_broker
    from .settings import Settings, get_settings
    from .typed import Payload, TypedActor, actor, delivery_key
    from .wiring import configure
    from .workflows import group, workflow, workflow_results

if _TYPE_CHECKING:
    __version__: str

#: Where each public name lives; a module name alone means the submodule itself.
_EXPORTS: dict[str, str] = {
    "BgjobsError": "errors", "ConfigurationError": "errors", "InvalidPayload": "errors",
    "PermanentError": "errors", "TransientError": "errors",
    "JobArguments": "jobs", "JobContext": "jobs", "job": "jobs", "trigger": "families",
    "Money": "money",
    "Payload": "typed", "TypedActor": "typed", "actor": "typed", "delivery_key": "typed",
    "Settings": "settings", "get_settings": "settings",
    "get_broker": "runtime", "set_broker": "runtime",
    "configure": "wiring",
    "batch": "batches", "cancelled": "batches", "current_batch": "batches",
    "group": "workflows", "workflow": "workflows", "workflow_results": "workflows", "Unique": "controls",
    "cancel": "cancels", "PerKey": "per_key",
    **{family: family for family in ("batches", "cleanup", "events", "exports", "notifications", "outbox",
                                     "payouts", "webhooks", "workflows")},
}  # fmt: skip


def _version() -> str:
    """The installed distribution's version, read on first use: ``importlib.metadata`` was 89% of
    ``import bgjobs``."""
    import importlib.metadata

    try:
        return importlib.metadata.version("bgjobs")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
        return "0.0.0"


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        globals()[name] = found = _version()
        return found
    home = _EXPORTS.get(name)
    if home is None:
        raise AttributeError(f"module 'bgjobs' has no attribute {name!r}")
    module = _importlib.import_module(f".{home}", __name__)
    value = module if home == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, "__version__"})


__all__ = [
    "BgjobsError",
    "ConfigurationError",
    "InvalidPayload",
    "JobArguments",
    "JobContext",
    "Money",
    "Payload",
    "PerKey",
    "PermanentError",
    "Settings",
    "TransientError",
    "TypedActor",
    "Unique",
    "__version__",
    "actor",
    "batch",
    "batches",
    "cancel",
    "cancelled",
    "cleanup",
    "configure",
    "current_batch",
    "delivery_key",
    "events",
    "exports",
    "get_broker",
    "get_settings",
    "group",
    "job",
    "notifications",
    "outbox",
    "payouts",
    "set_broker",
    "trigger",
    "webhooks",
    "workflow",
    "workflow_results",
    "workflows",
]
