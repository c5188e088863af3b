"""whatsapp_pool: the shared pool of WhatsApp senders and the routes from users to
assistants on them; a pool sender's number is exempt from the one-live-use-of-an-address index

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BILLED = sa.text("status IN ('active', 'grace_period', 'deleting')")
LIVE_ADDRESS = sa.text(
    "status IN ('active', 'grace_period', 'deleting') AND pool_sender_id IS NULL"
)
GROWING = sa.text("status = 'growing'")


def upgrade() -> None:
    op.create_table(
        "pool_senders",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phone_number", sa.String(length=32), nullable=True),
        sa.Column("number_sid", sa.String(length=40), nullable=True),
        sa.Column("sender_sid", sa.String(length=40), nullable=True),
        sa.Column("waba_id", sa.String(length=40), nullable=True),
        sa.Column("grower_contact_id", sa.String(length=40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_senders")),
    )
    op.create_index(
        "uq_pool_senders_growing",
        "pool_senders",
        ["status"],
        unique=True,
        sqlite_where=GROWING,
        postgresql_where=GROWING,
    )
    op.create_table(
        "pool_routes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("pool_sender_id", BIG_ID, nullable=False),
        sa.Column("user_whatsapp_number", sa.String(length=32), nullable=True),
        sa.Column("assistant_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_sender_id"],
            ["pool_senders.id"],
            name=op.f("fk_pool_routes_pool_sender_id_pool_senders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_routes")),
        sa.UniqueConstraint(
            "pool_sender_id", "user_whatsapp_number", name="uq_pool_routes_sender_user"
        ),
        sa.UniqueConstraint("contact_id", name="uq_pool_routes_contact_id"),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("whatsapp_sender", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("pool_sender_id", sa.BigInteger(), nullable=True))
        batch_op.drop_index(
            "uq_contacts_live_address", sqlite_where=BILLED, postgresql_where=BILLED
        )
        batch_op.create_index(
            "uq_contacts_live_address",
            ["address"],
            unique=True,
            sqlite_where=LIVE_ADDRESS,
            postgresql_where=LIVE_ADDRESS,
        )


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_contacts_live_address", sqlite_where=LIVE_ADDRESS, postgresql_where=LIVE_ADDRESS
        )
        batch_op.create_index(
            "uq_contacts_live_address",
            ["address"],
            unique=True,
            sqlite_where=BILLED,
            postgresql_where=BILLED,
        )
        batch_op.drop_column("pool_sender_id")
        batch_op.drop_column("whatsapp_sender")
    op.drop_table("pool_routes")
    op.drop_index("uq_pool_senders_growing", table_name="pool_senders")
    op.drop_table("pool_senders")
