"""outbox trace: the trace context of the transaction that deferred each row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Adds ``bgjobs_outbox.trace`` (nullable, up to 1000 characters): with tracing on, the W3C trace
context current when the row was deferred, so its message continues that trace when relayed.

Locks (PostgreSQL): ``ADD COLUMN`` of a nullable column without a default: a brief ACCESS
EXCLUSIVE lock, no table rewrite. SQLite: ``ALTER TABLE ADD COLUMN``, no copy.
Reversible: yes; a downgrade drops the column (rows relayed after it start new traces).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bgjobs_outbox", sa.Column("trace", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bgjobs_outbox") as batch:
        batch.drop_column("trace")
