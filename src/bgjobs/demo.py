"""Sample jobs for ``bgjobs dev``: real work through the ports on a real worker.

Loaded by the demo worker through ``BGJOBS_JOBS=bgjobs.demo``; nothing here
runs in production workers.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func
from sqlmodel import select

from . import db, events, idempotency, wiring
from .jobs import JobContext, job
from .money import Money
from .ports import EmailMessage, PayoutRequest
from .typed import Payload, actor


class Welcome(Payload):
    user_id: int
    email: str


class Receipt(Payload):
    vendor_id: str
    amount: Decimal
    currency: str


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


@actor(queue="payouts")
def demo_payout(payload: Receipt) -> None:
    """Pay a vendor with an idempotency key, then store a receipt file."""
    key = f"demo:payout:{payload.vendor_id}"
    money = Money(amount=payload.amount, currency=payload.currency)
    result = wiring.payment().payout(
        request=PayoutRequest(payee_id=payload.vendor_id, amount=money, idempotency_key=key)
    )
    line = f"{payload.vendor_id},{money.amount},{money.currency},{result.transaction_id}\n"
    wiring.storage().put(
        key=f"receipts/{payload.vendor_id}.csv", chunks=[line.encode()], content_type="text/csv"
    )


@job("demo.report")
def demo_report(ctx: JobContext) -> dict[str, int]:
    """A batch job: counts the welcome emails, and leaves a bgjobs_runs row."""
    record = idempotency.IdempotencyRecord
    with db.session() as s:
        welcomed = s.exec(select(func.count()).select_from(record).where(record.scope == "demo")).one()
    return {"welcome_emails": int(welcomed)}
