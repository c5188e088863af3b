"""regulations_sold: whether Twilio sells a country's numbers of the entry's type at all (its
AvailablePhoneNumberCountry resource lists that number list), so that the cache, not only the
built-in table, says which types a country has

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "twilio_regulations",
        sa.Column("sold", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("twilio_regulations") as batch:
        batch.drop_column("sold")
