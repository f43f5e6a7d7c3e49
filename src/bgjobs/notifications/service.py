"""Notifications' logic: one ``send()`` fans out to channel messages; each is delivered once.

Delivery of one channel message (``deliver``), with any worker killable at any line:

1. Quiet hours and consent are checked first; a postponed message is re-sent with a delay,
   a refused one is recorded ``skipped`` with its reason.
2. A short transaction takes the message's row in ``bgjobs_notifications`` (created on
   first sight) and sets a lease. A row already ``sent``/``skipped`` means this copy is a
   duplicate (a second ``send()``, a redelivery): it is counted and nothing is sent. A live
   lease means another worker is calling the provider now: this copy looks again later.
   An expired lease means an attempt died while calling the provider.
3. The provider is called, outside any transaction, with the idempotency key.
4. A second short transaction records ``sent`` (with the provider's id) or the failure.

A crash between 3 and 4 is the one window where the provider may have sent already; the
retry passes the same key, so a provider that honours keys drops the copy, and for one
that cannot the row is marked ``possible_duplicate``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from .. import db, observability, wiring
from ..broker import current_settings
from ..clock import now as _now
from ..errors import PERMANENT, InvalidPayload
from ..ports import EmailMessage, PushMessage, SmsMessage
from ..redact import mask_email, mask_phone, mask_token
from ..settings import NotificationSettings, Settings
from ..typed import final_attempt, send_messages
from . import sources
from .models import Category, Channel, ChannelMessage, NotificationRecord, Recipient
from .segments import count_segments
from .templates import get_template, render

__all__ = ["Queued", "deliver", "deliveries", "quiet_until", "send"]

logger = logging.getLogger("bgjobs.notifications")

MAX_KEY_LENGTH = 200
#: Statuses after which a copy of the message is a duplicate and nothing more is done.
FINAL = ("sent", "skipped")
#: How often a copy that found another worker sending looks again (sooner if the lease ends).
LEASE_RECHECK = timedelta(seconds=2)


@dataclass(frozen=True)
class Queued:
    """What :func:`send` enqueued: one key per channel, and the channels held for quiet hours."""

    notification_id: str
    keys: dict[Channel, str]
    delayed_until: dict[Channel, datetime] = field(default_factory=dict)


def channel_key(key: str, channel: Channel | str) -> str:
    """The delivery log's key of one channel of a notification: ``notif:<key>:<channel>``."""
    return f"notif:{key}:{channel}"


def quiet_until(now: datetime, zone: str, start: time, end: time) -> datetime | None:
    """When the quiet hours around ``now`` end in ``zone``, or None outside them."""
    if start == end:
        return None
    local = now.astimezone(ZoneInfo(zone))
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside, day = start <= clock < end, local.date()
    else:  # the hours wrap past midnight (21:00-08:00)
        inside = clock >= start or clock < end
        day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return datetime.combine(day, end, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _hold_until(
    message: ChannelMessage, channel: Channel, settings: Settings, now: datetime
) -> datetime | None:
    if channel is Channel.EMAIL or message.urgent:
        return None
    n = settings.notifications
    zone = message.recipient.timezone or settings.timezone
    return quiet_until(now, zone, n.quiet_hours_start, n.quiet_hours_end)


def _actor(channel: Channel) -> Any:
    from . import actors

    return actors.CHANNEL_ACTORS[channel]


def _recipient(recipient: Recipient | Mapping[str, Any]) -> Recipient:
    if isinstance(recipient, Recipient):
        return recipient
    try:
        return Recipient.model_validate(recipient)
    except ValidationError as exc:
        raise InvalidPayload.from_validation_error("recipient", exc) from None


def _channels(template: Any, recipient: Recipient, channels: Sequence[Channel | str] | None) -> list[Channel]:
    if channels is None:
        chosen = [c for c in template.channels if recipient.can_receive(c)]
        if not chosen:
            wanted = ", ".join(template.channels)
            raise InvalidPayload(f"recipient {recipient.user_id} has no address for any of {template.name}'s "
                                 f"channels ({wanted})")  # fmt: skip
        return chosen
    chosen = []
    for name in channels:
        try:
            channel = Channel(name)
        except ValueError:
            raise InvalidPayload(f"unknown channel {name!r}; channels are email, sms and push") from None
        if channel not in template.channels:
            raise InvalidPayload(f"template {template.name} has no {channel} version")
        if not recipient.can_receive(channel):
            address = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "push_tokens"}[channel]
            raise InvalidPayload(f"recipient.{address}: required to send {template.name} by {channel}")
        chosen.append(channel)
    return list(dict.fromkeys(chosen))


