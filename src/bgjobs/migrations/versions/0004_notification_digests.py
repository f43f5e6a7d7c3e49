"""notification digests: windows that collect a recipient's messages into one

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Adds ``bgjobs_notification_digests`` (one row per window: recipient, digest template, when it
opened and closes, ``open_slot`` unique while open) and ``bgjobs_notification_digest_items``
(one row per collected message, keyed by its business key).

Locks (PostgreSQL): none on existing tables; it only creates two tables and their indexes.
Reversible: yes; a downgrade drops both tables and what they hold (open windows are lost).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bgjobs_notification_digests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("open_slot", sa.String(length=210), nullable=True),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_slot"),
    )
    op.create_index("ix_bgjobs_notification_digests_user_id", "bgjobs_notification_digests", ["user_id"])
    op.create_index("ix_bgjobs_notification_digests_opened_at", "bgjobs_notification_digests", ["opened_at"])
    op.create_table(
        "bgjobs_notification_digest_items",
        sa.Column("key", sa.String(length=240), nullable=False),
        sa.Column("digest_id", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("context", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        "ix_bgjobs_notification_digest_items_digest_id", "bgjobs_notification_digest_items", ["digest_id"]
    )


def downgrade() -> None:
    op.drop_index(
        "ix_bgjobs_notification_digest_items_digest_id", table_name="bgjobs_notification_digest_items"
    )
    op.drop_table("bgjobs_notification_digest_items")
    op.drop_index("ix_bgjobs_notification_digests_opened_at", table_name="bgjobs_notification_digests")
    op.drop_index("ix_bgjobs_notification_digests_user_id", table_name="bgjobs_notification_digests")
    op.drop_table("bgjobs_notification_digests")
