"""The sections of :class:`bgjobs.settings.Settings`, one class each, with their defaults.

Each section holds its own defaults (see ``Settings``'s note on ``default_factory``); the
families read theirs as ``runtime.current().settings.<family>``.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

__all__ = [
    "ActorSettings", "CleanupSettings", "DigestRule", "EventSettings", "ExportSettings", "FamilySettings",
    "HealthSettings", "HttpVendorSettings", "MetricsSettings", "NotificationSettings",
    "OutboxSettings", "PayoutSettings", "PolicySettings", "RabbitmqSettings", "RetrySettings",
    "SchedulerSettings", "Section", "TracingSettings", "WebhookSettings", "WorkerSettings",
]  # fmt: skip


def _takes_text(annotation: Any) -> bool:
    return annotation in (str, SecretStr) or any(_takes_text(a) for a in get_args(annotation))


class Section(BaseModel):
    """A settings section (``BGJOBS_<SECTION>__<FIELD>``): unknown fields are refused, values frozen,
    and an empty variable is unset; the adapters' and Redis's sections are made of it too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty variable (``BGJOBS_TRACING__ENABLED=``) is unset for a setting that is not text,
        not an error at the host's first send; text keeps it (an empty schedule disables a job)."""
        field = cls.model_fields[info.field_name] if value == "" and info.field_name else None
        if field is None or _takes_text(field.annotation):
            return value
        return field.get_default(call_default_factory=True)


class WorkerSettings(Section):
    """How the worker finds dead peers and poison messages."""

    #: A worker silent for this long is dead; its unacked messages go back to their queue.
    heartbeat_timeout_ms: int = Field(default=30_000, ge=1_000)
    #: How often each worker process heartbeats and recovers dead peers' messages.
    maintenance_interval_ms: int = Field(default=5_000, ge=100)
    #: A message handed out this many times without finishing is dead-lettered.
    max_deliveries: int = Field(default=5, ge=1)
    #: How long dead-lettered messages are kept.
    dead_message_ttl_ms: int = Field(default=7 * 86_400_000, ge=60_000)
    #: At most this many dead letters per queue, the oldest dropped first (counted in
    #: ``bgjobs_dead_letters_dropped_total``); 0 keeps every one for ``dead_message_ttl_ms``.
    max_dead_letters: int = Field(default=0, ge=0)
    #: Redis key prefix (Dramatiq's namespace).
    namespace: str = "dramatiq"
    #: A message (its encoded payload and options) larger than this is refused when it is sent.
    max_message_bytes: int = Field(default=1_048_576, ge=1_024)
    #: A message for an actor this worker does not know is sent again, for a worker that knows it,
    #: for this long (a rolling deploy), then dead-lettered as ``unknown_actor``.
    unknown_actor_grace_s: float = Field(default=900, ge=0)


class ActorSettings(Section):
    """Retry and time limits; set per family, overridden per actor."""

    max_retries: int | None = Field(default=None, ge=0)
    min_backoff_ms: int | None = Field(default=None, ge=0)
    max_backoff_ms: int | None = Field(default=None, ge=0)
    time_limit_ms: int | None = Field(default=None, ge=1)


class RetrySettings(ActorSettings):
    """The global defaults (``BGJOBS_RETRIES__*``) under every family and actor.

    Each field has a real default here, so setting one variable keeps the others: pydantic-settings
    builds a section from its class defaults whenever any of its variables is given.
    """

    max_retries: int = Field(default=10, ge=0)
    min_backoff_ms: int = Field(default=1_000, ge=0)
    max_backoff_ms: int = Field(default=3_600_000, ge=0)
    time_limit_ms: int = Field(default=600_000, ge=1)


class FamilySettings(ActorSettings):
    """Defaults for every actor of one family (its queue); None inherits ``BGJOBS_RETRIES__*``."""


class HttpVendorSettings(Section):
    """A JSON-over-HTTP vendor (the bundled ``http`` SMS and push adapters)."""

    url: str | None = None
    #: Sent as ``Authorization: Bearer <token>``.
    token: SecretStr | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=15.0, gt=0)


