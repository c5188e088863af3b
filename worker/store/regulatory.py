"""An account's regulatory documents per country and number type (`twilio_regulatory`): set
(insert or replace), read, delete, and whether a live contact's number was bought with them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES, ContactType
from worker.store.models import Contact, TwilioRegulatory


def get(
    session: Session, account_id: int, country: str, number_type: str
) -> TwilioRegulatory | None:
    return session.execute(
        select(TwilioRegulatory).where(
            TwilioRegulatory.account_id == account_id,
            TwilioRegulatory.country == country,
            TwilioRegulatory.number_type == number_type,
        )
    ).scalar_one_or_none()


def of_account(session: Session, account_id: int) -> list[TwilioRegulatory]:
    return list(
        session.execute(
            select(TwilioRegulatory)
            .where(TwilioRegulatory.account_id == account_id)
            .order_by(TwilioRegulatory.country, TwilioRegulatory.number_type)
        ).scalars()
    )


def put(
    session: Session,
    account_id: int,
    country: str,
    number_type: str,
    bundle_sid: str | None,
    address_sid: str | None,
    address_country: str | None,
    info: dict[str, Any],
    now: datetime,
) -> TwilioRegulatory:
    row = get(session, account_id, country, number_type)
    if row is None:
        row = TwilioRegulatory(
            account_id=account_id, country=country, number_type=number_type, created_at=now
        )
        session.add(row)
    row.bundle_sid = bundle_sid
    row.address_sid = address_sid
    row.address_country = address_country
    row.info = info
    row.verified_at = now
    row.updated_at = now
    session.flush()
    return row


def in_use(session: Session, row: TwilioRegulatory) -> bool:
    """Whether a live phone or WhatsApp contact of the account was accepted with these
    documents (its request records them: `documents == "account"`)."""
    requests = session.execute(
        select(Contact.request).where(
            Contact.account_id == row.account_id,
            Contact.contact_type.in_([ContactType.PHONE.value, ContactType.WHATSAPP.value]),
            Contact.status.in_([s.value for s in LIVE_STATUSES]),
        )
    ).scalars()
    for request in requests:
        if (
            (request or {}).get("documents") == "account"
            and request.get("phone_country") == row.country
            and request.get("phone_number_type", "local") == row.number_type
        ):
            return True
    return False


def remove(session: Session, row_id: int) -> None:
    session.execute(delete(TwilioRegulatory).where(TwilioRegulatory.id == row_id))
