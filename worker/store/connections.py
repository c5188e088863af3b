"""Provider connection rows: set (insert or replace), read, delete, and whether a live contact
still uses one. Secrets arrive here sealed; this module never sees them readable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES, ContactStatus, ContactType
from worker.domain.ids import new_id
from worker.store.models import Contact, ContactStep, ProviderConnection


def get(session: Session, account_id: int, provider: str) -> ProviderConnection | None:
    return session.execute(
        select(ProviderConnection).where(
            ProviderConnection.account_id == account_id, ProviderConnection.provider == provider
        )
    ).scalar_one_or_none()


def by_id(session: Session, connection_id: int) -> ProviderConnection | None:
    return session.get(ProviderConnection, connection_id)


def of_account(session: Session, account_id: int) -> list[ProviderConnection]:
    return list(
        session.execute(
            select(ProviderConnection)
            .where(ProviderConnection.account_id == account_id)
            .order_by(ProviderConnection.provider)
        ).scalars()
    )


def in_use(session: Session, connection_id: int) -> bool:
    """Whether a live contact (pending, provisioning, active) was made through it."""
    return (
        session.execute(
            select(Contact.id)
            .where(
                Contact.connection_id == connection_id,
                Contact.status.in_([s.value for s in LIVE_STATUSES]),
            )
            .limit(1)
        ).first()
        is not None
    )


def whatsapp_in_use(session: Session, account_id: int, waba_id: str) -> bool:
    """Whether a live WhatsApp contact of the account uses `waba_id`: its sender was registered
    under it, or it has not registered one yet (it would be)."""
    rows = session.execute(
        select(Contact.status, ContactStep.detail)
        .outerjoin(
            ContactStep,
            (ContactStep.contact_id == Contact.id) & (ContactStep.name == "create_sender"),
        )
        .where(
            Contact.account_id == account_id,
            Contact.contact_type == ContactType.WHATSAPP.value,
            Contact.status.in_([s.value for s in LIVE_STATUSES]),
            # A pool contact's sender is the platform's, under the platform's WABA.
            Contact.whatsapp_sender.is_(None) | (Contact.whatsapp_sender != "shared"),
        )
    ).all()
    not_yet = (ContactStatus.PENDING.value, ContactStatus.PROVISIONING.value)
    for status, detail in rows:
        made_under = (detail or {}).get("waba_id")
        if made_under == waba_id or (made_under is None and status in not_yet):
            return True
    return False


def put(
    session: Session,
    account_id: int,
    provider: str,
    domain: str,
    config: dict[str, object],
    secrets_sealed: str,
    now: datetime,
) -> ProviderConnection:
    """Insert the account's connection to `provider`, or replace the one it has (same id, a
    new version: workers drop the clients of the old credentials)."""
    row = get(session, account_id, provider)
    if row is None:
        row = ProviderConnection(account_id=account_id, provider=provider, created_at=now)
        session.add(row)
    row.domain = domain
    row.config = config
    row.secrets_sealed = secrets_sealed
    row.version = new_id("cv")
    row.verified_at = now
    row.updated_at = now
    session.flush()
    return row


def remove(session: Session, connection_id: int) -> None:
    session.execute(delete(ProviderConnection).where(ProviderConnection.id == connection_id))
