"""Contacts nobody will come back to by themselves: the reconciler's claim, and the
operator's retry of a failed contact."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import ContactStatus, StepStatus
from worker.store.models import Contact, ContactStep
from worker.store.pipeline import RUNNABLE


def due_for_reconcile(
    session: Session, now: datetime, grace_s: float, limit: int
) -> list[tuple[str, str | None]]:
    """Open contacts nobody will come back to by themselves; claims them for `grace_s`.

    Due: a lease or scheduled retry whose time has passed, or a pending contact never leased
    and older than the grace (its publish may have been lost).
    """
    grace = timedelta(seconds=grace_s)
    due = and_(
        Contact.status.in_(RUNNABLE),
        or_(
            Contact.lease_expires_at < now,
            and_(Contact.lease_expires_at.is_(None), Contact.created_at < now - grace),
        ),
    )
    query = select(Contact.id, Contact.batch_id).where(due).order_by(Contact.created_at)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [(r.id, r.batch_id) for r in session.execute(query.limit(limit))]
    if rows:
        session.execute(
            update(Contact)
            .where(Contact.id.in_([r[0] for r in rows]), Contact.lease_owner.is_(None))
            .values(lease_expires_at=now + grace)
        )
    return rows


def reopen(session: Session, contact_id: str, now: datetime, grace_s: float) -> Contact | None:
    """Operator retry of a failed contact: back to pending with a fresh reservation.

    Returns None if the contact is not failed (or the sweep holds it for the moment); the
    caller reserves the cost again.
    """
    contact = session.execute(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).scalar_one_or_none()
    if contact is None or contact.status != ContactStatus.FAILED.value:
        return None
    if contact.lease_owner is not None and (contact.lease_expires_at or now) > now:
        return None  # the sweep is listing its tag (worker/store/sweep.py): a minute at most
    contact.reservation_seq += 1
    contact.status = ContactStatus.PENDING.value
    contact.error_code = contact.error_message = None
    contact.lease_owner = None
    contact.lease_expires_at = now + timedelta(seconds=grace_s)
    contact.takeovers = 0
    contact.started_at = None
    contact.swept_status = None  # swept again once it ends again
    contact.updated_at = now
    session.execute(
        update(ContactStep)
        .where(ContactStep.contact_id == contact_id)
        .values(
            status=StepStatus.PENDING.value,
            attempts=0,
            provider_id=None,
            detail=None,
            last_error=None,
            updated_at=now,
        )
    )
    session.flush()
    return contact
