"""baseline: the schema before bgjobs shipped migrations

Revision ID: 0001
Revises:
Create Date: 2026-11-27

The 17 ``bgjobs_*`` tables as ``create_all`` made them up to bgjobs 0.1 (SQLite and PostgreSQL).
They are written out here as a frozen ``MetaData``, not read from the models: this revision must
stay what it was when later revisions change the models. ``bgjobs db upgrade`` also compares an
unversioned database (created by ``create_all``) with it before adopting that database.

Locks (PostgreSQL): none on existing tables; it only creates tables and their indexes.
Reversible: yes; a downgrade drops every bgjobs table and its rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: The baseline schema. Never edit it: change the schema in a new revision.
BASELINE = sa.MetaData()

sa.Table(
    'bgjobs_balance_states', BASELINE,
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('currency'),
)

sa.Table(
    'bgjobs_charges', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.String(length=200), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('on_success_event', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.Column('transaction_id', sa.String(length=200), nullable=True),
    sa.Column('first_failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key'),
    sa.Index('ix_bgjobs_charges_customer_id', 'customer_id'),
    sa.Index('ix_bgjobs_charges_status', 'status'),
)

sa.Table(
    'bgjobs_commission_rates', BASELINE,
    sa.Column('vendor_id', sa.String(length=200), nullable=False),
    sa.Column('rate', sa.String(length=20), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('vendor_id'),
)

sa.Table(
    'bgjobs_exports', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=True),
    sa.Column('dataset', sa.String(length=100), nullable=False),
    sa.Column('fmt', sa.String(length=8), nullable=False),
    sa.Column('gzip', sa.Boolean(), nullable=False),
    sa.Column('period', sa.String(length=100), nullable=True),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('requested_by', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('storage_key', sa.String(length=1000), nullable=False),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key'),
    sa.Index('ix_bgjobs_exports_created_at', 'created_at'),
    sa.Index('ix_bgjobs_exports_status', 'status'),
)

sa.Table(
    'bgjobs_idempotency', BASELINE,
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('result', sa.String(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key'),
    sa.Index('ix_bgjobs_idempotency_created_at', 'created_at'),
    sa.Index('ix_bgjobs_idempotency_scope', 'scope'),
)

sa.Table(
    'bgjobs_ledger_entries', BASELINE,
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vendor_id', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source_id', sa.String(length=200), nullable=False),
    sa.Column('gross_minor', sa.BigInteger(), nullable=False),
    sa.Column('vendor_minor', sa.BigInteger(), nullable=False),
    sa.Column('platform_minor', sa.BigInteger(), nullable=False),
    sa.Column('rate', sa.String(length=20), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payout_id', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_id', 'kind'),
    sa.Index('ix_bgjobs_ledger_entries_vendor_id', 'vendor_id'),
    sa.Index('ix_bgjobs_ledger_unpaid', 'payout_id', 'vendor_id', 'currency'),
)

sa.Table(
    'bgjobs_notification_marks', BASELINE,
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key', sa.String(length=240), nullable=True),
    sa.PrimaryKeyConstraint('name'),
)

sa.Table(
    'bgjobs_notifications', BASELINE,
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('notification_id', sa.String(length=64), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=100), nullable=False),
    sa.Column('recipient_ref', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.String(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('possible_duplicate', sa.Boolean(), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key'),
    sa.Index('ix_bgjobs_notifications_created_at', 'created_at'),
    sa.Index('ix_bgjobs_notifications_notification_id', 'notification_id'),
    sa.Index('ix_bgjobs_notifications_status', 'status'),
    sa.Index('ix_bgjobs_notifications_user_id', 'user_id'),
)

sa.Table(
    'bgjobs_outbox', BASELINE,
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('payload', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.Index('ix_bgjobs_outbox_sent_at', 'sent_at'),
)

sa.Table(
    'bgjobs_payout_receipts', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('payout_id', sa.String(length=300), nullable=False),
    sa.Column('vendor_id', sa.String(length=200), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('period', sa.String(length=40), nullable=False),
    sa.Column('booking_count', sa.Integer(), nullable=False),
    sa.Column('booking_ids', sa.JSON(), nullable=False),
    sa.Column('transaction_id', sa.String(length=200), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('payout_id'),
    sa.Index('ix_bgjobs_payout_receipts_vendor_id', 'vendor_id'),
)

sa.Table(
    'bgjobs_payout_runs', BASELINE,
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('payouts', sa.Integer(), nullable=False),
    sa.Column('carried', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key'),
)

sa.Table(
    'bgjobs_payouts', BASELINE,
    sa.Column('id', sa.String(length=300), nullable=False),
    sa.Column('run_key', sa.String(length=40), nullable=False),
    sa.Column('vendor_id', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('transaction_id', sa.String(length=200), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_key', 'vendor_id', 'currency'),
    sa.Index('ix_bgjobs_payouts_run_status', 'run_key', 'status'),
)

sa.Table(
    'bgjobs_runs', BASELINE,
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('job', sa.String(length=200), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('counts', sa.String(), nullable=False),
    sa.Column('error', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.Index('ix_bgjobs_runs_job', 'job'),
    sa.Index('ix_bgjobs_runs_started_at', 'started_at'),
)

sa.Table(
    'bgjobs_webhook_attempts', BASELINE,
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.String(length=40), nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint_id', sa.String(length=40), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.Index('ix_bgjobs_webhook_attempts_endpoint_id', 'endpoint_id'),
    sa.Index('ix_bgjobs_webhook_attempts_message_id', 'message_id'),
)

sa.Table(
    'bgjobs_webhook_deliveries', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('message_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id', 'endpoint_id'),
    sa.Index('ix_bgjobs_webhook_deliveries_due', 'status', 'next_attempt_at'),
    sa.Index('ix_bgjobs_webhook_deliveries_endpoint_id', 'endpoint_id'),
)

sa.Table(
    'bgjobs_webhook_endpoints', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=True),
    sa.Column('event_types', sa.JSON(), nullable=False),
    sa.Column('secret', sa.String(length=200), nullable=False),
    sa.Column('previous_secret', sa.String(length=200), nullable=True),
    sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('description', sa.String(length=1000), nullable=True),
    sa.Column('rate_limit', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=1000), nullable=True),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.Index('ix_bgjobs_webhook_endpoints_owner', 'owner'),
)

sa.Table(
    'bgjobs_webhook_messages', BASELINE,
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.Index('ix_bgjobs_webhook_messages_created_at', 'created_at'),
)


def _constraints(table: sa.Table) -> list[sa.Constraint]:
    found: list[sa.Constraint] = [sa.PrimaryKeyConstraint(*(c.name for c in table.primary_key.columns))]
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            found.append(sa.UniqueConstraint(*(c.name for c in constraint.columns), name=constraint.name))
    return found


def upgrade() -> None:
    for table in BASELINE.sorted_tables:
        op.create_table(table.name, *(c._copy() for c in table.columns), *_constraints(table))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            op.create_index(str(index.name), table.name, [c.name for c in index.columns], unique=index.unique)


def downgrade() -> None:
    for table in reversed(BASELINE.sorted_tables):
        op.drop_table(table.name)