class DigestRule(BaseModel):
    """How one digest collects: ``BGJOBS_NOTIFICATIONS__DIGESTS='{"reminders": {"window_s": 600}}'``."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The first message opens the window; the digest goes when it closes, or at ``max_items``.
    window_s: int = Field(default=600, ge=1)
    max_items: int = Field(default=50, ge=1)
    #: The digest's template; it gets ``items`` and ``count`` (docs/notifications.md, Digests).
    template: str = "reminder_digest"


CategoryName = Literal["transactional", "reminders", "marketing", "operational"]
_CRITICAL: tuple[CategoryName, ...] = ("transactional", "operational")


class NotificationSettings(FamilySettings):
    """Templates, consent, quiet hours and the reminder sweeps."""

    time_limit_ms: int | None = Field(default=60_000, ge=1)

    #: A directory of the host's templates (``<locale>/<template>/<part>``); they win over bgjobs's.
    templates_dir: str | None = None
    #: The last locale of every fallback chain (``pt-BR`` -> ``pt`` -> this).
    default_locale: str = "en"
    #: An SMS may use at most this many segments (160 GSM-7 / 70 UCS-2 characters for one).
    sms_max_segments: int = Field(default=1, ge=1, le=10)
    #: Non-urgent SMS and push wait until the end of these hours in the recipient's time zone.
    #: Equal start and end turn quiet hours off.
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(8, 0)
    #: ``pkg.mod:function(user_id=, category=, channel=) -> bool``; without it reminders go and
    #: marketing is skipped.
    consent: str | None = None
    #: ``pkg.mod:function(start=, end=)`` yielding :class:`~bgjobs.notifications.AppointmentDue`.
    appointments: str | None = None
    #: ``pkg.mod:function(trip_date=)`` yielding :class:`~bgjobs.notifications.TripDue`.
    unpaid_trips: str | None = None
    #: ``pkg.mod:function()`` yielding :class:`~bgjobs.notifications.PastDueAccount`.
    past_due: str | None = None
    #: Days before a trip on which an unpaid booking gets a payment reminder.
    payment_reminder_days: list[int] = Field(default_factory=lambda: [7, 3, 1])
    #: A past-due account gets at most one dunning email per this many hours.
    dunning_interval_h: int = Field(default=72, ge=1)
    #: ``booking.created``, ``booking.cancelled`` and ``payment.succeeded`` send their messages.
    on_events: bool = True
    #: Failover: a provider failing this often in a row is skipped for the cool-down (docs/notifications.md).
    failover_threshold: int = Field(default=3, ge=1)
    failover_cooldown_s: int = Field(default=60, ge=1)
    #: Categories or template names whose message may reach the recipient twice rather than not
    #: at all: one a provider may have taken (it timed out after the request was sent) goes on to
    #: the next provider. Others are retried with that provider only (a receipt is never doubled).
    duplicable: list[str] = Field(default_factory=lambda: ["reminders", "operational"])
    #: Digests, by the category or template name they collect (a template's own rule wins over its
    #: category's): a recipient's messages within a window become one (docs/notifications.md).
    digests: dict[str, DigestRule] = Field(default_factory=dict)
    #: Categories a recipient's preferences cannot turn off (the portal shows them locked).
    critical: list[CategoryName] = Field(default_factory=lambda: list(_CRITICAL))


class PayoutSettings(FamilySettings):
    """Commission, payout minimums, receipts and the balance check."""

    #: The platform's share of each earning (0.20: the vendor gets 80%); per vendor with
    #: ``bgjobs.payouts.set_commission_rate``.
    commission_rate: Decimal = Field(default=Decimal("0.20"), ge=0, le=1)
    #: Below this balance (in each currency) nothing is paid and the balance carries forward.
    minimum: Decimal = Field(default=Decimal("50.00"), ge=0)
    #: Per-currency minimums that override ``minimum`` (``{"JPY": "5000"}``).
    minimums: dict[str, Decimal] = Field(default_factory=dict)
    #: ``pkg.mod:function(vendor_id=)`` returning the vendor's
    #: :class:`~bgjobs.notifications.Recipient` (or None): receipts are emailed to it.
    vendor_contact: str | None = None
    #: Currencies whose platform balance the balance check reads from the gateway.
    balance_currencies: list[str] = Field(default_factory=list)
    #: An alert goes out once when a balance falls below ``balance_min`` or rises above ``balance_max``.
    balance_min: Decimal = Field(default=Decimal("1000"), ge=0)
    balance_max: Decimal = Field(default=Decimal("10000"), ge=0)
    #: Where operator alerts go (an email address); without it alerts are only logged and counted.
    alert_email: str | None = None
    #: A deferred charge not charged this many minutes after ``charge_ttl_from`` expires.
    charge_ttl_min: int = Field(default=30, ge=1)
    #: Where the TTL counts from: ``first_failure`` (a charge is tried for the TTL once it has failed)
    #: or ``created`` (a charge is valid for the TTL after ``defer_charge``; an older one expires
    #: without a gateway call, so a customer is never charged long after the purchase).
    charge_ttl_from: Literal["first_failure", "created"] = "first_failure"
    #: Seconds one ``payouts.charges`` run may spend charging; the rest waits for the next run.
    charges_budget_s: float = Field(default=240, gt=0)
    #: Payouts a job pays in turn and settles together; unset, by database (``_planning.SPLITS``).
    pay_batch: int | None = Field(default=None, ge=1, le=64)


class ExportSettings(FamilySettings):
    """Where exports go and how they are named."""

    time_limit_ms: int | None = Field(default=3_600_000, ge=1)

    #: Every export's storage key starts with this; no dataset, period or id can leave it.
    prefix: str = "exports"
    #: The key below the prefix: ``{dataset}``, ``{period}``, ``{id}`` and ``{ext}``.
    filename: str = "{dataset}/{period}/{dataset}-{period}-{id}.{ext}"
    #: Rows fetched per round trip from the database's server-side cursor.
    batch_size: int = Field(default=1_000, ge=1, le=100_000)
    #: How long the link in the "export ready" email stays valid (where the adapter signs links).
    url_expiry_s: int = Field(default=7 * 86_400, ge=60)


class PolicySettings(Section):
    """A retention policy declared in settings (``BGJOBS_CLEANUP__POLICIES`` as a JSON list)."""

    name: str
    table: str
    column: str
    older_than: str
    action: Literal["delete", "archive", "export-then-delete"] = "delete"
    #: Column -> value equalities, all of which must hold (``{"status": "completed"}``).
    where: dict[str, str | int | bool] = Field(default_factory=dict)
    archive_table: str | None = None
    order: int = 100


class CleanupSettings(FamilySettings):
    """Retention policies, batch size, log compression and bgjobs's own retention."""

    time_limit_ms: int | None = Field(default=3_600_000, ge=1)

    #: Rows per batch; each batch is its own short transaction.
    batch_size: int = Field(default=5_000, ge=1, le=50_000)
    #: A policy younger than this is refused when declared.
    min_age_days: float = Field(default=1.0, gt=0)
    policies: list[PolicySettings] = Field(default_factory=list)
    #: bgjobs's own tables; 0 keeps rows for ever.
    runs_days: int = Field(default=90, ge=0)
    notifications_days: int = Field(default=90, ge=0)
    webhooks_days: int = Field(default=30, ge=0)
    outbox_days: int = Field(default=7, ge=0)
    idempotency_days: int = Field(default=30, ge=0)
    #: The console's audit log (who did what, when).
    audit_days: int = Field(default=365, ge=0)
    #: Directories whose old files matching ``log_glob`` are gzip-compressed.
    log_dirs: list[str] = Field(default_factory=list)
    log_glob: str = "*.log"
    compress_after_days: int = Field(default=90, ge=1)


