"""A travel marketplace's web app that hands its background work to bgjobs.

Request handlers do three kinds of enqueueing:

* work born in a database transaction (a booking and its consequences) goes through the
  **outbox**: the booking row, its ``booking.created`` event and the vendor's earning commit
  together, or not at all; the worker's relay sends them once committed;
* work with no transaction of its own (an export) is sent directly;
* bad input is refused in the request, with the field named, before anything is written.

The operations console is mounted at ``/bgjobs`` behind the app's own login (see ``create_app``),
and the tenant portal at ``/portal``: a merchant's account page links to it with a signed link, where
they manage their webhook endpoints and notification preferences (``BGJOBS_PORTAL__SECRET`` set).

With ``BGJOBS_TRACING__ENABLED=true`` (``pip install 'bgjobs[otel]'``), each request is a span and
the jobs it queues continue its trace in the worker (docs/observability.md).

Run it (with a worker beside it, on the same settings):

    pip install -r examples/host_app/requirements.txt
    BGJOBS_BROKER_URL=redis://localhost:6379/0 flask --app examples.host_app.app:create_app run
    BGJOBS_JOBS='["examples.host_app.app"]' dramatiq bgjobs.actors
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from flask import Flask, jsonify, render_template_string, request
from pydantic import ValidationError
from sqlalchemy import Numeric
from sqlmodel import Field, SQLModel, select

import bgjobs
from bgjobs import db, exports, outbox, payouts, runtime
from bgjobs.exports import register_dataset
from bgjobs.money import Money


class Booking(SQLModel, table=True):
    """The host's own table; bgjobs never writes it."""

    __tablename__ = "host_bookings"

    id: str = Field(primary_key=True)
    vendor_id: str
    email: str
    phone: str | None = None
    trip_date: date
    total: Decimal = Field(sa_type=Numeric(12, 2))
    currency: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class NewBooking(bgjobs.Payload):
    """The request body of ``POST /bookings``; money arrives as a string, never a float."""

    vendor_id: str
    email: str
    phone: str | None = None
    trip_date: date
    total: Money


def _bookings(*, period: str | None, filters: Mapping[str, Any]) -> Any:
    """The ``host.bookings`` dataset: one select, streamed by the export worker."""
    query: Any = select(Booking.id, Booking.vendor_id, Booking.trip_date, Booking.total, Booking.currency)  # type: ignore[call-overload]
    if filters.get("vendor_id"):
        query = query.where(Booking.vendor_id == filters["vendor_id"])
    return query.order_by(Booking.id)


register_dataset("host.bookings", _bookings, columns=["id", "vendor_id", "trip_date", "total", "currency"],
                 filters=["vendor_id"], description="the marketplace's bookings")  # fmt: skip


def _refuse(error: Exception) -> tuple[Any, int]:
    if isinstance(error, ValidationError):
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return jsonify(error=fields), 422
    return jsonify(error=str(error)), 422


def create_app() -> Flask:
    app = Flask(__name__)
    app.register_error_handler(ValidationError, _refuse)
    app.register_error_handler(bgjobs.InvalidPayload, _refuse)

    @app.post("/bookings")
    def create_booking() -> tuple[Any, int]:
        new = NewBooking.model_validate(request.get_json(force=True))
        booking_id = f"bk_{uuid.uuid4().hex[:12]}"
        with db.session() as s:  # one transaction: the row, the event and the earning, or nothing
            s.add(Booking(id=booking_id, vendor_id=new.vendor_id, email=new.email, phone=new.phone,
                          trip_date=new.trip_date, total=new.total.amount,
                          currency=new.total.currency))  # fmt: skip
            outbox.defer(s, "booking.created", {
                "booking_id": booking_id, "trip_date": new.trip_date.isoformat(),
                "total": new.total.model_dump(mode="json"),
                "recipient": {"user_id": new.email, "email": new.email, "phone": new.phone},
            })  # fmt: skip
            outbox.defer(s, payouts.record_entry, payouts.LedgerWrite(
                kind="earning", vendor_id=new.vendor_id, amount=new.total.amount, currency=new.total.currency,
                source_id=booking_id, occurred_at=datetime.now(UTC)))  # fmt: skip
        return jsonify(booking_id=booking_id), 201

    @app.post("/exports")
    def request_export() -> tuple[Any, int]:
        body = request.get_json(force=True)
        export_id = exports.request("host.bookings", fmt=body.get("format", "csv"),
                                    filters=body.get("filters"), key=body.get("key"))  # fmt: skip
        return jsonify(export_id=export_id), 202

    @app.get("/exports/<export_id>")
    def show_export(export_id: str) -> tuple[Any, int]:
        try:
            info = exports.get(export_id)
        except bgjobs.InvalidPayload as exc:
            return jsonify(error=str(exc)), 404
        return jsonify(info.model_dump(mode="json")), 200

    # The operations console under /bgjobs, behind the app's own login (here: the user name a
    # single-sign-on proxy puts in X-Staff-User). Staff may look; only admins may act.
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from bgjobs.console import wsgi_app

    def authorize(request: Any, action: str, resource: str) -> bool | str:
        user = request.headers.get("x-staff-user")
        if not user or (action != "read" and user not in ADMINS):
            return False
        return str(user)  # allowed, and named in the console's audit log

    # The merchant's own account page links to the tenant portal, mounted at /portal: the link is
    # signed for this merchant (and, for notification preferences, this person) and lasts an hour.
    from bgjobs import portal

    @app.get("/account")
    def account() -> tuple[Any, int]:
        merchant, user = request.headers.get("x-merchant"), request.headers.get("x-user")
        if not merchant or not user:
            return "sign in first", 401
        link = portal.link(merchant, recipient=user, ttl="1h", base_url=request.host_url + "portal")
        return render_template_string(ACCOUNT, merchant=merchant, link=link), 200

    mounted = {"/bgjobs": wsgi_app(authorize=authorize), "/portal": portal.wsgi_app()}
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, mounted)  # type: ignore[method-assign]
    if runtime.current().settings.tracing.enabled:
        _trace_requests(app)
    return app


def _trace_requests(app: Flask) -> None:
    """A server span per request, continuing the caller's ``traceparent``, current while the
    handler runs: bgjobs's sends (and the outbox rows it defers) become its children, and the trace
    goes on into the worker. A real app would use ``opentelemetry-instrumentation-flask``, which
    does this and more; this is the whole idea in a few lines (docs/observability.md)."""
    from flask import g
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("examples.host_app")

    @app.before_request
    def _start() -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        span = tracer.start_span(f"{request.method} {request.path}", context=extract(headers),
                                 kind=SpanKind.SERVER)  # fmt: skip
        g.trace = (span, context.attach(trace.set_span_in_context(span)))

    @app.teardown_request
    def _end(error: BaseException | None) -> None:
        span, token = g.pop("trace", (None, None))
        if span is not None:
            span.end()
            context.detach(token)


ACCOUNT = """<!doctype html><title>Your account</title><h1>{{ merchant }}</h1>
<p><a href="{{ link }}">Webhooks and notification settings</a></p>"""

#: Staff who may act in the console (requeue, pause, trigger); every staff user may look.
ADMINS = frozenset({"ana"})
