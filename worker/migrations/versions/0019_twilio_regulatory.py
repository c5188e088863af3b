"""twilio_regulatory: an account's regulatory documents (bundle, address) per country and
number type, as Twilio confirmed them

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "twilio_regulatory",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("number_type", sa.String(length=16), nullable=False),
        sa.Column("bundle_sid", sa.String(length=34), nullable=True),
        sa.Column("address_sid", sa.String(length=34), nullable=True),
        sa.Column("address_country", sa.String(length=2), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_twilio_regulatory_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twilio_regulatory")),
        sa.UniqueConstraint(
            "account_id", "country", "number_type", name="uq_twilio_regulatory_account_type"
        ),
    )


def downgrade() -> None:
    op.drop_table("twilio_regulatory")
