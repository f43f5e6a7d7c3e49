"""Sample jobs and host hooks for ``bgjobs dev``: real work through the ports on a real worker.

Loaded by the demo worker through ``BGJOBS_JOBS=bgjobs.demo``; nothing here
runs in production workers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import select

from . import db, events, idempotency, wiring
from .jobs import JobContext, job
from .ports import EmailMessage
from .typed import Payload, actor


class Welcome(Payload):
    user_id: int
    email: str


@events.on("user.signed_up")
@actor(queue="notifications")
def demo_welcome(payload: Welcome) -> None:
    """Email once per user, guarded by an idempotency record."""
    key = f"demo:welcome:{payload.user_id}"
    with db.session() as session:
        if not idempotency.claim(session, key, scope="demo"):
            return
        wiring.mailer().send(
            message=EmailMessage(
                to=(payload.email,), subject="Welcome to bgjobs", text="Hello!", idempotency_key=key
            )
        )


@job("demo.report")
def demo_report(ctx: JobContext) -> dict[str, int]:
    """A batch job the scheduler fires every few seconds: counts the welcome emails."""
    record = idempotency.IdempotencyRecord
    with db.session() as s:
        welcomed = s.exec(select(func.count()).select_from(record).where(record.scope == "demo")).one()
    return {"welcome_emails": int(welcomed)}


def vendor_contact(*, vendor_id: str) -> dict[str, Any]:
    """Where payout receipts go (``BGJOBS_PAYOUTS__VENDOR_CONTACT=bgjobs.demo:vendor_contact``)."""
    return {"user_id": vendor_id, "email": f"{vendor_id}@vendors.example.com"}
