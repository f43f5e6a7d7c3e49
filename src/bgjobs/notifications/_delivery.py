"""Delivering one channel message, in the worker: at most once, whatever is killed when.

Delivery of one channel message (``deliver``), with any worker killable at any line:

1. Quiet hours and consent are checked first; a postponed message is re-sent with a delay,
   a refused one is recorded ``skipped`` with its reason.
2. A short transaction creates the message's row in ``bgjobs_notifications`` on first sight and
   claims it (:mod:`bgjobs.claims`). A row already ``sent``/``skipped`` means this copy is a
   duplicate (a second ``send()``, a redelivery): it is counted and nothing is sent. A row
   another worker holds means it is calling the provider now: this copy looks again later.
   A claim whose lease ran out means an attempt died while calling the provider.
3. The provider is called, outside any transaction, with the idempotency key, once the claim is
   checked; with several providers wired for the channel, one that fails hands the message to
   the next (:mod:`._failover`), and the row records which provider took it.
4. A second short transaction settles the claim: ``sent`` (with the provider's id) or the failure.

A crash between 3 and 4 is the one window where the provider may have sent already; the
retry passes the same key, so a provider that honours keys drops the copy, and for one
that cannot the row is marked ``possible_duplicate``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import db, runtime, tally, tracing
from ..batching import carry
from ..claims import Answer, Claim, Claims, Seen, recheck_ms
from ..clock import now as _now
from ..errors import PERMANENT, MaybeDelivered, PermanentError, TransientError
from ..portal._tokens import unsubscribe_url
from ..ports import EmailMessage, PushMessage, SmsMessage
from ..redact import mask_email, mask_phone, mask_text, mask_token
from ..settings import NotificationSettings
from ..typed import final_attempt
from ._failover import Provider, moves_on, ordered, providers, record_failure, record_success
from ._models import Channel, ChannelMessage, NotificationRecord
from ._policy import FINAL, consent_refusal, hold_until, ms_until
from ._preferences import Preferences, preferences
from .tasks import CHANNEL_TASKS

__all__ = ["CLAIMS", "deliver"]

logger = logging.getLogger("bgjobs.notifications")

#: The port each channel's span is named after (``mail.send``, ``sms.send``, ``push.send``).
_PORT_NAMES = {Channel.EMAIL: "mail", Channel.SMS: "sms", Channel.PUSH: "push"}

#: A channel message is claimed while its provider is called; ``sent``, ``skipped`` and ``dead``
#: are settled.
CLAIMS = Claims(NotificationRecord.__table__, name="notification", final=frozenset(FINAL), key="key")  # type: ignore[attr-defined]


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
            stmt = stmt.returning(
                t.c.status, t.c.attempts, t.c.lease_until, t.c.provider, t.c.possible_duplicate
            )
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


def _take(
    conn: Any, message: ChannelMessage, channel: Channel, now: datetime
) -> tuple[Seen, str | None, bool]:
    """The row's claim columns, its provider (the one that took it, or the one it is pinned to)
    and whether an earlier attempt may have reached a provider, creating the row on first sight
    (locked until commit on PostgreSQL)."""
    status, attempts, leased, provider, maybe_sent = conn.execute(
        _statements.take(conn.dialect.name), _new_row(message, channel, now)
    ).one()
    return Seen(status, attempts, leased), provider, bool(maybe_sent)


def _count(channel: Channel, outcome: str, provider: str = "") -> None:
    tally.counter(
        "bgjobs_notifications_total", "Channel messages by outcome and provider.",
        ("channel", "outcome", "provider"),
    ).labels(str(channel), outcome, provider).inc()  # fmt: skip


def _refusal(
    message: ChannelMessage, channel: Channel, settings: NotificationSettings, chosen: Preferences
) -> str | None:
    """Why the recipient's preferences or consent stop this message, or None when it may go."""
    return consent_refusal(message.category, message.recipient.user_id, channel, settings, chosen)


