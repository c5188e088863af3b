"""lifecycle: deletion, monthly fees, grace period; one live use of an address

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_LIVE = sa.text("status IN ('pending', 'provisioning', 'active')")
LIVE = sa.text("status IN ('pending', 'provisioning', 'active', 'grace_period', 'deleting')")
BILLED = sa.text("status IN ('active', 'grace_period', 'deleting')")


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("monthly_cost_cents", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("billed_through", sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column("grace_ends_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_reason", sa.String(length=16), nullable=True))
        batch_op.drop_index(
            "uq_contacts_live_per_type", sqlite_where=OLD_LIVE, postgresql_where=OLD_LIVE
        )
        batch_op.create_index(
            "uq_contacts_live_per_type",
            ["assistant_id", "contact_type"],
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        )
        batch_op.create_index(
            "uq_contacts_live_address",
            ["address"],
            unique=True,
            sqlite_where=BILLED,
            postgresql_where=BILLED,
        )
        batch_op.create_index(
            "ix_contacts_billing_due",
            ["billed_through"],
            sqlite_where=BILLED,
            postgresql_where=BILLED,
        )
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("month", sa.String(length=7), nullable=True))
        batch_op.create_index("ix_credit_ledger_account_id_id", ["account_id", "id"])
    # Contacts active before fees existed start owing from the month after this one: the
    # month of the migration is taken as paid (nothing was billed for it under the old terms).
    month = (
        "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')"
        if op.get_bind().dialect.name == "postgresql"
        else "strftime('%Y-%m', 'now')"
    )
    op.execute(f"UPDATE contacts SET billed_through = {month} WHERE status = 'active'")  # noqa: S608


def downgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_ledger_account_id_id")
        batch_op.drop_column("month")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_billing_due", sqlite_where=BILLED, postgresql_where=BILLED)
        batch_op.drop_index(
            "uq_contacts_live_address", sqlite_where=BILLED, postgresql_where=BILLED
        )
        batch_op.drop_index("uq_contacts_live_per_type", sqlite_where=LIVE, postgresql_where=LIVE)
        batch_op.create_index(
            "uq_contacts_live_per_type",
            ["assistant_id", "contact_type"],
            unique=True,
            sqlite_where=OLD_LIVE,
            postgresql_where=OLD_LIVE,
        )
        for name in ("deleted_reason", "deleted_at", "grace_ends_at", "billed_through"):
            batch_op.drop_column(name)
        batch_op.drop_column("monthly_cost_cents")
