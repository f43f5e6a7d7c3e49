"""console audit: the table the operations console writes each action to

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Adds ``bgjobs_console_audit`` (who, when, what, on which resource, how it ended) and its index
on ``at``.

Locks (PostgreSQL): none on existing tables; it only creates a new table and its index.
Reversible: yes; a downgrade drops the audit log and its rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bgjobs_console_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=500), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=2000), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bgjobs_console_audit_at", "bgjobs_console_audit", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bgjobs_console_audit_at", table_name="bgjobs_console_audit")
    op.drop_table("bgjobs_console_audit")
