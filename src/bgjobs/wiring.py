"""The one place adapters are wired: in code with :func:`configure`, or by settings.

``BGJOBS_MAILER=smtp`` (a bundled name) or ``BGJOBS_MAILER=myapp.mail:SesMailer``
(a class, a factory, or an instance). A class with a ``from_settings`` classmethod
gets the settings; any other callable is called with no arguments.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, cast

from .errors import ConfigurationError
from .ports import Mailer, PaymentGateway, PushSender, SmsSender, Storage
from .settings import Settings, get_settings

__all__ = ["configure", "load_object", "mailer", "payment", "push", "reset", "resolve", "sms", "storage"]

#: Port name (the setting and the ``configure`` keyword) -> the ABC it must implement.
PORTS: dict[str, type] = {
    "mailer": Mailer,
    "sms": SmsSender,
    "push": PushSender,
    "payment": PaymentGateway,
    "storage": Storage,
}

BUNDLED: dict[str, dict[str, str]] = {
    "console": {
        "mailer": "bgjobs.adapters.console:ConsoleMailer",
        "sms": "bgjobs.adapters.console:ConsoleSmsSender",
        "push": "bgjobs.adapters.console:ConsolePushSender",
        "payment": "bgjobs.adapters.console:ConsolePaymentGateway",
    },
    "memory": {
        "mailer": "bgjobs.adapters.memory:MemoryMailer",
        "sms": "bgjobs.adapters.memory:MemorySmsSender",
        "push": "bgjobs.adapters.memory:MemoryPushSender",
        "payment": "bgjobs.adapters.memory:MemoryPaymentGateway",
        "storage": "bgjobs.adapters.memory:MemoryStorage",
    },
    "smtp": {"mailer": "bgjobs.adapters.smtp:SmtpMailer"},
    "http": {
        "sms": "bgjobs.adapters.http:HttpSmsSender",
        "push": "bgjobs.adapters.http:HttpPushSender",
        "payment": "bgjobs.adapters.http:HttpPaymentGateway",
    },
    "localfs": {"storage": "bgjobs.adapters.localfs:LocalFileStorage"},
    "s3": {"storage": "bgjobs.adapters.s3:S3Storage"},
}

_lock = threading.Lock()
_wired: dict[str, Any] = {}


def load_object(path: str) -> Any:
    """Import ``pkg.mod:attr`` (or ``pkg.mod.attr``).

    Raises:
        ConfigurationError: the module or attribute does not exist.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load {path!r}: {exc}") from None
    return obj


def configure(
    *,
    mailer: Mailer | None = None,
    sms: SmsSender | None = None,
    push: PushSender | None = None,
    payment: PaymentGateway | None = None,
    storage: Storage | None = None,
) -> None:
    """Wire adapters in code. Only the ports given are changed.

    Raises:
        ConfigurationError: an adapter does not implement its port.
    """
    given = {"mailer": mailer, "sms": sms, "push": push, "payment": payment, "storage": storage}
    with _lock:
        for name, adapter in given.items():
            if adapter is not None:
                _wired[name] = _check(name, adapter)


def reset() -> None:
    """Forget every wired adapter, closing those that hold connections (for tests)."""
    with _lock:
        adapters = list(_wired.values())
        _wired.clear()
    for adapter in adapters:
        close = getattr(adapter, "close", None)
        if callable(close):
            close()


def _check(name: str, adapter: Any) -> Any:
    if not isinstance(adapter, PORTS[name]):
        raise ConfigurationError(f"{name} must be a {PORTS[name].__name__}, got {type(adapter).__name__}")
    return adapter


def _build(name: str, path: str, settings: Settings) -> Any:
    path = BUNDLED.get(path, {}).get(name, path)
    if path in BUNDLED:
        raise ConfigurationError(
            f"BGJOBS_{name.upper()}={path!r}: the {path} adapters do not include a {name}"
        )
    factory = load_object(path)
    if isinstance(factory, type) and hasattr(factory, "from_settings"):
        return factory.from_settings(settings)
    return factory() if callable(factory) else factory


def resolve(name: str, *, settings: Settings | None = None) -> Any:
    """The adapter wired for port ``name``, built from settings on first use.

    Raises:
        ConfigurationError: no adapter is wired for this port; the message names the setting.
    """
    kind = PORTS[name]
    with _lock:
        if name in _wired:
            return _wired[name]
        settings = settings or get_settings()
        path = getattr(settings, name)
        if not path:
            raise ConfigurationError(
                f"no {kind.__name__} is wired: call bgjobs.configure({name}=...) "
                f"or set BGJOBS_{name.upper()}=pkg.module:Class"
            )
        _wired[name] = adapter = _check(name, _build(name, path, settings))
        return adapter


def mailer() -> Mailer:
    """The wired :class:`~bgjobs.ports.Mailer`."""
    return cast(Mailer, resolve("mailer"))


def sms() -> SmsSender:
    """The wired :class:`~bgjobs.ports.SmsSender`."""
    return cast(SmsSender, resolve("sms"))


def push() -> PushSender:
    """The wired :class:`~bgjobs.ports.PushSender`."""
    return cast(PushSender, resolve("push"))


def payment() -> PaymentGateway:
    """The wired :class:`~bgjobs.ports.PaymentGateway`."""
    return cast(PaymentGateway, resolve("payment"))


def storage() -> Storage:
    """The wired :class:`~bgjobs.ports.Storage`."""
    return cast(Storage, resolve("storage"))
