"""The examples run as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgjobs import InvalidPayload
from bgjobs.settings import Settings
from bgjobs.testing import stub_jobs
from examples.quickstart import app


def test_quickstart_sends_one_welcome_per_user_even_when_sent_twice() -> None:
    with stub_jobs(settings=Settings(broker_url="stub://")) as jobs:
        app.sign_up(1, "ann@example.com")
        app.sign_up(1, "ann@example.com")
        jobs.drain()
    assert [m.to for m in jobs.mailer.sent] == [("ann@example.com",)]


def test_quickstart_refuses_a_bad_email_at_the_sender() -> None:
    with stub_jobs(settings=Settings(broker_url="stub://")), pytest.raises(InvalidPayload, match="email"):
        app.sign_up(1, "not an email")


def test_the_financial_export_example_exports_a_month_of_three_tables(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlmodel import SQLModel

    from bgjobs import db, exports
    from examples.financial_export.app import CreditNote, Invoice, Transaction

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = db.engine_for(url)
    db.upgrade(engine)
    SQLModel.metadata.create_all(
        engine, tables=[Invoice.__table__, Transaction.__table__, CreditNote.__table__]
    )  # type: ignore[attr-defined]
    june = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
    with db.session(engine) as s:
        s.add(Invoice(customer="acme", total=Decimal("120.00"), currency="EUR", issued_at=june))
        s.add(
            Invoice(
                customer="acme",
                total=Decimal("99.00"),
                currency="EUR",
                issued_at=datetime(2025, 7, 1, tzinfo=UTC),
            )
        )
        s.add(
            Transaction(
                customer="acme", amount=Decimal("120.00"), currency="EUR", settled_at=june.replace(hour=10)
            )
        )
        s.add(
            CreditNote(
                customer="acme", amount=Decimal("20.00"), currency="EUR", issued_at=june.replace(hour=11)
            )
        )

    with stub_jobs(settings=Settings(broker_url="stub://", database_url=url)) as jobs:
        export_id = exports.request("financial", fmt="csv", period="2025-06")
        jobs.drain()
        info = exports.get(export_id)
        text = jobs.storage.objects[info.storage_key].decode()
    assert info.status == "done" and info.rows == 3
    lines = text.splitlines()
    assert lines[0] == "kind,id,customer,amount,currency,at"
    assert [line.split(",")[0] for line in lines[1:]] == ["invoice", "transaction", "credit_note"]
    assert lines[3].split(",")[3] == "-20.00"


def test_the_retention_example_deletes_test_data_in_dependency_order(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text
    from sqlmodel import SQLModel

    from bgjobs import cleanup, db
    from examples.retention import policies as example

    example.register()  # its policies register at import; each test starts with none
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with stub_jobs(settings=Settings(broker_url="stub://", database_url=url)):
        engine = db.get_engine()
        db.upgrade(engine)
        tables = [m.__table__ for m in (example.User, example.Booking, example.Payment, example.Session,  # type: ignore[attr-defined]
                                        example.VerificationCode)]  # fmt: skip
        SQLModel.metadata.create_all(engine, tables=tables)
        old = datetime.now(UTC) - timedelta(days=400)
        with db.session(engine) as s:
            s.add(example.User(id=1, email="qa@example.com", is_test=True, created_at=old))
            s.add(example.User(id=2, email="ann@example.com", created_at=old))
        with db.session(engine) as s:
            s.add(example.Booking(id=1, user_id=1, status="completed", is_test=True, completed_at=old))
            s.add(example.Booking(id=2, user_id=2, status="completed", completed_at=old))
        with db.session(engine) as s:
            s.add(example.Payment(id=1, booking_id=1, is_test=True, created_at=old))
            s.add(example.Session(id=1, created_at=old))
        # foreign keys are enforced (PRAGMA foreign_keys=ON): parents first would fail
        order = [p.name for p in cleanup.policies() if not p.name.startswith("bgjobs.")]
        assert order.index("test.payments") < order.index("test.bookings") < order.index("test.users")
        report = cleanup.run_cleanup()
        with db.read(engine) as conn:
            users = [r[0] for r in conn.execute(text("SELECT id FROM app_users"))]
            archived = [r[0] for r in conn.execute(text("SELECT id FROM app_bookings_archive"))]
        assert report["status"] == "done"
        assert users == [2] and archived == [2]
        assert report["tasks"]["sessions"]["rows"] == 1
    cleanup.reset()