def _finalise_without_sending(message: ChannelMessage, channel: Channel, status: str, reason: str) -> str:
    now = _now()
    with db.get_engine().begin() as conn:
        if _take(conn, message, channel, now)[0].status in FINAL:
            conn.execute(_statements.duplicate, {"k": message.key})
            return "duplicate"
        _update(conn, message.key, status=status, reason=reason, updated_at=now)
    return status


def _unsubscribe_headers(message: ChannelMessage) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe for a category the recipient may turn off, when the portal is
    configured (its signing key and address): mail clients show an Unsubscribe button."""
    if message.category in runtime.current().settings.notifications.critical:
        return {}
    url = unsubscribe_url(message.recipient.user_id, str(message.category))
    if url is None:
        return {}
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def _port_message(message: ChannelMessage, channel: Channel) -> Any:
    who = message.recipient
    if channel is Channel.EMAIL:
        return EmailMessage(
            to=(str(who.email),), subject=message.subject, text=message.text, html=message.html,
            idempotency_key=message.key, headers=_unsubscribe_headers(message),
        )  # fmt: skip
    if channel is Channel.SMS:
        return SmsMessage(to=str(who.phone), body=message.text, idempotency_key=message.key)
    return PushMessage(
        tokens=who.push_tokens, title=message.subject, body=message.text, idempotency_key=message.key,
        data={"notification_id": message.notification_id, "template": message.template},
    )  # fmt: skip


def deliver(message: ChannelMessage, channel: Channel) -> str:
    """Deliver one channel message at most once; returns what happened.

    Outcomes: ``sent``, ``duplicate`` (already sent; nothing done), ``skipped`` (no consent),
    ``postponed`` (quiet hours; re-sent for later), ``busy`` (another worker is sending it).
    Provider errors propagate after being recorded, so the actor retries or dead-letters.
    """
    settings = runtime.current().settings
    now = _now()
    chosen = preferences(message.recipient.user_id)
    until = hold_until(message, channel, settings, now, chosen)
    if until is not None:
        CHANNEL_TASKS[channel].send(message, delay=ms_until(until, now), **carry())
        with db.get_engine().begin() as conn:
            if _take(conn, message, channel, now)[0].status not in FINAL:
                _update(conn, message.key, reason=f"quiet hours until {until.isoformat()}", updated_at=now)
        return "postponed"
    refusal = _refusal(message, channel, settings.notifications, chosen)
    if refusal is not None:
        outcome = _finalise_without_sending(message, channel, "skipped", refusal)
        if outcome == "skipped":
            logger.info("%s %s to %s: skipped, %s", message.template, channel,
                        _reference(message, channel), refusal)  # fmt: skip
        _count(channel, outcome)
        return outcome

    claim = None
    with db.get_engine().begin() as conn:
        seen, pinned, maybe_sent = _take(conn, message, channel, now)
        answer = CLAIMS.answer(seen, now)
        if answer is Answer.DUPLICATE:
            conn.execute(_statements.duplicate, {"k": message.key})
            _count(channel, "duplicate")
            return "duplicate"
        if answer is Answer.TAKEN:
            claim = CLAIMS.take_one(conn, message.key, seen, now, values={"updated_at": now})
    if claim is None:  # another worker holds it (or took it between the read and the take)
        CHANNEL_TASKS[channel].send(message, delay=recheck_ms(seen, now), **carry())
        return "busy"
    with claim.kept():
        return _deliver(message, channel, claim, ordered(channel, pinned), settings.notifications, maybe_sent)


def _deliver(
    message: ChannelMessage, channel: Channel, claim: Claim, chain: list[Provider],
    settings: NotificationSettings, maybe_sent: bool,
) -> str:
    """``maybe_sent``: an earlier attempt may have reached a provider (the row says so)."""
    sent_to, receipt, maybe_elsewhere = _send(message, channel, chain, settings, claim, maybe_sent)
    done = _now()
    with db.get_engine().begin() as conn:
        settled = CLAIMS.settle(
            conn, claim, status="sent", reason=None, provider_message_id=receipt.provider_message_id[:255],
            sent_at=done, updated_at=done, provider=sent_to.name[:64],
            possible_duplicate=maybe_sent or maybe_elsewhere or (
                claim.in_doubt and not receipt.duplicate and not sent_to.adapter.honours_idempotency_key),
        )  # fmt: skip
    if not settled:  # held up past its claim while the provider took it: the new holder records it
        logger.warning("%s %s: sent by %s, but another worker took the message over meanwhile",
                       message.template, channel, sent_to.name)  # fmt: skip
        _count(channel, "duplicate")
        return "duplicate"
    _count(channel, "sent", sent_to.name)
    if channel is Channel.SMS:
        tally.counter(
            "bgjobs_sms_segments_total", "SMS segments handed to the provider, by template.", ("template",)
        ).labels(message.template).inc(message.sms_segments)
    logger.info("sent %s %s to %s via %s", message.template, channel, _reference(message, channel),
                sent_to.name)  # fmt: skip
    return "sent"


def _send(
    message: ChannelMessage, channel: Channel, chain: list[Provider], settings: NotificationSettings,
    claim: Claim, maybe_sent: bool,
) -> tuple[Provider, Any, bool]:
    """Hand the message to the first provider of ``chain`` that takes it: (that provider, its
    receipt, whether an earlier one may have taken it too). A failure that does not move on to
    the next provider (docs/notifications.md) is recorded and raised, for the actor's retry."""
    port_message = _port_message(message, channel)
    maybe_elsewhere = False
    for i, provider in enumerate(chain):
        claim.check()  # a worker held up past its claim stops here: another may be sending it
        try:
            with tracing.span(f"{_PORT_NAMES[channel]}.send", **{"bgjobs.provider": provider.name,
                                                                  "bgjobs.template": message.template}):
                receipt = provider.adapter.send(message=port_message)
        except BaseException as exc:
            every = providers(channel)  # the whole chain: ``chain`` leaves out open circuits
            with_backup = len(every) > 1
            if with_backup and isinstance(exc, TransientError | PermanentError):
                record_failure(channel, provider, settings, every)
            onward = with_backup and moves_on(exc, category=message.category, template=message.template,
                                              settings=settings)  # fmt: skip
            if onward and i + 1 < len(chain):
                logger.warning("%s %s: provider %s failed (%s: %s); trying %s", message.template, channel,
                               provider.name, type(exc).__name__, exc, chain[i + 1].name)  # fmt: skip
                _count(channel, "failed_over", provider.name)
                maybe_elsewhere = maybe_elsewhere or isinstance(exc, MaybeDelivered)
                continue
            status = "dead" if isinstance(exc, PERMANENT) or final_attempt() else "failed"
            # A provider that may have taken the message keeps it: the retry goes to it alone.
            pin = provider.name[:64] if isinstance(exc, MaybeDelivered) and not onward else None
            why = mask_text(f"{provider.name}: {type(exc).__name__}: {exc}")[:1000]
            # Whether this or an earlier attempt may have reached a provider that keeps no keys: then
            # the next send may be a copy, and the row keeps saying so. An interrupt (the time limit)
            # may have cut the call after the provider took the message.
            cut = isinstance(exc, MaybeDelivered) or not isinstance(exc, Exception)
            reached = maybe_sent or maybe_elsewhere or (
                (cut or claim.in_doubt) and not provider.adapter.honours_idempotency_key)
            with db.get_engine().begin() as conn:
                if not CLAIMS.settle(conn, claim, status=status, reason=why, updated_at=_now(), provider=pin,
                                     possible_duplicate=reached):  # fmt: skip
                    _count(channel, "duplicate")
                    raise
            _count(channel, status, provider.name)
            raise
        record_success(channel, provider, chain_length=len(chain))
        return provider, receipt, maybe_elsewhere
    raise AssertionError("a provider chain is never empty")
