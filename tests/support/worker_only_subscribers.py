"""Subscribers only the worker loads (``BGJOBS_JOBS``): the test process never imports this module,
as a host app that publishes events need not import the modules that subscribe to them."""

from __future__ import annotations

import os

from bgjobs import db, events, idempotency
from bgjobs.typed import Payload, actor
from tests.support.worker_jobs import Effect


class InvoicePaid(Payload):
    invoice_id: int


events.declare("invoice.paid", InvoicePaid)


@events.on("invoice.paid")
@actor(queue="default")
def record_invoice(payload: InvoicePaid) -> None:
    with db.session() as session:
        if idempotency.claim(session, f"effect:invoice-{payload.invoice_id}", scope="test"):
            session.add(Effect(key=f"invoice-{payload.invoice_id}", pid=os.getpid()))


@events.on("invoice.*")
@actor(queue="default")
def audit_invoice(payload: InvoicePaid) -> None:
    with db.session() as session:
        if idempotency.claim(session, f"effect:audit-{payload.invoice_id}", scope="test"):
            session.add(Effect(key=f"audit-{payload.invoice_id}", pid=os.getpid()))
