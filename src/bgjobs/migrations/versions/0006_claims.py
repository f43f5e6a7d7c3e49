"""claims: one way to take a unit of work once (bgjobs.claims)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Adds ``claimed_by`` (the token of the worker holding the row, nullable, 32 characters) to
``bgjobs_notifications``, ``bgjobs_webhook_deliveries``, ``bgjobs_payouts`` and
``bgjobs_exports``, and to the last two the ``lease_until`` (nullable) the first two have;
``bgjobs_payouts`` also gets ``attempts`` (the claims taken, 0 for existing rows). A payout's
claim was a lease in the coordination store, an export's a status with no lease at all; a row
that was being worked on during the upgrade has no claim, so its next job takes it.

Locks (PostgreSQL): ``ADD COLUMN`` of nullable columns and of one with a constant default: brief
ACCESS EXCLUSIVE locks, no table rewrite. SQLite: ``ALTER TABLE ADD COLUMN``, no copy.
Reversible: yes; a downgrade drops the columns (workers of the release before it do not read them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("bgjobs_notifications", "bgjobs_webhook_deliveries", "bgjobs_payouts", "bgjobs_exports")
_LEASED = ("bgjobs_payouts", "bgjobs_exports")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("claimed_by", sa.String(length=32), nullable=True))
    for table in _LEASED:
        op.add_column(table, sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bgjobs_payouts", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_by")
            if table in _LEASED:
                batch.drop_column("lease_until")
            if table == "bgjobs_payouts":
                batch.drop_column("attempts")
