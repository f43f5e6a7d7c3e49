"""bgjobs: ready background jobs on Dramatiq, with ports for your vendors."""

import importlib.metadata as _metadata

from .broker import get_broker, set_broker
from .errors import BgjobsError, ConfigurationError, InvalidPayload, PermanentError, TransientError
from .money import Money
from .settings import Settings, get_settings
from .typed import Payload, TypedActor, actor
from .wiring import configure

try:
    __version__ = _metadata.version("bgjobs")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BgjobsError",
    "ConfigurationError",
    "InvalidPayload",
    "Money",
    "Payload",
    "PermanentError",
    "Settings",
    "TransientError",
    "TypedActor",
    "__version__",
    "actor",
    "configure",
    "get_broker",
    "get_settings",
    "set_broker",
]
