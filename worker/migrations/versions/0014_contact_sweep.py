"""contacts.swept_status: the status in which the sweep last listed the contact's tag

The sweep (worker/runtime/sweep.py) lists once more, at the providers, the tag of each
contact that ended (`failed`, `deleted`) or went `active`, and releases what it should not
hold: a number bought by a runner that was frozen past its lease, say. A contact is due while
its status is one of those and differs from the status it was last swept in; the partial
index holds only those, keyed by id (already indexed): no column that the hot path updates
is added to an index, so its updates stay HOT. Contacts that ended before this revision count
as swept.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WHERE = sa.text(
    "status IN ('active', 'failed', 'deleted') AND (swept_status IS NULL OR swept_status <> status)"
)


def upgrade() -> None:
    op.add_column("contacts", sa.Column("swept_status", sa.String(16), nullable=True))
    op.execute(
        "UPDATE contacts SET swept_status = status WHERE status IN ('active', 'failed', 'deleted')"
    )
    op.create_index(
        "ix_contacts_unswept", "contacts", ["id"], postgresql_where=WHERE, sqlite_where=WHERE
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_unswept", table_name="contacts")
    op.drop_column("contacts", "swept_status")
