"""accounts: the available credits (balance - reserved) never below zero, as a CHECK

Every movement already kept it so by a conditional UPDATE; the constraint makes it the
database's rule too, and lets an activation on PostgreSQL charge the month's fee without a
condition and commit in the same round trip: a fee the credits cannot cover fails the check
and commits nothing (worker/store/credits.py, `settle_and_commit`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = "ck_accounts_available_not_negative"


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f(NAME), "balance_cents >= reserved_cents")


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_="check")