def send(
    template: str,
    recipient: Recipient | Mapping[str, Any],
    context: BaseModel | Mapping[str, Any],
    *,
    channels: Sequence[Channel | str] | None = None,
    key: str | None = None,
    session: Session | None = None,
) -> Queued:
    """Render ``template`` for each channel and enqueue one message per channel.

    Args:
        recipient: a :class:`Recipient` or a mapping of its fields.
        context: the template's variables (its model, or a mapping).
        channels: defaults to the template's channels the recipient has an address for.
        key: the business key (``booking:123:confirmed``); with the channel it is the idempotency
            key, so sending the same key again delivers nothing new.
        session: the host's SQLAlchemy/SQLModel session: the messages are written to the outbox
            and exist only if that transaction commits.

    Raises:
        InvalidPayload: unknown template or channel, a bad address, a missing or wrong variable,
            an SMS over its segment budget; the message names the template and field.
    """
    settings = current_settings()
    n = settings.notifications
    tpl = get_template(template)
    who = _recipient(recipient)
    variables = tpl.check(context)
    chosen = _channels(tpl, who, channels)
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidPayload(f"key: must be 1 to {MAX_KEY_LENGTH} characters")
    notification_id = uuid.uuid4().hex
    base = key or notification_id
    payloads: dict[Channel, ChannelMessage] = {}
    for channel in chosen:
        content = render(
            tpl, channel, variables, who, host_dir=n.templates_dir, default_locale=n.default_locale
        )
        segments = 0
        if channel is Channel.SMS:
            counted = count_segments(content.text)
            if counted.segments > n.sms_max_segments:
                raise InvalidPayload(
                    f"template {tpl.name}: the SMS is {counted.units} {counted.encoding} characters, "
                    f"{counted.segments} segments; the budget is {n.sms_max_segments} "
                    f"({counted.per_segment} characters each; BGJOBS_NOTIFICATIONS__SMS_MAX_SEGMENTS)"
                )
            segments = counted.segments
        payloads[channel] = ChannelMessage(
            key=channel_key(base, channel), notification_id=notification_id, template=tpl.name,
            category=tpl.category, urgent=tpl.urgent, recipient=who, subject=content.subject,
            text=content.text, html=content.html, sms_segments=segments,
        )  # fmt: skip
    keys = {c: p.key for c, p in payloads.items()}
    if session is not None:
        from .. import outbox

        for channel, payload in payloads.items():
            outbox.defer(session, _actor(channel), payload)
        return Queued(notification_id, keys)
    now = _now()
    held = {c: t for c, p in payloads.items() if (t := _hold_until(p, c, settings, now)) is not None}
    ready = [_actor(c).message(p) for c, p in payloads.items() if c not in held]
    if ready:
        send_messages(_broker(), ready)
    for channel, until in held.items():
        _actor(channel).send(payloads[channel], delay=_ms_until(until, now))
    return Queued(notification_id, keys, held)


def _broker() -> Any:
    from ..broker import get_broker

    return get_broker()


def _ms_until(moment: datetime, now: datetime) -> int:
    return max(0, int((moment - now).total_seconds() * 1000))


# Delivery, in the worker.


def _reference(message: ChannelMessage, channel: Channel) -> str:
    who = message.recipient
    if channel is Channel.EMAIL:
        return mask_email(str(who.email))
    if channel is Channel.SMS:
        return mask_phone(str(who.phone))
    return f"{len(who.push_tokens)} device(s) {mask_token(who.push_tokens[0])}"


def _new_row(message: ChannelMessage, channel: Channel, now: datetime) -> dict[str, Any]:
    return {
        "key": message.key, "notification_id": message.notification_id, "template": message.template,
        "channel": str(channel), "category": str(message.category), "user_id": message.recipient.user_id,
        "recipient_ref": _reference(message, channel), "status": "queued", "attempts": 0, "duplicates": 0,
        "possible_duplicate": False, "created_at": now, "updated_at": now,
    }  # fmt: skip


