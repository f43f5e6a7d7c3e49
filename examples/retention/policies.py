"""Retention for a booking platform: the four policies the hand-written maintenance jobs had.

Import this module in the worker (``BGJOBS_JOBS='["examples.retention.policies"]'``) and the daily
``cleanup.daily`` run applies them in batches, next to bgjobs's own defaults. Test data goes in
dependency order (payments, then bookings, then users): ``order`` decides.

    bgjobs cleanup run --dry-run     # what would go
    bgjobs cleanup run               # do it now
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from bgjobs.cleanup import register_policy


class User(SQLModel, table=True):
    __tablename__ = "app_users"

    id: int | None = Field(default=None, primary_key=True)
    email: str
    is_test: bool = False
    created_at: datetime


class Booking(SQLModel, table=True):
    __tablename__ = "app_bookings"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_users.id")
    status: str
    is_test: bool = False
    completed_at: datetime


class Payment(SQLModel, table=True):
    __tablename__ = "app_payments"

    id: int | None = Field(default=None, primary_key=True)
    booking_id: int = Field(foreign_key="app_bookings.id")
    is_test: bool = False
    created_at: datetime


class Session(SQLModel, table=True):
    __tablename__ = "app_sessions"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime


class VerificationCode(SQLModel, table=True):
    __tablename__ = "app_verification_codes"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime


def register() -> None:
    """Declare the policies (done at import; call again after ``bgjobs.cleanup.reset()``)."""
    # Completed bookings older than a year move to app_bookings_archive (same columns, created if missing).
    register_policy("bookings.completed", Booking, column="completed_at", older_than="365d", action="archive",
                    where={"status": "completed"}, order=50)  # fmt: skip
    # Sessions and verification codes older than 30 days are deleted.
    register_policy("sessions", Session, column="created_at", older_than="30d")
    register_policy("verification_codes", VerificationCode, column="created_at", older_than="30d")
    # Test data older than a day, children first.
    register_policy(
        "test.payments", Payment, column="created_at", older_than="1d", where={"is_test": True}, order=10
    )
    register_policy(
        "test.bookings", Booking, column="completed_at", older_than="1d", where={"is_test": True}, order=20
    )
    register_policy(
        "test.users", User, column="created_at", older_than="1d", where={"is_test": True}, order=30
    )


register()
