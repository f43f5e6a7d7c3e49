"""Sending a notification (the host side): render each channel's message and enqueue it.

``send`` checks everything a worker would refuse (template, variables, addresses, SMS budget) so
a bad call fails in the caller, then sends one :mod:`task <bgjobs.notifications.tasks>` per
channel, held back for quiet hours where they apply. Delivery is :mod:`.delivery`'s.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select

from .. import db, outbox, runtime, tracing
from ..clock import now as _now
from ..errors import InvalidPayload, SmsOverBudget
from ..typed import send_messages
from . import _catalogue  # noqa: F401  (registers notifications' own templates)
from ._digests import collect, rule_for
from ._models import Channel, ChannelMessage, NotificationDelivery, NotificationRecord, Recipient
from ._policy import FINAL, MAX_KEY_LENGTH, channel_key, consent_refusal, hold_until, ms_until
from ._preferences import preferences
from ._segments import count_segments
from ._templates import get_template, render
from .tasks import CHANNEL_TASKS

__all__ = ["Queued", "SmsOverBudget", "deliveries", "send", "send_once"]

logger = logging.getLogger("bgjobs.notifications")


@dataclass(frozen=True)
class Queued:
    """What :func:`send` enqueued: one key per channel, and the channels held for quiet hours."""

    notification_id: str
    keys: dict[Channel, str]
    delayed_until: dict[Channel, datetime] = field(default_factory=dict)


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


@tracing.one_trace(runtime.current)
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

    A template (or category) with a rule in ``BGJOBS_NOTIFICATIONS__DIGESTS`` is collected into
    the recipient's digest window instead, unless ``channels`` or ``session`` is given or the
    recipient turned digests off in their preferences; the
    returned ``notification_id`` is then the window's id and ``keys`` is empty.

    Raises:
        InvalidPayload: unknown template or channel, a bad address, a missing or wrong variable,
            an SMS over its segment budget; the message names the template and field.
    """
    settings = runtime.current().settings
    n = settings.notifications
    tpl = get_template(template)
    who = Recipient.of(recipient)
    variables = tpl.check(context)
    chosen = _channels(tpl, who, channels)
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidPayload(f"key: must be 1 to {MAX_KEY_LENGTH} characters")
    digest = rule_for(n, tpl) if channels is None and session is None else None
    if digest is not None and preferences(who.user_id).digest is False:
        digest = None  # the recipient chose each message at once (their preferences)
    if digest is not None:  # collected into the recipient's digest window, sent when it closes
        digest_id = collect(*digest, tpl, who, variables, key or uuid.uuid4().hex)
        return Queued(digest_id, {})
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
                raise SmsOverBudget(
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
        for channel, payload in payloads.items():
            outbox.defer(session, CHANNEL_TASKS[channel], payload)
        return Queued(notification_id, keys)
    now = _now()
    held = {c: t for c, p in payloads.items() if (t := hold_until(p, c, settings, now)) is not None}
    ready = [CHANNEL_TASKS[c].message(p) for c, p in payloads.items() if c not in held]
    if ready:
        send_messages(runtime.current().broker, ready)
    for channel, until in held.items():
        CHANNEL_TASKS[channel].send(payloads[channel], delay=ms_until(until, now))
    return Queued(notification_id, keys, held)


def send_once(template: str, recipient: Recipient | Mapping[str, Any], context: Any, *, key: str) -> str:
    """What a sweep does with one item: ``send`` it unless nothing would come of it.

    Returns:
        ``queued`` (handed to delivery), ``already_done`` (every channel's delivery under ``key``
        is sent or skipped already: a rerun of the sweep), ``refused`` (consent refuses every
        channel: the first time, it is sent anyway, and the delivery records each channel
        ``skipped`` with consent's reason, as for any refused message) or ``sms_too_long`` (its
        other channels were handed to delivery; the SMS was over its segment budget). A sweep
        counts these, so its run never reports as sent what was not.

    Raises:
        InvalidPayload: as :func:`send`.
    """
    tpl = get_template(template)
    who = Recipient.of(recipient)
    chosen = _channels(tpl, who, None)
    keys = [channel_key(key, c) for c in chosen]
    with db.read() as conn:
        done = conn.execute(
            select(func.count()).select_from(NotificationRecord)
            .where(col(NotificationRecord.key).in_(keys), col(NotificationRecord.status).in_(FINAL))
        ).scalar_one()  # fmt: skip
    settings = runtime.current().settings.notifications
    if all(consent_refusal(tpl.category, who.user_id, c, settings) for c in chosen):
        if done < len(keys):  # the delivery records each channel skipped, with consent's reason
            send(template, who, context, key=key)
        return "refused"
    if done == len(keys):
        return "already_done"
    try:
        send(template, who, context, key=key)
    except SmsOverBudget as exc:
        # One item's long SMS must not cost it its email and push: they go, and the run says so.
        rest = [c for c in chosen if c is not Channel.SMS]
        if not rest:
            raise
        logger.warning("%s: sent without its SMS: %s", key, exc)
        send(template, who, context, key=key, channels=rest)
        return "sms_too_long"
    return "queued"


def deliveries(
    *,
    notification_id: str | None = None,
    user_id: str | None = None,
    key: str | None = None,
    template: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[NotificationDelivery]:
    """The delivery log, newest first, filtered by any of the arguments (``key``: the business key
    given to ``send``; ``status``: pending, sent, skipped, failed or dead)."""
    query = select(NotificationRecord)
    if template is not None:
        query = query.where(NotificationRecord.template == template)
    if status is not None:
        query = query.where(NotificationRecord.status == status)
    if notification_id is not None:
        query = query.where(NotificationRecord.notification_id == notification_id)
    if user_id is not None:
        query = query.where(NotificationRecord.user_id == user_id)
    if key is not None:
        query = query.where(col(NotificationRecord.key).startswith(f"notif:{key}:"))
    with db.session() as s:
        newest = query.order_by(col(NotificationRecord.created_at).desc(), col(NotificationRecord.key))
        rows = s.exec(newest.offset(offset).limit(limit))
        return [NotificationDelivery.model_validate(r) for r in rows]
