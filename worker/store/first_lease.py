"""A first run's lease and its new journal in one statement, in autocommit (PostgreSQL).

A phone or WhatsApp contact's first run takes its lease on the task message's hint
(`FirstRun`: its type), before it reads the row and before any provider request. The lease's
UPDATE and the new journal's INSERT (the search journaled done, to be made right after the
lease, and the purchase started: `journal.folded`) are one statement of two data-modifying CTEs: the
journal is written only if the row the UPDATE returns is this contact's first delivery and
not being deleted. Run in autocommit, that is one round trip, where a transaction of the two
statements takes four (BEGIN, the UPDATE, the INSERT, COMMIT). A redelivery, whose journal
exists, gets the lease from the same statement and reads its journal after it.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, select, union_all

from worker.domain.contacts import ContactStatus, ContactType, step_plan
from worker.store import driver
from worker.store.journal import (
    JOURNAL_COLUMNS,
    Ahead,
    folded,
    journal_bind,
    journal_params,
    journal_stmt,
    new_journal,
)
from worker.store.models import ContactStep
from worker.store.pipeline import (
    TAKE_LEASE,
    Lease,
    contact_of,
    journal_lease,
    select_steps,
)

_steps: Table = ContactStep.__table__  # type: ignore[assignment]


@functools.cache
def _statement(rows: int) -> Any:
    lease = TAKE_LEASE.cte("lease")
    first = (
        lease.c.deliveries == 1,
        lease.c.status != ContactStatus.DELETING.value,
        lease.c.contact_type == bindparam("p_type", type_=lease.c.contact_type.type),
    )
    selects = [
        select(*(journal_bind(c, i) for c in JOURNAL_COLUMNS)).select_from(lease).where(*first)
        for i in range(rows)
    ]
    journal = (
        insert(_steps)
        .from_select(list(JOURNAL_COLUMNS), selects[0] if rows == 1 else union_all(*selects))
        .returning(_steps.c.id, _steps.c.name)
        .cte("journal")
    )
    made = select(func.json_object_agg(journal.c.name, journal.c.id)).scalar_subquery()
    return select(*lease.c, made.label("journal_ids"))


def take_first_lease(
    connection: Connection,
    contact_id: str,
    owner: str,
    now: datetime,
    lease_s: float,
    *,
    ahead: Ahead,
    contact_type: ContactType,
) -> Lease | None:
    """`take_lease` with `ahead` in one statement, on a connection in autocommit: the lease
    with its new journal (`started` set) on a first delivery; with the journal read after it
    otherwise; None if the contact is finished, missing or held."""
    values, started = new_journal(contact_id, step_plan(contact_type), ahead, now)
    params = {
        "p_id": contact_id,
        "p_now": now,
        "p_owner": owner,
        "p_expires": now + timedelta(seconds=lease_s),
        "p_type": contact_type.value,
        **journal_params(values),
    }
    taken = driver.rows(connection, _statement(len(values)), params)
    if not taken:
        return None
    row = taken[0]._asdict()
    ids = row.pop("journal_ids")
    contact = contact_of(row)
    if ids:
        return journal_lease(contact, values, ids, started)
    steps = select_steps(connection, contact_id)
    if steps or contact.status == ContactStatus.DELETING.value:
        return Lease(contact, steps)
    # A first delivery whose row is of another type than the hint said: its own journal.
    kind = ContactType(contact.contact_type)
    plan = step_plan(kind, contact.request)
    values, started = new_journal(contact_id, plan, folded(kind, plan), now)
    made = driver.rows(connection, journal_stmt(len(values)), journal_params(values))
    return journal_lease(contact, values, {r.name: r.id for r in made}, started)
