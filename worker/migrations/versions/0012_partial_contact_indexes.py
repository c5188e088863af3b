"""contacts: the batch and provider-connection indexes hold only the contacts that have one

Most contacts come one by one and through the platform's own providers, so their batch_id and
connection_id are NULL; every query on either column compares it to a value (`=` or `IN`),
which no NULL matches. As full indexes, each of the contact's two updates per activation (the
lease, then active) paid an entry in both; as partial indexes, such a contact has none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = ("batch_id", "connection_id")


def upgrade() -> None:
    for column in COLUMNS:
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(f"ix_contacts_{column}", table_name="contacts")
        op.create_index(
            f"ix_contacts_{column}",
            "contacts",
            [column],
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_contacts_{column}", table_name="contacts")
        op.create_index(f"ix_contacts_{column}", "contacts", [column])
