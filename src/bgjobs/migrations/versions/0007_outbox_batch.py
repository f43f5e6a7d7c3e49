"""outbox batch: the batch a deferred job joins when its row is relayed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Adds ``bgjobs_outbox.batch`` (nullable, up to 64 characters): for a job deferred inside a
``bgjobs.batch()`` block, the batch's id and the job's index in it (``b_...:12``), which the
relay puts on the job's message so the batch counts it.

Locks (PostgreSQL): ``ADD COLUMN`` of a nullable column without a default: a brief ACCESS
EXCLUSIVE lock, no table rewrite. SQLite: ``ALTER TABLE ADD COLUMN``, no copy.
Reversible: yes; a downgrade drops the column (rows not relayed yet then join no batch, which
waits for them until it is cancelled).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bgjobs_outbox", sa.Column("batch", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bgjobs_outbox") as batch:
        batch.drop_column("batch")