class _Statements:
    """The delivery path's statements, built once: building them costs more CPU than running them.

    Core statements on a plain connection, with bound parameters, so each delivery reuses
    SQLAlchemy's compiled SQL instead of constructing ORM queries.
    """

    def __init__(self) -> None:
        self.table: Any = NotificationRecord.__table__  # type: ignore[attr-defined]
        t = self.table
        self.duplicate = update(t).where(t.c.key == bindparam("k")).values(duplicates=t.c.duplicates + 1)
        self.lease = (
            update(t).where(t.c.key == bindparam("k"))
            .values(attempts=t.c.attempts + 1, status="queued", lease_until=bindparam("lease"),
                    updated_at=bindparam("now"))
        )  # fmt: skip
        self._take: dict[str, Any] = {}
        self._set: dict[tuple[str, ...], Any] = {}

    def take(self, dialect: str) -> Any:
        """Insert the row unless it exists, and return its status and lease either way (one statement).

        ``ON CONFLICT DO UPDATE`` also locks an existing row on PostgreSQL until the transaction ends.
        """
        stmt = self._take.get(dialect)
        if stmt is None:
            t = self.table
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            new = insert(t).values({c.name: bindparam(c.name) for c in t.columns if c.name in _ROW_COLUMNS})
            stmt = new.on_conflict_do_update(
                index_elements=["key"], set_={"updated_at": new.excluded.updated_at}
            )
            stmt = stmt.returning(t.c.status, t.c.lease_until)
            self._take[dialect] = stmt
        return stmt

    def set(self, columns: tuple[str, ...]) -> Any:
        stmt = self._set.get(columns)
        if stmt is None:
            t = self.table
            stmt = (
                update(t).where(t.c.key == bindparam("k")).values({c: bindparam(f"v_{c}") for c in columns})
            )
            self._set[columns] = stmt
        return stmt


_ROW_COLUMNS = (
    "key", "notification_id", "template", "channel", "category", "user_id", "recipient_ref",
    "status", "attempts", "duplicates", "possible_duplicate", "created_at", "updated_at",
)  # fmt: skip
_statements = _Statements()


def _update(conn: Any, key: str, **values: Any) -> None:
    columns = tuple(sorted(values))
    conn.execute(_statements.set(columns), {"k": key, **{f"v_{c}": values[c] for c in columns}})


def _set(key: str, **values: Any) -> None:
    with db.get_engine().begin() as conn:
        _update(conn, key, **values)


def _take(conn: Any, message: ChannelMessage, channel: Channel, now: datetime) -> tuple[str, datetime | None]:
    """The row's status and lease, creating the row on first sight (locked until commit on PostgreSQL)."""
    status, leased = conn.execute(_statements.take(conn.dialect.name), _new_row(message, channel, now)).one()
    return status, leased


def _count(channel: Channel, outcome: str) -> None:
    observability.counter(
        "bgjobs_notifications_total", "Channel messages by outcome.", ("channel", "outcome")
    ).labels(str(channel), outcome).inc()


def _refusal(message: ChannelMessage, channel: Channel, settings: NotificationSettings) -> str | None:
    """Why consent stops this message, or None when it may go."""
    return _consent_refusal(message.category, message.recipient.user_id, channel, settings)


def _consent_refusal(
    category: Category, user_id: Any, channel: Channel, settings: NotificationSettings
) -> str | None:
    if category in (Category.TRANSACTIONAL, Category.OPERATIONAL):
        return None
    ask = sources.hook("consent", settings)
    if ask is None:
        if category is Category.MARKETING:
            return "marketing needs consent and no consent hook is configured"
        return None
    if ask(user_id=user_id, category=category, channel=channel):
        return None
    return f"user {user_id} does not accept {category} by {channel}"


def send_once(template: str, recipient: Recipient | Mapping[str, Any], context: Any, *, key: str) -> str:
    """What a sweep does with one item: ``send`` it unless nothing would come of it.

    Returns:
        ``queued`` (handed to delivery), ``already_done`` (every channel's delivery under ``key``
        is sent or skipped already: a rerun of the sweep) or ``refused`` (consent refuses every
        channel). A sweep counts these, so its run never reports as sent what was not.

    Raises:
        InvalidPayload: as :func:`send`.
    """
    tpl = get_template(template)
    who = _recipient(recipient)
    chosen = _channels(tpl, who, None)
    keys = [channel_key(key, c) for c in chosen]
    with db.read() as conn:
        done = conn.execute(
            select(func.count()).select_from(NotificationRecord)
            .where(col(NotificationRecord.key).in_(keys), col(NotificationRecord.status).in_(FINAL))
        ).scalar_one()  # fmt: skip
    if done == len(keys):
        return "already_done"
    settings = current_settings().notifications
    if all(_consent_refusal(tpl.category, who.user_id, c, settings) for c in chosen):
        return "refused"
    send(template, who, context, key=key)
    return "queued"


def _finalise_without_sending(message: ChannelMessage, channel: Channel, status: str, reason: str) -> str:
    now = _now()
    with db.get_engine().begin() as conn:
        if _take(conn, message, channel, now)[0] in FINAL:
            conn.execute(_statements.duplicate, {"k": message.key})
            return "duplicate"
        _update(conn, message.key, status=status, reason=reason, updated_at=now)
    return status


