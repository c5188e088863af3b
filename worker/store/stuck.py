"""Clean-ups that cannot finish (a failing contact's compensation, a deleting one's release):
marked on the contact, listed and counted for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.store.models import Contact


def mark_stuck(session: Session, contact: Contact, owner: str, reason: str, now: datetime) -> bool:
    """Record that the contact's clean-up met a permanent error (`reason`, its code). True
    when this is the first time (`stuck_since` was unset), so that the caller says so once,
    not on every attempt."""
    first = contact.stuck_since is None
    since = now if first else contact.stuck_since
    done = session.execute(
        update(Contact)
        .where(Contact.id == contact.id, Contact.lease_owner == owner)
        .values(stuck_reason=reason, stuck_since=since)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    contact.stuck_reason, contact.stuck_since = reason, since
    return first


def clear(session: Session, contact: Contact) -> None:
    """The clean-up finished: the contact is no longer stuck."""
    session.execute(
        update(Contact).where(Contact.id == contact.id).values(stuck_reason=None, stuck_since=None)
    )
    contact.stuck_reason = contact.stuck_since = None


def stuck_contacts(session: Session, limit: int) -> list[Contact]:
    """Contacts whose clean-up is stuck, longest stuck first."""
    query = (
        select(Contact)
        .where(Contact.stuck_since.is_not(None))
        .order_by(Contact.stuck_since, Contact.id)
        .limit(limit)
    )
    return list(session.execute(query).scalars())


def count_by_reason(session: Session) -> dict[str, int]:
    """How many contacts are stuck, by the code of the error that stopped their clean-up."""
    query: Any = (
        select(Contact.stuck_reason, func.count())
        .where(Contact.stuck_since.is_not(None))
        .group_by(Contact.stuck_reason)
    )
    return {reason or "unknown": count for reason, count in session.execute(query)}
