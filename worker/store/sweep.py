"""The sweep's reads and writes: contacts due to have their tag listed at the providers once
more (see worker/runtime/sweep.py), a failed one claimed against an operator's retry while
it is swept, and each marked swept in the status it was swept in."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import ContactStatus
from worker.store.models import Contact, ContactStep
from worker.store.pipeline import contact_of, step_of

# The statuses after which a contact should hold exactly its journal's resources (active) or
# none (failed, deleted); ix_contacts_unswept holds the contacts due, and no others.
SWEPT = (ContactStatus.ACTIVE.value, ContactStatus.FAILED.value, ContactStatus.DELETED.value)
_FAILED = ContactStatus.FAILED.value


def due(
    session: Session, now: datetime, after_s: float, limit: int
) -> list[tuple[Contact, dict[str, ContactStep]]]:
    """Contacts in a swept status that they were not swept in, reached more than `after_s`
    ago, with their journals (plain objects)."""
    rows = session.execute(
        select(*Contact.__table__.c)
        .where(
            Contact.status.in_(SWEPT),
            or_(Contact.swept_status.is_(None), Contact.swept_status != Contact.status),
            Contact.updated_at < now - timedelta(seconds=after_s),
        )
        .order_by(Contact.updated_at)
        .limit(limit)
    ).all()
    contacts = [contact_of(row._asdict()) for row in rows]
    if not contacts:
        return []
    journals: dict[str, dict[str, ContactStep]] = {c.id: {} for c in contacts}
    for row in session.execute(
        select(*ContactStep.__table__.c).where(ContactStep.contact_id.in_(list(journals)))
    ):
        journals[row.contact_id][row.name] = step_of(row)
    return [(c, journals[c.id]) for c in contacts]


def claim(session: Session, contact: Contact, owner: str, now: datetime, hold_s: float) -> bool:
    """Hold a failed contact while it is swept: an operator's retry (`recovery.reopen`) waits
    for the claim to go or expire, so the sweep never releases what a new run just made."""
    done = session.execute(
        update(Contact)
        .where(
            Contact.id == contact.id,
            Contact.status == _FAILED,
            or_(Contact.lease_owner.is_(None), Contact.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=hold_s))
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def mark_swept(session: Session, contact: Contact, owner: str | None) -> bool:
    """The contact swept in its status (and a failed one's claim let go); False if its
    status moved meanwhile (it is then due again in its new one)."""
    statement = update(Contact).where(Contact.id == contact.id, Contact.status == contact.status)
    values: dict[str, object] = {"swept_status": contact.status}
    if owner is not None:
        statement = statement.where(Contact.lease_owner == owner)
        values.update(lease_owner=None, lease_expires_at=None)
    done = session.execute(statement.values(**values))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def let_go(session: Session, contact: Contact, owner: str) -> None:
    """A failed contact's claim given back unswept (a provider error: the next pass retries)."""
    session.execute(
        update(Contact)
        .where(Contact.id == contact.id, Contact.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
