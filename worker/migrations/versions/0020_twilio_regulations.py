"""twilio_regulations: Twilio's Regulations as last fetched, per country, number type and
end-user type (a bundle needed, the address requirement), with when and whether a purchase
has since contradicted them; task_leases: one holder at a time of a periodic pass

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "twilio_regulations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("number_type", sa.String(length=16), nullable=False),
        sa.Column("end_user_type", sa.String(length=16), nullable=False),
        sa.Column("bundle", sa.Boolean(), nullable=False),
        sa.Column("address", sa.String(length=8), nullable=False),
        sa.Column("regulation_sid", sa.String(length=34), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(
            "address IN ('none', 'any', 'local', 'foreign')",
            name=op.f("ck_twilio_regulations_address_requirement"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twilio_regulations")),
        sa.UniqueConstraint(
            "country", "number_type", "end_user_type", name="uq_twilio_regulations_entry"
        ),
    )
    op.create_table(
        "task_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_task_leases")),
    )


def downgrade() -> None:
    op.drop_table("task_leases")
    op.drop_table("twilio_regulations")
