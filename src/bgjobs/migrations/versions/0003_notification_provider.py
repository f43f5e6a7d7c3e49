"""notification provider: which provider took each channel message

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Adds ``bgjobs_notifications.provider`` (nullable, up to 64 characters): the provider that took
the message when several are wired for its channel (provider failover), or, while the message is
not sent, the one it is pinned to because that provider may have taken it already.

Locks (PostgreSQL): ``ADD COLUMN`` of a nullable column without a default: a brief ACCESS
EXCLUSIVE lock, no table rewrite. SQLite: ``ALTER TABLE ADD COLUMN``, no copy.
Reversible: yes; a downgrade drops the column and what it recorded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bgjobs_notifications", sa.Column("provider", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bgjobs_notifications") as batch:
        batch.drop_column("provider")
