"""Deletion's writes: the request (live contact to `deleting`), the release steps' journal,
and the final `deleted` with its event and the reservation given back.

The runner that releases a contact holds its lease, as a provisioning runner does
(worker/store/pipeline.py takes it for `deleting` contacts too); every write here checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, and_, case, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import (
    DELETABLE_STATUSES,
    DEPROVISION_POSITION,
    ContactStatus,
    ContactType,
    DeletedReason,
    StepStatus,
    deprovision_plan,
)
from worker.store import credits
from worker.store.models import Contact, ContactStep
from worker.store.outbox import outbox
from worker.store.pipeline import close_journal, step_of
from worker.store.sql import insert_if_absent

_contacts: Table = Contact.__table__  # type: ignore[assignment]
_steps: Table = ContactStep.__table__  # type: ignore[assignment]
_c = _contacts.c
_IN_FLIGHT = (ContactStatus.PENDING.value, ContactStatus.PROVISIONING.value)


@dataclass(frozen=True)
class Requested:
    """What a DELETE found: the contact as it is now, and whether this request moved it."""

    contact: Contact
    moved: bool


def request_deletion(
    session: Session,
    account_id: int,
    assistant_id: int,
    contact_id: str,
    now: datetime,
    grace_s: float,
) -> Requested | None:
    """Move a live contact to `deleting` (a cancellation if it was pending or provisioning);
    None if the account's assistant has no such contact.

    One conditional UPDATE, so a DELETE racing the runner's activation or the billing pass
    moves the contact from whatever live status it has at that instant. A runner holding the
    lease keeps it and stops at its next step boundary; with no runner, the contact is due
    for the reconciler after `grace_s` in case the caller's publish is lost.
    """
    moved = session.execute(
        update(_contacts)
        .where(
            _c.id == contact_id,
            _c.account_id == account_id,
            _c.assistant_id == assistant_id,
            _c.status.in_([s.value for s in DELETABLE_STATUSES]),
        )
        .values(
            deleted_reason=case(
                (_c.status.in_(_IN_FLIGHT), DeletedReason.CANCELLED.value),
                else_=DeletedReason.REQUESTED.value,
            ),
            status=ContactStatus.DELETING.value,
            lease_expires_at=case(
                (_c.lease_owner.is_(None), now + timedelta(seconds=grace_s)),
                else_=_c.lease_expires_at,
            ),
            updated_at=now,
        )
        .returning(_c.id)
    ).first()
    contact = session.execute(
        select(Contact).where(
            Contact.id == contact_id,
            Contact.account_id == account_id,
            Contact.assistant_id == assistant_id,
        )
    ).scalar_one_or_none()
    if contact is None:
        return None
    return Requested(contact, moved is not None)


def release_journal(
    session: Session, contact: Contact, steps: dict[str, ContactStep], now: datetime
) -> list[ContactStep]:
    """The contact's release steps in order, journaled (pending) if they were not yet."""
    plan = deprovision_plan(ContactType(contact.contact_type), contact.request)
    missing = [name for name in plan if name not in steps]
    for offset, name in enumerate(plan):
        if name in missing:
            insert_if_absent(
                session,
                _steps,
                {
                    "contact_id": contact.id,
                    "position": DEPROVISION_POSITION + offset,
                    "name": name,
                    "status": StepStatus.PENDING.value,
                    "attempts": 0,
                    "updated_at": now,
                },
                ["contact_id", "name"],
            )
    if missing:
        for row in session.execute(
            select(*_steps.c).where(_steps.c.contact_id == contact.id, _steps.c.name.in_(missing))
        ):
            steps[row.name] = step_of(row)
    return [steps[name] for name in plan]


def finish_deleted(
    session: Session,
    contact: Contact,
    steps: Sequence[ContactStep],
    owner: str,
    now: datetime,
    events: list[str] | None = None,
) -> bool:
    """`deleted`: close the journal, write `contact.deleted`, give back a reservation still
    open (a cancelled contact's; an active contact's was captured, and the capture and the
    release share one ledger key, so nothing moves). False if the lease was lost."""
    done = session.execute(
        update(_contacts)
        .where(
            and_(
                _c.id == contact.id,
                _c.lease_owner == owner,
                _c.status == ContactStatus.DELETING.value,
            )
        )
        .values(
            status=ContactStatus.DELETED.value,
            deleted_at=now,
            grace_ends_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    contact.status = ContactStatus.DELETED.value
    contact.deleted_at = contact.updated_at = now
    contact.grace_ends_at = None
    contact.lease_owner = None
    # A cancellation (never charged) undid what provisioning made.
    provisioning = [s for s in steps if s.position < DEPROVISION_POSITION]
    close_journal(session, provisioning, now, undone=not contact.charged)
    outbox(session, contact, steps, now, events)
    credits.release(session, contact)  # last: the account row is the hot spot
    return True