class WebhookSettings(FamilySettings):
    """Delivery to subscriber endpoints: timeouts, the retry schedule, auto-disable, the SSRF guard."""

    time_limit_ms: int | None = Field(default=60_000, ge=1)

    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: Each read may wait this long; an attempt is cut off once it has run ``connect_timeout_s``
    #: plus this long in all.
    timeout_s: float = Field(default=15.0, gt=0)
    #: Seconds to wait before each retry after a failed attempt: 8 attempts in all by default.
    #: Five retries with exponential backoff is ``[30, 60, 120, 240, 480]``.
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    #: Each retry delay is spread by up to this fraction either way, so retries do not arrive in step.
    jitter: float = Field(default=0.2, ge=0, lt=1)
    #: ``Retry-After`` on a 429, 502, 503 or 504 sets the next delay, up to this many seconds.
    retry_after_max_s: int = Field(default=3_600, ge=0)
    #: An endpoint failing for this long, with at least ``disable_min_failures`` failed attempts
    #: and no success, is disabled.
    disable_after_h: float = Field(default=120.0, gt=0)
    disable_min_failures: int = Field(default=10, ge=1)
    #: Deliveries one endpoint may have in flight at once, across all workers.
    endpoint_concurrency: int = Field(default=4, ge=1)
    #: Deliveries per second to an endpoint that sets no ``rate_limit`` of its own; None: no limit.
    rate_limit: int | None = Field(default=None, ge=1)
    #: Requests one worker process's dispatcher keeps in flight, slow ones (unanswered after 1 s)
    #: aside: more only lengthens every request's wait at a busy receiver.
    in_flight: int = Field(default=64, ge=1)
    #: The dispatcher takes messages from the lanes for about this many deliveries at a time.
    batch_deliveries: int = Field(default=100, ge=1)
    #: Bodies above this size are refused at ``publish``.
    max_payload_bytes: int = Field(default=256 * 1024, ge=1)
    #: How much of each response body the attempt log keeps.
    response_excerpt_bytes: int = Field(default=1_024, ge=0, le=65_536)
    #: Endpoints must use HTTPS.
    require_https: bool = True
    #: Hosts or CIDRs exempt from the SSRF guard (``127.0.0.1/32``, ``hooks.internal``).
    allow: list[str] = Field(default_factory=list)
    #: Events published through ``bgjobs.events`` are delivered to endpoints subscribed to them.
    from_events: bool = True
    #: The field of an event's payload that names its owner (``merchant_id``); None means no owner.
    event_owner_field: str | None = None
    #: ``pkg.mod:function(owner=)`` returning the owner's :class:`~bgjobs.notifications.Recipient`
    #: (or None), told when their endpoint is disabled.
    owner_contact: str | None = None
    #: The health sweep re-sends a delivery this overdue (its message was lost in a crash).
    sweep_grace_s: int = Field(default=300, ge=1)


