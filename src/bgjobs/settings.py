"""bgjobs settings: one class, read from ``BGJOBS_*`` variables and ``.env``.

Nested sections use ``__`` (``BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS=30000``). A value that
does not parse raises :class:`~bgjobs.errors.ConfigurationError` naming the variable, so
the worker stops at boot with one line instead of failing on its first message.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .adapter_sections import LocalStorageSettings, S3Settings, SftpSettings, SmtpSettings
from .errors import ConfigurationError
from .limit_sections import KeyLimitSettings
from .portal_sections import PortalSettings
from .redis_sections import RedisSettings, RedisTlsSettings
from .sections import (
    ActorSettings,
    CleanupSettings,
    ConsoleSettings,
    EventSettings,
    ExportSettings,
    FamilySettings,
    HealthSettings,
    HttpVendorSettings,
    MetricsSettings,
    NotificationSettings,
    OutboxSettings,
    PayoutSettings,
    PolicySettings,
    RabbitmqSettings,
    RetrySettings,
    SchedulerSettings,
    TracingSettings,
    WebhookSettings,
    WorkerSettings,
)

__all__ = [
    "ActorSettings",
    "CleanupSettings",
    "ConsoleSettings",
    "EventSettings",
    "ExportSettings",
    "FamilySettings",
    "HealthSettings",
    "HttpVendorSettings",
    "KeyLimitSettings",
    "LocalStorageSettings",
    "MetricsSettings",
    "NotificationSettings",
    "OutboxSettings",
    "PayoutSettings",
    "PolicySettings",
    "PortalSettings",
    "RabbitmqSettings",
    "RedisSettings",
    "RedisTlsSettings",
    "RetrySettings",
    "S3Settings",
    "SchedulerSettings",
    "Settings",
    "SftpSettings",
    "SmtpSettings",
    "TracingSettings",
    "WebhookSettings",
    "WorkerSettings",
    "get_settings",
    "unknown_variables",
]

ENV_PREFIX = "BGJOBS_"
_SECRETISH = re.compile("PASSWORD|SECRET|TOKEN|KEY")


class Settings(BaseSettings):
    """Everything bgjobs reads from the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    broker_url: str = "redis://localhost:6379/0"
    database_url: str = "sqlite:///bgjobs.db"
    #: The Redis that holds what RabbitMQ cannot (locks, caps, dedupe keys, dead letters, worker
    #: heartbeats): required with an ``amqp://`` broker, not read with a Redis one (its own Redis
    #: is the store). Any URL :mod:`bgjobs.redis_connections` takes: Sentinel and TLS too.
    coordination_url: str | None = None

    #: Adapters by name (``console``, ``memory``, ``smtp``, ``localfs``) or ``pkg.mod:Class``.
    #: A channel's may be a JSON list, the primary first: ``'["myapp.sms:Primary", "myapp.sms:Backup"]'``.
    mailer: str | list[str] | None = None
    sms: str | list[str] | None = None
    push: str | list[str] | None = None
    payment: str | None = None
    storage: str | None = None
    #: ``pkg.mod:function`` called once when a worker boots, to wire adapters and jobs.
    setup: str | None = None
    #: Host modules the worker imports so their jobs are declared.
    jobs: list[str] = Field(default_factory=list)

    # Every section is built by its own class's defaults (default_factory), never from a
    # configured default instance: pydantic-settings rebuilds a section from its class as soon
    # as one of its variables is set, so defaults held anywhere else would be lost.
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retries: RetrySettings = Field(default_factory=RetrySettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    payouts: PayoutSettings = Field(default_factory=PayoutSettings)
    exports: ExportSettings = Field(default_factory=ExportSettings)
    cleanup: CleanupSettings = Field(default_factory=CleanupSettings)
    #: Per-actor overrides: ``BGJOBS_ACTORS__<actor_name>__MAX_RETRIES=3``.
    actors: dict[str, ActorSettings] = Field(default_factory=dict)
    #: Per-key caps and rates by actor name, in place of what the code declares (docs/controls.md).
    key_limits: dict[str, KeyLimitSettings] = Field(default_factory=dict)

    #: Cron strings by job (``BGJOBS_SCHEDULE__PAYOUTS_WEEKLY="0 8 * * mon"``); empty disables a job.
    #: ``@every 30s`` runs a job on an interval instead.
    schedule: dict[str, str] = Field(default_factory=dict)
    #: The time zone cron strings are read in.
    timezone: str = "UTC"
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)

    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    redis_tls: RedisTlsSettings = Field(default_factory=RedisTlsSettings)
    rabbitmq: RabbitmqSettings = Field(default_factory=RabbitmqSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    http_sms: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    http_push: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    http_payment: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    localfs: LocalStorageSettings = Field(default_factory=LocalStorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    sftp: SftpSettings = Field(default_factory=SftpSettings)

    def schedule_for(self, job: str, default: str | None) -> str | None:
        """A job's cron string: settings, then the job's own default; None if disabled."""
        value = self.schedule.get(schedule_key(job), default)
        if value is None or not value.strip():
            return None
        return value.strip()

    def limits_for(self, actor_name: str, queue: str) -> RetrySettings:
        """Resolve an actor's limits: actor override, then family, then the global defaults."""
        layers = [
            layer for layer in (self.actors.get(actor_name), getattr(self, queue, None))
            if isinstance(layer, ActorSettings)
        ]  # fmt: skip
        merged = {
            field: next(
                (v for layer in layers if (v := getattr(layer, field)) is not None),
                getattr(self.retries, field),
            )
            for field in ActorSettings.model_fields
        }
        return RetrySettings(**merged)


def schedule_key(job: str) -> str:
    """The settings key of a job: ``payouts.weekly`` -> ``payouts_weekly``."""
    return re.sub(r"[^a-z0-9]+", "_", job.lower()).strip("_")


#: What a JSON-valued variable looks like, for the error that says one is not JSON.
_JSON_EXAMPLES = {
    "jobs": '["myapp.jobs"]',
    "actors": '{"notifications.sms": {"max_retries": 3}}',
    "key_limits": '{"reports.build": {"limit": 5, "rate": "300/m"}}',
    "schedule": '{"payouts_weekly": "0 8 * * mon"}',
}


def load_settings(**overrides: object) -> Settings:
    """Read settings now, turning a parse failure into one line that names the variable.

    Raises:
        ConfigurationError: a variable does not parse.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:  # a list or mapping variable that is not JSON
        field = re.search(r'field "([^"]+)"', str(exc))
        name = ENV_PREFIX + (field.group(1).upper() if field else "?")
        example = _JSON_EXAMPLES.get(field.group(1) if field else "", '["..."] or {"...": ...}')
        raise ConfigurationError(
            f"{name} is not valid JSON ({exc.__cause__ or exc}); "
            f"write it as JSON, for example {name}='{example}'"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + "__".join(str(p) for p in first["loc"]).upper()
        value = first.get("input")
        shown = f"={value!r}" if isinstance(value, str | int) and not _SECRETISH.search(name) else ""
        if first["type"] == "extra_forbidden":
            hint = _hint(name, _known_names()[0])
            raise ConfigurationError(f"{name} is not a bgjobs setting{hint}") from None
        said = str(first["msg"]).removeprefix("Value error, ")  # a validator's own sentence, as written
        raise ConfigurationError(f"{name}{shown}: {said}") from None


def _known_names() -> tuple[set[str], set[str]]:
    """Every variable name a setting answers to, and the prefixes under which any name goes."""
    names: set[str] = set()
    open_prefixes: set[str] = set()
    for field, info in Settings.model_fields.items():
        name = ENV_PREFIX + field.upper()
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names.add(name)  # the whole section as JSON
            names.update(f"{name}__{sub.upper()}" for sub in kind.model_fields)
        else:
            names.add(name)
            if str(kind).startswith("dict"):
                open_prefixes.add(name + "__")  # BGJOBS_ACTORS__<actor>__..., BGJOBS_SCHEDULE__<job>
    return names, open_prefixes


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``BGJOBS_*`` variable that no setting reads, with the closest name: a typo
    (``BGJOBS_MAILR``) would otherwise be ignored in silence."""
    names, open_prefixes = _known_names()
    sections = tuple(n + "__" for n in names if "__" not in n.removeprefix(ENV_PREFIX))
    lines = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in names or upper.startswith(tuple(open_prefixes)):
            continue
        if upper.startswith(sections):
            continue  # inside a section it is refused when the settings load, with the same hint
        lines.append(f"{variable} is not a bgjobs setting and is ignored{_hint(upper, names)}")
    return lines


def _hint(variable: str, names: set[str]) -> str:
    """"; did you mean <the closest setting>?", or where the settings are listed."""
    bare = {n.removeprefix(ENV_PREFIX): n for n in names}
    close = difflib.get_close_matches(variable.removeprefix(ENV_PREFIX), list(bare), n=1, cutoff=0.75)
    return f"; did you mean {bare[close[0]]}?" if close else "; docs/configuration.md lists the settings"


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return load_settings()
