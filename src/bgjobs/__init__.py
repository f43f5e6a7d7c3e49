"""bgjobs: ready background jobs on Dramatiq, with ports for your vendors."""

import importlib.metadata as _metadata

from . import cleanup, events, exports, notifications, outbox, payouts, webhooks
from .broker import get_broker, set_broker
from .errors import BgjobsError, ConfigurationError, InvalidPayload, PermanentError, TransientError
from .jobs import JobContext, job, trigger
from .money import Money
from .settings import Settings, get_settings
from .typed import Payload, TypedActor, actor, delivery_key
from .wiring import configure

try:
    __version__ = _metadata.version("bgjobs")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BgjobsError",
    "ConfigurationError",
    "InvalidPayload",
    "JobContext",
    "Money",
    "Payload",
    "PermanentError",
    "Settings",
    "TransientError",
    "TypedActor",
    "__version__",
    "actor",
    "cleanup",
    "configure",
    "delivery_key",
    "events",
    "exports",
    "get_broker",
    "get_settings",
    "job",
    "notifications",
    "outbox",
    "payouts",
    "set_broker",
    "trigger",
    "webhooks",
]