class HealthSettings(Section):
    """When ``bgjobs status`` exits non-zero: a health check for orchestrators and alerts."""

    #: Unhealthy when dead letters (all queues together) exceed this.
    max_dead_letters: int = Field(default=1_000, ge=0)
    #: Unhealthy when a queue's oldest ready message has waited longer than this.
    max_age_s: int = Field(default=600, ge=1)
    #: Unhealthy with fewer live worker processes than this.
    min_workers: int = Field(default=1, ge=0)


class RabbitmqSettings(Section):
    """RabbitMQ deployments (``BGJOBS_BROKER_URL=amqp://...``)."""

    #: The management API (``http://user:password@host:15672``), for queue sizes with the messages
    #: in flight; without it, ready and delayed counts come from passive declarations.
    management_url: str | None = None
    #: How often a worker tries a login that RabbitMQ refuses (2 s apart) before it stops with one
    #: line, rather than every consumer retrying it for ever.
    login_tries: int = Field(default=3, ge=1)


class TracingSettings(Section):
    """OpenTelemetry tracing (``pip install 'bgjobs[otel]'``; docs/observability.md). The exporter is
    configured by the SDK's own ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ...)."""

    #: Propagate the trace through every message and record spans; off: nothing is imported.
    enabled: bool = False
    #: A stopping worker exports its last spans for at most this long, after it has stopped taking
    #: and running jobs; what the collector has not taken by then is dropped (and said so).
    shutdown_flush_s: float = Field(default=2.0, ge=0, le=60)


#: The shortest console token and password accepted.
MIN_TOKEN, MIN_PASSWORD = 16, 8


class ConsoleSettings(Section):
    """The operations console (``bgjobs console``, or ``bgjobs.console.create_app()`` mounted).

    With neither a token nor a password it answers loopback clients only, and the standalone
    server refuses to listen on any other address.
    """

    #: A bearer token for the API and external cron callers (``Authorization: Bearer ...``); the
    #: dashboard accepts it too, as the HTTP Basic password of any user.
    token: SecretStr | None = None
    #: HTTP Basic credentials for the dashboard (and the API).
    username: str | None = None
    password: SecretStr | None = None
    #: Every action (requeue, purge, pause, trigger, ...) is refused; pages and reads still work.
    read_only: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9181, ge=0, le=65535)
    #: Host names the console answers to (``Host`` header, port aside); empty: loopback names only
    #: without authentication (against DNS rebinding), any name with it.
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("token", "password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """An empty or short secret is refused, never taken as a credential: ``TOKEN=`` (set but
        empty) once let ``curl -u x:`` in."""
        least = MIN_TOKEN if info.field_name == "token" else MIN_PASSWORD
        if value is not None and len(value.get_secret_value()) < least:
            raise ValueError(
                f"at least {least} characters (it has {len(value.get_secret_value())}); for example "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value


class MetricsSettings(Section):
    enabled: bool = True
    #: Dramatiq's ``dramatiq_prom_host`` / ``dramatiq_prom_port`` variables win when set.
    host: str = "127.0.0.1"
    port: int = Field(default=9191, ge=0, le=65535)


class SchedulerSettings(Section):
    """One scheduler per deployment, under a Redis lock."""

    #: The lock expires this long after its holder stops refreshing it (a killed scheduler).
    lock_timeout_s: int = Field(default=10, ge=2)
    #: How often the leader refreshes the lock; well under the timeout.
    lock_refresh_s: int = Field(default=3, ge=1)
    #: A batch job triggered while a run of it is in progress: wait (retry later) or skip (logged).
    overlap: Literal["wait", "skip"] = "wait"
    #: A new leader fires missed ticks up to this many seconds late; older ones are skipped, logged.
    catch_up_s: int = Field(default=3_600, ge=0)


class EventSettings(Section):
    #: ``publish(..., key=K)`` twice within this window delivers once per subscriber.
    dedupe_window_s: int = Field(default=86_400, ge=1)


class OutboxSettings(Section):
    #: Each worker process relays committed outbox rows to the broker.
    relay_in_worker: bool = True
    #: The relay is woken by each commit that deferred work; this poll is only the fallback.
    poll_interval_ms: int = Field(default=1_000, ge=10)
    batch_size: int = Field(default=500, ge=1, le=10_000)
