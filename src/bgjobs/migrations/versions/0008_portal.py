"""portal: recipients' notification preferences, and revoked portal links

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Adds ``bgjobs_notification_preferences`` (one row per recipient: the category/channel pairs they
turned off, their time zone and quiet hours, their digest choice) and ``bgjobs_portal_revocations``
(per owner, the moment their portal links were revoked).

Locks (PostgreSQL): none on existing tables; it only creates two tables.
Reversible: yes; a downgrade drops both tables: recipients' choices are lost (every category is
then sent again) and revoked links work again until they expire.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bgjobs_notification_preferences",
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("off", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("quiet_start", sa.String(length=5), nullable=True),
        sa.Column("quiet_end", sa.String(length=5), nullable=True),
        sa.Column("digest", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "bgjobs_portal_revocations",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )


def downgrade() -> None:
    op.drop_table("bgjobs_portal_revocations")
    op.drop_table("bgjobs_notification_preferences")
