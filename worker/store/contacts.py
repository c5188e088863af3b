"""Contact rows: insert, fetch and list them for the API."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES
from worker.store.models import Contact, ContactStep


def live_contact_exists(session: Session, assistant_id: int, contact_type: str) -> bool:
    return (
        session.execute(
            select(Contact.id).where(
                Contact.assistant_id == assistant_id,
                Contact.contact_type == contact_type,
                Contact.status.in_([s.value for s in LIVE_STATUSES]),
            )
        ).first()
        is not None
    )


def get_contact(
    session: Session, account_id: int, contact_id: str, assistant_id: int | None = None
) -> Contact | None:
    query = select(Contact).where(Contact.id == contact_id, Contact.account_id == account_id)
    if assistant_id is not None:
        query = query.where(Contact.assistant_id == assistant_id)
    return session.execute(query).scalar_one_or_none()


def list_contacts(
    session: Session, account_id: int, assistant_id: int, limit: int, starting_after: str | None
) -> Sequence[Contact]:
    query = (
        select(Contact)
        .where(Contact.account_id == account_id, Contact.assistant_id == assistant_id)
        .order_by(Contact.id)
        .limit(limit)
    )
    if starting_after:
        query = query.where(Contact.id > starting_after)
    return session.execute(query).scalars().all()


def steps_for(session: Session, contact_ids: Sequence[str]) -> dict[str, list[ContactStep]]:
    found: dict[str, list[ContactStep]] = {cid: [] for cid in contact_ids}
    if not contact_ids:
        return found
    rows = session.execute(
        select(ContactStep)
        .where(ContactStep.contact_id.in_(contact_ids))
        .order_by(ContactStep.contact_id, ContactStep.position)
    ).scalars()
    for step in rows:
        found[step.contact_id].append(step)
    return found
