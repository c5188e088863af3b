"""credit_ledger, events, webhook_deliveries: no foreign key to accounts

Every activation inserts two ledger rows, an event and its delivery, each for the account
whose balance the same transaction updates last. PostgreSQL checks such a foreign key by
locking the referenced row (`FOR KEY SHARE`), so every activation of an account locked the
account's row and, with others in flight, made a new MultiXact of all its lockers, and the
balance's update then made another: per phone job, six tuple-lock and three MultiXact WAL
records (pg_waldump), for a check that cannot fail. Accounts are never deleted, and these rows
take their account_id from the contact's row (whose own key to accounts stays) or from the
request's authenticated account.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("credit_ledger", "events", "webhook_deliveries")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_account_id_accounts", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_account_id_accounts", "accounts", ["account_id"], ["id"]
            )
