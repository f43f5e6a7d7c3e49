"""bgjobs settings: one class, read from ``BGJOBS_*`` variables and ``.env``.

Nested sections use ``__`` (``BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS=30000``). A value that
does not parse raises :class:`~bgjobs.errors.ConfigurationError` naming the variable, so
the worker stops at boot with one line instead of failing on its first message.
"""

from __future__ import annotations

import functools
import re

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .sections import (
    ActorSettings,
    CleanupSettings,
    EventSettings,
    ExportSettings,
    FamilySettings,
    HealthSettings,
    HttpVendorSettings,
    LocalStorageSettings,
    MetricsSettings,
    NotificationSettings,
    OutboxSettings,
    PayoutSettings,
    PolicySettings,
    RetrySettings,
    S3Settings,
    SchedulerSettings,
    SmtpSettings,
    WebhookSettings,
    WorkerSettings,
)

__all__ = [
    "ActorSettings",
    "CleanupSettings",
    "EventSettings",
    "ExportSettings",
    "FamilySettings",
    "HealthSettings",
    "HttpVendorSettings",
    "LocalStorageSettings",
    "MetricsSettings",
    "NotificationSettings",
    "OutboxSettings",
    "PayoutSettings",
    "PolicySettings",
    "RetrySettings",
    "S3Settings",
    "SchedulerSettings",
    "Settings",
    "SmtpSettings",
    "WebhookSettings",
    "WorkerSettings",
    "get_settings",
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

    #: Adapters by name (``console``, ``memory``, ``smtp``, ``localfs``) or ``pkg.mod:Class``.
    mailer: str | None = None
    sms: str | None = None
    push: str | None = None
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

    #: Cron strings by job (``BGJOBS_SCHEDULE__PAYOUTS_WEEKLY="0 8 * * mon"``); empty disables a job.
    #: ``@every 30s`` runs a job on an interval instead.
    schedule: dict[str, str] = Field(default_factory=dict)
    #: The time zone cron strings are read in.
    timezone: str = "UTC"
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)

    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    http_sms: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    http_push: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    http_payment: HttpVendorSettings = Field(default_factory=HttpVendorSettings)
    localfs: LocalStorageSettings = Field(default_factory=LocalStorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)

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


def load_settings(**overrides: object) -> Settings:
    """Read settings now, turning a parse failure into one line that names the variable.

    Raises:
        ConfigurationError: a variable does not parse.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + "__".join(str(p) for p in first["loc"]).upper()
        value = first.get("input")
        shown = f"={value!r}" if isinstance(value, str | int) and not _SECRETISH.search(name) else ""
        raise ConfigurationError(f"{name}{shown}: {first['msg']}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return load_settings()
