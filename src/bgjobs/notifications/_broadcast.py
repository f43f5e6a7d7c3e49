"""One template to many recipients, as a batch: progress, a summary when done, once per recipient.

``broadcast("service_update", recipients, {"when": ...}, key="update-2026-12")`` checks every
recipient and the template's variables first (one bad address refuses the whole broadcast, naming
its position, before anything is sent), then sends each recipient's notification under the key
``<key>:<user_id>`` inside one batch (:mod:`bgjobs.batches`). So a host killed halfway sends the
broadcast again with the same key and each recipient still gets it once: the delivery log drops
the copies. When every channel message has been handled, the batch's callback logs the summary
(:func:`broadcast_summary`: sent, skipped with their reasons, failed) and publishes it as the
event ``notification.broadcast.completed``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from .. import db, events
from ..batches import batch
from ..errors import InvalidPayload
from ._catalogue import get_template
from ._models import BroadcastDone, NotificationRecord, Recipient
from ._sender import send
from .tasks import broadcast_done

__all__ = ["Broadcast", "BroadcastSummary", "announce", "broadcast", "broadcast_summary"]

logger = logging.getLogger("bgjobs.notifications")


@dataclass(frozen=True)
class Broadcast:
    """What :func:`broadcast` started: its batch (``bgjobs.batches.status(batch_id)``)."""

    key: str
    batch_id: str
    recipients: int


class BroadcastSummary(BaseModel):
    """The delivery log's account of a broadcast, per channel message."""

    key: str
    sent: int = 0
    #: Skipped (no consent, say), by reason.
    skipped: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    #: Not settled yet: queued, postponed to the end of quiet hours, or being retried.
    pending: int = 0


def broadcast(
    template: str, recipients: Iterable[Recipient | Mapping[str, Any]],
    context: BaseModel | Mapping[str, Any], *, key: str, description: str | None = None,
) -> Broadcast:  # fmt: skip
    """Send ``template`` with ``context`` to every recipient, once each, as one batch.

    Raises:
        InvalidPayload: a recipient that does not validate (named by its position), or the
            template's own refusal (unknown template, a missing variable); nothing is sent.
    """
    chosen: dict[str, Recipient] = {}
    for n, value in enumerate(recipients):
        try:
            who = Recipient.of(value)
        except InvalidPayload as exc:
            raise InvalidPayload(f"recipients[{n}]: {exc}") from None
        chosen.setdefault(who.user_id, who)  # the same person twice is sent to once
    if not chosen:
        raise InvalidPayload("recipients: none given; a broadcast needs at least one")
    get_template(template).check(context)  # a bad variable refuses the broadcast before any send
    done = broadcast_done.message(BroadcastDone(key=key, template=template))
    with batch(on_complete=done, description=description or f"broadcast {template} ({key})") as made:
        for who in chosen.values():
            send(template, who, context, key=f"{key}:{who.user_id}")
    return Broadcast(key=key, batch_id=made.id, recipients=len(chosen))


def broadcast_summary(key: str) -> BroadcastSummary:
    """Count a broadcast's channel messages in the delivery log by outcome."""
    t: Any = NotificationRecord.__table__  # type: ignore[attr-defined]
    # Every key under notif:<key>: (<key>:<user_id>:<channel>), as a range the primary key serves
    low, high = f"notif:{key}:", f"notif:{key};"
    query = (
        select(t.c.status, t.c.reason, func.count()).where(t.c.key >= low, t.c.key < high)
        .group_by(t.c.status, t.c.reason)
    )  # fmt: skip
    summary = BroadcastSummary(key=key)
    skipped: Counter[str] = Counter()
    with db.read() as conn:
        for status, reason, count in conn.execute(query):
            if status == "sent":
                summary.sent += count
            elif status == "skipped":
                skipped[reason or "skipped"] += count
            elif status == "dead":
                summary.failed += count
            else:
                summary.pending += count
    summary.skipped = dict(skipped)
    return summary


def announce(payload: BroadcastDone) -> None:
    """A broadcast's batch is complete: log and publish its summary."""
    summary = broadcast_summary(payload.key)
    logger.info("broadcast %s (%s): %d sent, %d skipped, %d failed, %d pending", payload.key,
                payload.template, summary.sent, sum(summary.skipped.values()), summary.failed,
                summary.pending)  # fmt: skip
    events.publish("notification.broadcast.completed", summary, key=f"broadcast:{payload.key}")
