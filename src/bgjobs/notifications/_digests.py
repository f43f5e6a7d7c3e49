"""Digests: a recipient's messages within a window become one, sent once when the window closes.

Everything is in the database and the queue, nothing in a worker's memory:

1. ``collect`` (from :func:`~bgjobs.notifications.send`, for a template or category with a rule in
   ``BGJOBS_NOTIFICATIONS__DIGESTS``), in one transaction: find the recipient's open window for the
   digest (locked), or open one and send its ``close`` task delayed by the window; add the message
   as an item keyed by its business key (sent again, it adds nothing); at ``max_items`` the close
   task is sent at once. The close task is sent before the window's row commits, so a crash between
   the two leaves a task that finds no window (and does nothing), never a window nobody closes.
2. ``close`` (the task's handler calls it), in one transaction: mark the window closed (its
   ``open_slot`` freed, so the next message opens a new one) and read its items; the handler then
   sends the digest template with the key ``digest:<id>``. A worker killed after the commit has its
   task redelivered: the window is closed already, the same digest is sent with the same key, and
   the delivery log sends it once.

Quiet hours and consent apply to the digest as to any message: it is delivered as one.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import db, runtime
from ..clock import now as _now
from ..sections import DigestRule, NotificationSettings
from ._models import Channel, Digest, DigestClose, DigestItem, Recipient
from ._templates import Template, render
from .tasks import digest_close

__all__ = ["Closed", "close", "collect", "open_windows", "rule_for"]

logger = logging.getLogger("bgjobs.notifications")


#: A window found open this long after it should have closed has lost its close task (a broker
#: that lost it); the next message into it sends another.
OVERDUE = timedelta(minutes=1)


def rule_for(settings: NotificationSettings, template: Template) -> tuple[str, DigestRule] | None:
    """The digest ``template`` is collected into (its name and rule), or None to send it now.

    A template's own rule wins over its category's; a digest template is never itself collected.
    """
    rules = settings.digests
    if not rules or template.name in {r.template for r in rules.values()}:
        return None
    for name in (template.name, str(template.category)):
        if name in rules:
            return name, rules[name]
    return None


def _summary(template: Template, variables: dict[str, Any], who: Recipient, n: NotificationSettings) -> str:
    # The SMS text is written to stand alone in one line; an email-only template has its subject.
    channel = Channel.SMS if Channel.SMS in template.channels else template.channels[0]
    content = render(template, channel, variables, who, host_dir=n.templates_dir,
                     default_locale=n.default_locale)  # fmt: skip
    line = content.subject if channel is Channel.EMAIL and content.subject else content.text
    return " ".join(line.split())[:500]


def collect(
    name: str, rule: DigestRule, template: Template, who: Recipient, variables: dict[str, Any], key: str
) -> str:
    """Add one message to the recipient's open window of digest ``name``; returns the window's id."""
    settings = runtime.current().settings.notifications
    summary = _summary(template, variables, who, settings)
    context = json.dumps(to_jsonable_python(variables))
    slot = f"{name}:{who.user_id}"[:210]
    for attempt in range(2):  # a second try when another process opened the window meanwhile
        try:
            return _collect(name, rule, template, who, key, summary, context, slot)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _collect(
    name: str, rule: DigestRule, template: Template, who: Recipient, key: str, summary: str, context: str,
    slot: str,
) -> str:  # fmt: skip
    now = _now()
    table: Any = Digest.__table__  # type: ignore[attr-defined]
    close_now = False
    with db.session() as conn:
        found = conn.execute(
            select(table.c.id, table.c.closes_at).where(table.c.open_slot == slot).with_for_update()
        ).first()
        if found is None:
            digest_id = uuid.uuid4().hex
            conn.execute(table.insert().values(
                id=digest_id, name=name, user_id=who.user_id, open_slot=slot, template=rule.template,
                recipient=who.model_dump_json(), item_count=0, opened_at=now,
                closes_at=now + timedelta(seconds=rule.window_s),
            ))  # fmt: skip
            digest_close.send(DigestClose(digest_id=digest_id), delay=rule.window_s * 1000)
        else:
            digest_id = found.id
            close_now = db.aware(found.closes_at) + OVERDUE < now
        item = {"key": key, "digest_id": digest_id, "template": template.name, "summary": summary,
                "context": context, "created_at": now}  # fmt: skip
        if db.insert_new(conn, DigestItem, item):
            grown = update(table).where(table.c.id == digest_id).values(item_count=table.c.item_count + 1)
            conn.execute(grown)
            count = conn.execute(select(table.c.item_count).where(table.c.id == digest_id)).scalar_one()
            close_now = close_now or count >= rule.max_items
    if close_now:
        digest_close.send(DigestClose(digest_id=digest_id))
    return str(digest_id)


@dataclass(frozen=True)
class Closed:
    """A closed window's digest, to send with ``key``."""

    template: str
    recipient: Recipient
    variables: dict[str, Any]
    key: str


def close(digest_id: str) -> Closed | None:
    """Close the window (if open) and return its digest: again, for a redelivered task, so the
    caller sends it with the same key. None when there is no such window or it holds nothing."""
    table: Any = Digest.__table__  # type: ignore[attr-defined]
    items: Any = DigestItem.__table__  # type: ignore[attr-defined]
    with db.get_engine().begin() as conn:
        found = conn.execute(select(table).where(table.c.id == digest_id).with_for_update()).first()
        if found is None:
            logger.info("digest %s: no such window (its sender died before committing it)", digest_id)
            return None
        if found.closed_at is None:
            conn.execute(update(table).where(table.c.id == digest_id)
                         .values(open_slot=None, closed_at=_now()))  # fmt: skip
        rows = conn.execute(
            select(items).where(items.c.digest_id == digest_id).order_by(items.c.created_at, items.c.key)
        ).all()
    entries = [{"template": r.template, "key": r.key, "summary": r.summary, "context": json.loads(r.context)}
               for r in rows]  # fmt: skip
    if not entries:
        return None
    logger.info("digest %s: %d message(s) for %s, sent as %s", digest_id, len(entries), found.user_id,
                found.template)  # fmt: skip
    return Closed(found.template, Recipient.model_validate_json(found.recipient),
                  {"items": entries, "count": len(entries)}, f"digest:{digest_id}")  # fmt: skip


def open_windows() -> int:
    """How many digest windows are open now."""
    table: Any = Digest.__table__  # type: ignore[attr-defined]
    with db.read() as conn:
        return int(conn.execute(select(func.count()).where(table.c.open_slot.is_not(None))).scalar_one())

