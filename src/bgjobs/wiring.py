"""The one place the host plugs in: ports and hooks, in code with :func:`configure` or by settings.

Ports: ``BGJOBS_MAILER=smtp`` (a bundled name) or ``BGJOBS_MAILER=myapp.mail:SesMailer`` (a class,
a factory, or an instance). A class with a ``from_settings`` classmethod gets the settings; any
other callable is called with no arguments.

Hooks: the callables families ask the host (``consent``, ``vendor_contact``, ...), set here or by
the family's setting naming ``pkg.mod:function``. Code wins over settings.

What is configured belongs to the current runtime (:mod:`bgjobs.runtime`), so a test's
``stub_jobs()`` configures its own memory adapters and leaves the host's untouched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from . import runtime
from .errors import ConfigurationError
from .ports import Mailer, PaymentGateway, PushSender, SmsSender, Storage
from .settings import Settings

__all__ = [
    "CHANNEL_PORTS", "HOOKS", "HOOK_SETTINGS", "PORTS", "configure", "describe", "hook", "load_object",
    "mailer", "payment", "providers", "push", "reset", "resolve", "sms", "storage", "wired",
]  # fmt: skip

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
    "sftp": {"storage": "bgjobs.adapters.sftp:SftpStorage"},
}

#: Where each hook's setting lives: (section, field).
HOOK_SETTINGS = {
    "consent": ("notifications", "consent"), "appointments": ("notifications", "appointments"),
    "unpaid_trips": ("notifications", "unpaid_trips"), "past_due": ("notifications", "past_due"),
    "owner_contact": ("webhooks", "owner_contact"), "vendor_contact": ("payouts", "vendor_contact"),
}  # fmt: skip

#: Hooks families ask the host; each has a setting of the same name in its family's section.
HOOKS = tuple(HOOK_SETTINGS)


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
    mailer: Mailer | Sequence[Mailer] | None = None,
    sms: SmsSender | Sequence[SmsSender] | None = None,
    push: PushSender | Sequence[PushSender] | None = None,
    payment: PaymentGateway | None = None,
    storage: Storage | None = None,
    consent: Callable[..., bool] | None = None,
    appointments: Callable[..., Any] | None = None,
    unpaid_trips: Callable[..., Any] | None = None,
    past_due: Callable[..., Any] | None = None,
    owner_contact: Callable[..., Any] | None = None,
    vendor_contact: Callable[..., Any] | None = None,
) -> None:
    """Plug in adapters and hooks in code; only those given change.

    Ports: ``mailer``, ``sms``, ``push``, ``payment``, ``storage``. A notification channel's port
    (``mailer``, ``sms``, ``push``) may be an ordered list of providers: the first is the primary,
    the others take over when it fails (docs/notifications.md, "Provider failover"). Hooks
    (docs/notifications.md,
    docs/webhooks.md, docs/payouts.md): ``consent(user_id=, category=, channel=) -> bool``,
    ``appointments(start=, end=)``, ``unpaid_trips(trip_date=)``, ``past_due()``,
    ``owner_contact(owner=)`` (a webhook endpoint's owner) and ``vendor_contact(vendor_id=)``
    (a payee), each returning what its family documents.

    Raises:
        ConfigurationError: an adapter does not implement its port.
    """
    ports = {"mailer": mailer, "sms": sms, "push": push, "payment": payment, "storage": storage}
    hooks = {"consent": consent, "appointments": appointments, "unpaid_trips": unpaid_trips,
             "past_due": past_due, "owner_contact": owner_contact,
             "vendor_contact": vendor_contact}  # fmt: skip
    checked: dict[str, Any] = {}
    for name, given in ports.items():
        if given is None:
            continue
        chain = [_check(name, a) for a in given] if isinstance(given, Sequence) else [_check(name, given)]
        _one_or_chain(name, len(chain), name)
        checked[name], checked[_chain_key(name)] = chain[0], chain
    current = runtime.current()
    with current.lock:
        current.adapters.update(checked)
        current.adapters.update({name: fn for name, fn in hooks.items() if fn is not None})


def reset() -> None:
    """Forget every adapter and hook configured, closing adapters that hold connections (for tests)."""
    current = runtime.current()
    with current.lock:
        adapters = list(current.adapters.values())
        current.adapters.clear()
    runtime.close_adapters(adapters)




#: The ports of the notification channels: each may be an ordered list of providers.
CHANNEL_PORTS = ("mailer", "sms", "push")


def _one_or_chain(name: str, count: int, where: str) -> None:
    """Only a channel's port takes a list, and never an empty one."""
    if count == 0 or (count > 1 and name not in CHANNEL_PORTS):
        more = " or a non-empty list of them" if name in CHANNEL_PORTS else ""
        raise ConfigurationError(f"{where}: give one adapter{more}")


def _chain_key(name: str) -> str:
    return f"{name}:providers"


def providers(name: str) -> list[Any]:
    """The providers of channel port ``name`` in order (the primary first), built on first use.

    Raises:
        ConfigurationError: none is wired; the message names the setting.
    """
    current = runtime.current()
    found = current.adapters.get(_chain_key(name))
    if found is None:
        resolve(name)
        found = current.adapters.get(_chain_key(name)) or [current.adapters[name]]
    return list(found)


def wired(name: str, settings: Settings | None = None) -> bool:
    """True when port or hook ``name`` is configured, in code or by its setting (nothing is built)."""
    current = runtime.current()
    if name in current.adapters:
        return True
    settings = settings or current.settings
    if name in PORTS:
        return bool(getattr(settings, name))
    section, field = HOOK_SETTINGS[name]
    return bool(getattr(getattr(settings, section), field))


def describe(name: str) -> str:
    """How to wire ``name``, for a line that says it is missing."""
    if name in PORTS:
        return f"a {PORTS[name].__name__} (BGJOBS_{name.upper()} or bgjobs.configure({name}=...))"
    section, field = HOOK_SETTINGS[name]
    return f"the {name} hook (BGJOBS_{section.upper()}__{field.upper()} or bgjobs.configure({name}=...))"


def hook(name: str, path: str | None) -> Callable[..., Any] | None:
    """The hook ``name`` set in code, else the one ``path`` (its setting) names, else None.

    Raises:
        ConfigurationError: the setting names something that cannot be imported.
    """
    found = runtime.current().adapters.get(name)
    if found is not None:
        return cast(Callable[..., Any], found)
    return None if path is None else load_object(path)


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
    try:
        factory = load_object(path)
    except ConfigurationError as exc:  # name the setting that holds the path
        raise ConfigurationError(f"BGJOBS_{name.upper()}: {exc}") from None
    if isinstance(factory, type) and hasattr(factory, "from_settings"):
        return factory.from_settings(settings)
    return factory() if callable(factory) else factory


def resolve(name: str, *, settings: Settings | None = None) -> Any:
    """The adapter wired for port ``name``, built from settings on first use.

    Raises:
        ConfigurationError: no adapter is wired for this port; the message names the setting.
    """
    kind = PORTS[name]
    current = runtime.current()
    found = current.adapters.get(name)
    if found is not None:
        return found
    with current.lock:
        if name in current.adapters:
            return current.adapters[name]
        settings = settings or current.settings
        path = getattr(settings, name)
        if isinstance(path, list):  # BGJOBS_SMS='["myapp.sms:Primary", "myapp.sms:Backup"]'
            _one_or_chain(name, len(path) if name in CHANNEL_PORTS else 0, f"BGJOBS_{name.upper()}")
            chain = [_check(name, _build(name, p, settings)) for p in path]
            current.adapters[_chain_key(name)] = chain
            current.adapters[name] = chain[0]
            return chain[0]
        if not path:
            bundled = ", ".join(b for b, ports in BUNDLED.items() if name in ports)
            raise ConfigurationError(
                f"no {kind.__name__} is wired: call bgjobs.configure({name}=...) "
                f"or set BGJOBS_{name.upper()} to a bundled one ({bundled}) or to pkg.module:Class"
            )
        current.adapters[name] = adapter = _check(name, _build(name, path, settings))
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