def _port_message(message: ChannelMessage, channel: Channel) -> Any:
    who = message.recipient
    if channel is Channel.EMAIL:
        return EmailMessage(
            to=(str(who.email),), subject=message.subject, text=message.text, html=message.html,
            idempotency_key=message.key,
        )  # fmt: skip
    if channel is Channel.SMS:
        return SmsMessage(to=str(who.phone), body=message.text, idempotency_key=message.key)
    return PushMessage(
        tokens=who.push_tokens, title=message.subject, body=message.text, idempotency_key=message.key,
        data={"notification_id": message.notification_id, "template": message.template},
    )  # fmt: skip


def _port(channel: Channel) -> Any:
    return {Channel.EMAIL: wiring.mailer, Channel.SMS: wiring.sms, Channel.PUSH: wiring.push}[channel]()


def deliver(message: ChannelMessage, channel: Channel) -> str:
    """Deliver one channel message at most once; returns what happened.

    Outcomes: ``sent``, ``duplicate`` (already sent; nothing done), ``skipped`` (no consent),
    ``postponed`` (quiet hours; re-sent for later), ``busy`` (another worker is sending it).
    Provider errors propagate after being recorded, so the actor retries or dead-letters.
    """
    settings = current_settings()
    now = _now()
    until = _hold_until(message, channel, settings, now)
    if until is not None:
        _actor(channel).send(message, delay=_ms_until(until, now))
        with db.get_engine().begin() as conn:
            if _take(conn, message, channel, now)[0] not in FINAL:
                _update(conn, message.key, reason=f"quiet hours until {until.isoformat()}", updated_at=now)
        return "postponed"
    refusal = _refusal(message, channel, settings.notifications)
    if refusal is not None:
        outcome = _finalise_without_sending(message, channel, "skipped", refusal)
        _count(channel, outcome)
        return outcome

    actor = _actor(channel)
    lease = timedelta(milliseconds=settings.limits_for(actor.name, actor.queue).time_limit_ms)
    with db.get_engine().begin() as conn:
        status, leased = _take(conn, message, channel, now)
        if status in FINAL:
            conn.execute(_statements.duplicate, {"k": message.key})
            _count(channel, "duplicate")
            return "duplicate"
        busy_until = db.aware(leased) if leased is not None else None
        in_doubt = busy_until is not None  # an expired lease: an attempt died calling the provider
        if busy_until is None or busy_until <= now:
            conn.execute(_statements.lease, {"k": message.key, "lease": now + lease, "now": now})
    if busy_until is not None and busy_until > now:
        actor.send(message, delay=_ms_until(min(busy_until, now + LEASE_RECHECK), now) + 100)
        return "busy"

    port = _port(channel)
    try:
        receipt = port.send(message=_port_message(message, channel))
    except BaseException as exc:
        status = "dead" if isinstance(exc, PERMANENT) or final_attempt() else "failed"
        _set(message.key, status=status, reason=f"{type(exc).__name__}: {exc}"[:1000], lease_until=None,
             updated_at=_now())  # fmt: skip
        _count(channel, status)
        raise
    done = _now()
    _set(
        message.key, status="sent", reason=None, provider_message_id=receipt.provider_message_id[:255],
        sent_at=done, updated_at=done, lease_until=None,
        possible_duplicate=in_doubt and not receipt.duplicate and not port.honours_idempotency_key,
    )  # fmt: skip
    _count(channel, "sent")
    if channel is Channel.SMS:
        observability.counter(
            "bgjobs_sms_segments_total", "SMS segments handed to the provider, by template.", ("template",)
        ).labels(message.template).inc(message.sms_segments)
    logger.info("sent %s %s to %s", message.template, channel, _reference(message, channel))
    return "sent"


def deliveries(
    *,
    notification_id: str | None = None,
    user_id: str | None = None,
    key: str | None = None,
    limit: int = 100,
) -> list[NotificationRecord]:
    """Rows of the delivery log, newest first, filtered by any of the arguments."""
    query = select(NotificationRecord)
    if notification_id is not None:
        query = query.where(NotificationRecord.notification_id == notification_id)
    if user_id is not None:
        query = query.where(NotificationRecord.user_id == user_id)
    if key is not None:
        query = query.where(col(NotificationRecord.key).startswith(f"notif:{key}:"))
    with db.session() as s:
        return list(s.exec(query.order_by(col(NotificationRecord.created_at).desc()).limit(limit)))
