"""credit_ledger: drop ix_credit_ledger_account_id, which (account_id, id) already covers

Every ledger row (two per activation) paid for an entry in both; every query by account
(the ledger page, the billing pass) is served by the composite index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_ledger_account_id")


def downgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_credit_ledger_account_id", ["account_id"], unique=False)
