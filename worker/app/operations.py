"""Operators' tasks: list failed and stuck contacts, run a failed one again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from worker.app.contacts import Publisher
from worker.domain.errors import ContactExists, InsufficientCredits, NotFound
from worker.domain.money import format_amount
from worker.live import NoNotifier, Notifier
from worker.settings import Settings
from worker.store import credits, recovery
from worker.store import stuck as stuck_store
from worker.store.db import Database
from worker.store.models import Contact


def stuck_contacts(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    """Contacts whose clean-up (a failing contact's compensation, a deleting one's release)
    is stuck on a permanent error, longest stuck first: the contact's own error or why it is
    deleted, the error that stops its clean-up, and for how long."""
    now = datetime.now(UTC)
    with db.read() as session:
        rows = stuck_store.stuck_contacts(session, limit)
        return [
            {
                "id": c.id,
                "account_id": c.account_id,
                "assistant_id": c.assistant_id,
                "contact_type": c.contact_type,
                "status": c.status,
                "error": {"code": c.error_code, "message": c.error_message},
                "deleted_reason": c.deleted_reason,
                "stuck_reason": c.stuck_reason,
                "stuck_since": c.stuck_since.isoformat() if c.stuck_since else None,
                "age_s": round((now - c.stuck_since).total_seconds()) if c.stuck_since else 0,
            }
            for c in rows
        ]


def stuck_counts(db: Database) -> dict[str, int]:
    """Stuck contacts by the code that stops their clean-up (the gauge's reading)."""
    with db.read() as session:
        return stuck_store.count_by_reason(session)


def failed_contacts(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.read() as session:
        rows = session.execute(
            select(Contact)
            .where(Contact.status == "failed")
            .order_by(Contact.updated_at.desc())
            .limit(limit)
        ).scalars()
        return [
            {
                "id": c.id,
                "account_id": c.account_id,
                "assistant_id": c.assistant_id,
                "contact_type": c.contact_type,
                "error": {"code": c.error_code, "message": c.error_message},
                "updated_at": c.updated_at.isoformat(),
            }
            for c in rows
        ]


def retry_contact(
    db: Database,
    settings: Settings,
    publisher: Publisher,
    contact_id: str,
    notifier: Notifier | NoNotifier | None = None,
) -> dict[str, Any]:
    """Put a failed contact back to pending, reserving its setup cost again, and enqueue it;
    `notifier` (if given) wakes whoever waits on the contact, after the commit."""
    now = datetime.now(UTC)
    try:
        with db.write() as session:
            contact = recovery.reopen(session, contact_id, now, settings.reconcile_grace_s)
            if contact is None:
                raise NotFound(f"no failed contact {contact_id}")
            cost = contact.setup_cost_cents
            if not credits.try_reserve(session, contact.account_id, cost):
                raise InsufficientCredits(
                    f"available credits are below the setup cost of {format_amount(cost)}"
                )
            credits.record(
                session,
                contact.account_id,
                contact.id,
                "reserve",
                cost,
                credits.reservation_key(contact.id, contact.reservation_seq),
            )
            queue = "bulk" if contact.batch_id else "interactive"
            batch_id, account_id = contact.batch_id, contact.account_id
    except IntegrityError:
        raise ContactExists(
            "the assistant already has a live contact of this type; retry refused"
        ) from None
    if notifier is not None:
        notifier.changed(contact_id, batch_id, account_id, "pending")
    publisher.provision(contact_id, queue=queue)
    return {"id": contact_id, "status": "pending", "queue": queue}
