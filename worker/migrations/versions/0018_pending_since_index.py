"""contacts: a partial index of the pending contacts by `updated_at`, for the oldest pending
contact's age that every metrics scrape reads (`provisioner_oldest_pending_contact_age_seconds`)

Only pending contacts have an entry: a contact pays one insertion at acceptance (or at an
operator's retry) and none once a runner has it. `status` leads the columns so that SQLite's
planner, which wants the equality in the index, takes it for the min() too.

Revision ID: 0018
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0014"
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_contacts_pending_since",
        "contacts",
        ["status", "updated_at"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_pending_since", table_name="contacts")
