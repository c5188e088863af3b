"""Twilio's Regulations as last fetched (`twilio_regulations`): one entry per country, number
type and end-user type, written by beat's refresh, marked stale by a purchase Twilio refused,
read whole by the API's in-memory copy; the countries recent phone contacts asked for; and
the lease that keeps to one refresh at a time (`task_leases`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import ContactType
from worker.domain.regulatory import Rule
from worker.store.models import Contact, TaskLease, TwilioRegulation
from worker.store.sql import insert_if_absent


def entries(session: Session, countries: Iterable[str] | None = None) -> list[TwilioRegulation]:
    """Every entry (a few per country: the table stays small), or those of `countries`."""
    query = select(TwilioRegulation)
    if countries is not None:
        query = query.where(TwilioRegulation.country.in_(sorted(set(countries))))
    return list(session.execute(query).scalars())


def put(
    session: Session,
    country: str,
    number_type: str,
    end_user_type: str,
    rule: Rule,
    regulation_sid: str | None,
    now: datetime,
    sold: bool = True,
) -> None:
    """Record what Twilio answered now (insert or replace); it is no longer stale."""
    row = session.execute(
        select(TwilioRegulation).where(
            TwilioRegulation.country == country,
            TwilioRegulation.number_type == number_type,
            TwilioRegulation.end_user_type == end_user_type,
        )
    ).scalar_one_or_none()
    if row is None:
        row = TwilioRegulation(
            country=country, number_type=number_type, end_user_type=end_user_type
        )
        session.add(row)
    row.bundle, row.address, row.regulation_sid = rule.bundle, rule.address, regulation_sid
    row.fetched_at, row.stale, row.sold = now, False, sold
    session.flush()


def mark_stale(session: Session, country: str, number_type: str, refused: str) -> int:
    """A purchase of `country`'s `number_type` numbers was refused for want of a `bundle`
    (21649) or an `address` (21631), or their search found no such list (`sold`: a 404): the
    entries (of every end-user type) that the refusal contradicts are not trusted until
    refetched. Only those: one that already says a bundle (or a local or foreign address) is
    needed agrees with Twilio, and the refusal is about the contact's documents. How many
    were marked."""
    if refused == "bundle":
        contradicted = TwilioRegulation.bundle.is_(False)
    elif refused == "sold":  # a search answered 404: the country has no such list
        contradicted = TwilioRegulation.sold.is_(True)
    else:
        contradicted = TwilioRegulation.address.in_(("none", "any"))
    result = session.execute(
        update(TwilioRegulation)
        .where(
            TwilioRegulation.country == country,
            TwilioRegulation.number_type == number_type,
            TwilioRegulation.stale.is_(False),
            contradicted,
        )
        .values(stale=True)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def oldest_fetched_at(session: Session) -> datetime | None:
    """When the least recently fetched entry was fetched (None: no entry)."""
    value: datetime | None = session.execute(
        select(func.min(TwilioRegulation.fetched_at))
    ).scalar_one()
    return value


def recent_phone_countries(session: Session, limit: int) -> set[str]:
    """The countries the latest `limit` phone and WhatsApp contacts asked for: contact ids
    are time-ordered, so the primary key's index gives the latest without a scan."""
    rows = session.execute(
        select(Contact.request)
        .where(Contact.contact_type.in_((ContactType.PHONE.value, ContactType.WHATSAPP.value)))
        .order_by(Contact.id.desc())
        .limit(limit)
    ).scalars()
    found: set[str] = set()
    for request in rows:
        country = (request or {}).get("phone_country")
        if isinstance(country, str) and len(country) == 2:
            found.add(country.upper())
    return found


def take_lease(session: Session, name: str, owner: str, now: datetime, hold_s: float) -> bool:
    """Hold the pass `name` until `now + hold_s`: True when nobody else holds it (or their
    hold expired). A conditional UPDATE, or the INSERT of a first holder: never two."""
    until = now + timedelta(seconds=hold_s)
    taken = session.execute(
        update(TaskLease)
        .where(
            TaskLease.name == name,
            or_(TaskLease.expires_at < now, TaskLease.owner == owner),
        )
        .values(owner=owner, expires_at=until)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return True
    return insert_if_absent(
        session,
        TaskLease.__table__,  # type: ignore[arg-type]
        {"name": name, "owner": owner, "expires_at": until},
        ["name"],
    )


def let_go(session: Session, name: str, owner: str) -> None:
    session.execute(
        update(TaskLease)
        .where(TaskLease.name == name, TaskLease.owner == owner)
        .values(expires_at=_EPOCH)
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a let-go lease: expired for everyone
