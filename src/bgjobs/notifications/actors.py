"""Notifications' actors: one per channel, the event triggers, and the reminder sweeps."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from .. import db, events, runtime
from ..clock import now as _now
from ..errors import InvalidPayload
from ..jobs import JobContext, job
from ..typed import actor
from . import _broadcast as broadcasting
from . import _delivery as delivery
from . import _digests
from . import _sender as sender
from . import _sources as sources
from ._models import (
    BookingCancelled,
    BookingCreated,
    BroadcastDone,
    Channel,
    ChannelMessage,
    DigestClose,
    NotificationRecord,
    PaymentSucceeded,
    SweepMark,
)
from .tasks import CHANNEL_TASKS, QUEUE, broadcast_done, digest_close, send_email, send_push, send_sms

__all__ = ["CHANNEL_ACTORS", "appointment_reminders", "dunning", "payment_reminders"]

logger = logging.getLogger("bgjobs.notifications")

@send_email.handler
def _email(message: ChannelMessage) -> None:
    delivery.deliver(message, Channel.EMAIL)


@send_sms.handler
def _sms(message: ChannelMessage) -> None:
    delivery.deliver(message, Channel.SMS)


@send_push.handler
def _push(message: ChannelMessage) -> None:
    delivery.deliver(message, Channel.PUSH)


@broadcast_done.handler
def _broadcast_done(payload: BroadcastDone) -> None:
    broadcasting.announce(payload)


@digest_close.handler
def _close_digest(payload: DigestClose) -> None:
    closed = _digests.close(payload.digest_id)
    if closed is not None:
        sender.send(closed.template, closed.recipient, closed.variables, key=closed.key)


#: One actor per channel (see :mod:`.tasks`).
CHANNEL_ACTORS = CHANNEL_TASKS


# Event triggers: the host publishes, bgjobs sends.

events.declare("booking.created", BookingCreated)
events.declare("booking.cancelled", BookingCancelled)
events.declare("payment.succeeded", PaymentSucceeded)


def _on_events() -> bool:
    return runtime.current().settings.notifications.on_events


@events.on("booking.created")
@actor(name="notifications.on_booking_created", queue=QUEUE)
def on_booking_created(event: BookingCreated) -> None:
    if _on_events():
        sender.send("booking_confirmation", event.recipient, event.model_dump(),
                     key=f"booking:{event.booking_id}:confirmed")  # fmt: skip


@events.on("booking.cancelled")
@actor(name="notifications.on_booking_cancelled", queue=QUEUE)
def on_booking_cancelled(event: BookingCancelled) -> None:
    if _on_events():
        sender.send("booking_cancellation", event.recipient, event.model_dump(),
                     key=f"booking:{event.booking_id}:cancelled")  # fmt: skip


@events.on("payment.succeeded")
@actor(name="notifications.on_payment_succeeded", queue=QUEUE)
def on_payment_succeeded(event: PaymentSucceeded) -> None:
    if _on_events():
        sender.send("payment_confirmation", event.recipient, event.model_dump(),
                     key=f"payment:{event.payment_id}:confirmed")  # fmt: skip


# Sweeps over the host's sources.


#: What a sweep's run counts: handed to delivery, done by an earlier run, refused by consent, bad,
#: and handed to delivery without an SMS that was over its segment budget.
SWEEP_COUNTS = ("queued", "already_done", "refused", "invalid", "sms_too_long")


def _send_each(ctx: JobContext, items: Any, build: Any) -> dict[str, int]:
    """Send one notification per item (``build`` returns what :func:`sender.send_once` says);
    a bad item is counted and logged, never stops the sweep."""
    counts = dict.fromkeys(SWEEP_COUNTS, 0)
    for item in items:
        if ctx.out_of_time:
            counts["stopped_early"] = 1
            break
        try:
            counts[build(item)] += 1
        except InvalidPayload as exc:
            counts["invalid"] += 1
            logger.warning("%s: not sent: %s", ctx.job, exc)
    return counts


@job("notifications.appointment_reminders", schedule="0 * * * *", queue=QUEUE, time_budget=300,
     needs=("appointments",))
def appointment_reminders(ctx: JobContext) -> dict[str, Any]:
    """Remind each appointment starting in 23-24 hours, once.

    The window starts where the previous sweep's ended, so a late or skipped sweep leaves
    no appointment out; the key ``appointment:<id>:reminder`` makes a second look harmless.
    """
    settings = runtime.current().settings.notifications
    source = sources.hook("appointments", settings)
    if source is None:
        return {"skipped": "no appointments source (BGJOBS_NOTIFICATIONS__APPOINTMENTS)"}
    now = _now()
    end = now + timedelta(hours=24)
    name = "sweep:appointment_reminders"
    with db.session() as s:
        mark = s.get(SweepMark, name)
        start = now + timedelta(hours=23)
        if mark is not None:
            start = max(now, min(start, db.aware(mark.at)))

    def remind(due: Any) -> str:
        return sender.send_once("appointment_reminder", due.recipient, due.model_dump(),
                                 key=f"appointment:{due.appointment_id}:reminder")  # fmt: skip

    counts = _send_each(ctx, source(start=start, end=end), remind)
    if not counts.get("stopped_early"):
        with db.session() as s:
            s.merge(SweepMark(name=name, at=end))
    return {**counts, "window_start": start.isoformat(), "window_end": end.isoformat()}


@job("notifications.payment_reminders", schedule="0 9 * * *", queue=QUEUE, time_budget=300,
     needs=("unpaid_trips",))
def payment_reminders(ctx: JobContext) -> dict[str, Any]:
    """Remind unpaid bookings whose trip is N days away, for each N in the settings, once per N."""
    settings = runtime.current().settings
    source = sources.hook("unpaid_trips", settings.notifications)
    if source is None:
        return {"skipped": "no unpaid trips source (BGJOBS_NOTIFICATIONS__UNPAID_TRIPS)"}
    today = _now().astimezone(ZoneInfo(settings.timezone)).date()
    totals: dict[str, Any] = dict.fromkeys(SWEEP_COUNTS, 0)
    for days in sorted(set(settings.notifications.payment_reminder_days)):

        def remind(due: Any, days: int = days) -> str:
            context = {**due.model_dump(), "days_until": days}
            return sender.send_once("payment_reminder", due.recipient, context,
                                     key=f"booking:{due.booking_id}:payment_reminder:{days}d")  # fmt: skip

        counts = _send_each(ctx, source(trip_date=today + timedelta(days=days)), remind)
        for name in SWEEP_COUNTS:
            totals[name] += counts[name]
        if counts.get("stopped_early"):
            totals["stopped_early"] = 1
            break
    return totals


@job("notifications.dunning", schedule="0 10 * * *", queue=QUEUE, time_budget=300, needs=("past_due",))
def dunning(ctx: JobContext) -> dict[str, Any]:
    """Email the admins of each past-due account, at most once per ``dunning_interval_h``.

    The time and key of the last dunning are recorded before the messages are sent; if the
    sweep dies in between, the next sweep finds no delivery for that key and sends it again
    under the same key, so nothing is lost and nothing goes twice.
    """
    settings = runtime.current().settings.notifications
    source = sources.hook("past_due", settings)
    if source is None:
        return {"skipped": "no past-due source (BGJOBS_NOTIFICATIONS__PAST_DUE)"}
    interval = timedelta(hours=settings.dunning_interval_h)
    counts = {"sent": 0, "not_due": 0, "invalid": 0}
    for account in source():
        if ctx.out_of_time:
            counts["stopped_early"] = 1
            break
        now = _now()
        name = f"dunning:{account.account_id}"
        with db.session() as s:
            mark = s.get(SweepMark, name)
            if mark is not None and now - db.aware(mark.at) < interval:
                pending = (
                    mark.key is not None
                    and s.exec(
                        select(NotificationRecord.key).where(
                            col(NotificationRecord.key).startswith(f"notif:{mark.key}:")
                        )
                    ).first()
                    is None
                )
                if not pending:
                    counts["not_due"] += 1
                    continue
                key = mark.key
            else:
                key = f"dunning:{account.account_id}:{now:%Y%m%d}:{uuid.uuid4().hex[:8]}"
                s.merge(SweepMark(name=name, at=now, key=key))
        try:
            for person in account.recipients:
                sender.send("dunning", person, account.model_dump(), key=f"{key}:{person.user_id}")
            counts["sent"] += 1
        except InvalidPayload as exc:
            counts["invalid"] += 1
            logger.warning("%s: not sent: %s", ctx.job, exc)
    return counts
