"""The shared pool of WhatsApp senders and its routes: take a route on a pool sender (or grow
the pool by one), follow a growing sender, release a route. The database decides every race:
one route per user and sender (`uq_pool_routes_sender_user`), one per contact
(`uq_pool_routes_contact_id`), one sender growing at a time (`uq_pool_senders_growing`).
Each write is a contact's, made under its lease: `hold_lease` fences it by the lease's owner
in the write's own transaction, so a runner that lost the contact (frozen past the dead-after
time, taken over) writes nothing to the pool once resumed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES, ContactType
from worker.domain.whatsapp_pool import PoolSenderStatus, SenderMode
from worker.store.journal import LeaseLost
from worker.store.models import Contact, PoolRoute, PoolSender

_USABLE = (PoolSenderStatus.ONLINE.value, PoolSenderStatus.GROWING.value)


@dataclass(frozen=True)
class Taken:
    """What `take_route` found: the contact's route and its sender (`sender` None: no pool
    sender can take this user now; `wait`: one is growing, look again soon, else the pool
    is full)."""

    sender: PoolSender | None
    grows: bool = False  # this contact grows the sender (it made its row)
    wait: bool = False


def hold_lease(session: Session, contact_id: str, owner: str) -> None:
    """The fence of a pool write: the contact is leased to `owner`, else `LeaseLost` (the
    caller's transaction then commits nothing). On PostgreSQL the contact's row stays locked
    (FOR NO KEY UPDATE, as the lease's own UPDATE locks it) until the write commits, so no
    takeover commits in between; SQLite's write transaction has the database to itself."""
    held = session.execute(
        select(Contact.id)
        .where(Contact.id == contact_id, Contact.lease_owner == owner)
        .with_for_update(key_share=True)
    ).first()
    if held is None:
        raise LeaseLost(f"contact {contact_id}: the lease is not {owner}'s (pool write)")


def route_of(session: Session, contact_id: str) -> tuple[PoolRoute, PoolSender] | None:
    row = session.execute(
        select(PoolRoute, PoolSender)
        .join(PoolSender, PoolSender.id == PoolRoute.pool_sender_id)
        .where(PoolRoute.contact_id == contact_id)
    ).first()
    return (row[0], row[1]) if row is not None else None


def take_route(
    session: Session,
    contact: Contact,
    user_number: str | None,
    max_senders: int,
    now: datetime,
    *,
    may_grow: bool = True,
) -> Taken:
    """Route `user_number` to the contact's assistant on a pool sender that has no route of
    that user: an online one first (the least loaded), else the growing one, else a new
    sender this contact grows while the pool has room (and `may_grow`). Idempotent: a
    contact that has a route on a usable sender keeps it (one on a failed sender is dropped
    first)."""
    existing = route_of(session, contact.id)
    if existing is not None:
        route, sender = existing
        if sender.status != PoolSenderStatus.FAILED.value:
            return Taken(sender, grows=sender.grower_contact_id == contact.id)
        session.delete(route)
        session.flush()
    load = (
        select(PoolRoute.pool_sender_id, func.count().label("n"))
        .group_by(PoolRoute.pool_sender_id)
        .subquery()
    )
    taken_by_user = select(PoolRoute.pool_sender_id).where(
        PoolRoute.user_whatsapp_number == user_number
    )
    candidates = session.execute(
        select(PoolSender)
        .outerjoin(load, load.c.pool_sender_id == PoolSender.id)
        .where(PoolSender.status.in_(_USABLE), PoolSender.id.not_in(taken_by_user))
        .order_by(
            (PoolSender.status == PoolSenderStatus.ONLINE.value).desc(),
            func.coalesce(load.c.n, 0),
            PoolSender.id,
        )
    ).scalars()
    for sender in list(candidates):
        if _insert_route(session, sender.id, contact, user_number, now):
            return Taken(sender)
        mine = route_of(session, contact.id)  # a runner of this same contact won the race
        if mine is not None:
            return Taken(mine[1], grows=mine[1].grower_contact_id == contact.id)
    growing = session.execute(
        select(PoolSender.id).where(PoolSender.status == PoolSenderStatus.GROWING.value)
    ).first()
    held = session.execute(
        select(func.count())
        .select_from(PoolSender)
        .where(PoolSender.status != PoolSenderStatus.FAILED.value)
    ).scalar_one()
    if growing is not None or not may_grow:
        return Taken(None, wait=True)  # this user is on it already: another grows after it
    if held >= max_senders:
        return Taken(None)
    sender = PoolSender(
        status=PoolSenderStatus.GROWING.value,
        grower_contact_id=contact.id,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(sender)
            session.flush()
    except IntegrityError:
        # Another contact began growing one just now: join it on the next look.
        return Taken(None, wait=True)
    if not _insert_route(session, sender.id, contact, user_number, now):
        raise RuntimeError("a new pool sender already had a route")  # cannot happen
    return Taken(sender, grows=True)


def _insert_route(
    session: Session, sender_id: int, contact: Contact, user_number: str | None, now: datetime
) -> bool:
    """Insert the route, in a savepoint; False when a unique index refused it."""
    try:
        with session.begin_nested():
            session.add(
                PoolRoute(
                    pool_sender_id=sender_id,
                    user_whatsapp_number=user_number,
                    assistant_id=contact.assistant_id,
                    contact_id=contact.id,
                    created_at=now,
                )
            )
            session.flush()
    except IntegrityError:
        return False
    session.execute(
        update(Contact).where(Contact.id == contact.id).values(pool_sender_id=sender_id)
    )
    return True


def get_sender(session: Session, sender_id: int) -> PoolSender | None:
    return session.get(PoolSender, sender_id)


def record_growth(session: Session, sender_id: int, now: datetime, **made: str | None) -> None:
    """What the growing sender has at Twilio so far (its number, its sender)."""
    session.execute(
        update(PoolSender)
        .where(PoolSender.id == sender_id)
        .values(**{k: v for k, v in made.items() if v is not None}, updated_at=now)
    )


def mark_online(session: Session, sender_id: int, now: datetime) -> bool:
    return (
        session.execute(
            update(PoolSender)
            .where(
                PoolSender.id == sender_id,
                PoolSender.status == PoolSenderStatus.GROWING.value,
            )
            .values(status=PoolSenderStatus.ONLINE.value, updated_at=now)
        ).rowcount
        == 1
    )


def mark_failed(session: Session, sender_id: int, error: str, now: datetime) -> None:
    """A growing sender whose onboarding failed: its routes' contacts take another."""
    session.execute(
        update(PoolSender)
        .where(PoolSender.id == sender_id, PoolSender.status == PoolSenderStatus.GROWING.value)
        .values(status=PoolSenderStatus.FAILED.value, error=error[:300], updated_at=now)
    )


def release_route(session: Session, contact_id: str) -> int:
    """Delete the contact's route (how many: 0 when it had none or it is gone already)."""
    return session.execute(delete(PoolRoute).where(PoolRoute.contact_id == contact_id)).rowcount


def grown_by(session: Session, contact_id: str) -> list[PoolSender]:
    """The pool senders this contact grew that did not come online (to clean up)."""
    return list(
        session.execute(
            select(PoolSender).where(
                PoolSender.grower_contact_id == contact_id,
                PoolSender.status != PoolSenderStatus.ONLINE.value,
            )
        ).scalars()
    )


def dedicated_live(session: Session, account_id: int) -> int:
    """The account's live WhatsApp contacts with a sender of their own."""
    return session.execute(
        select(func.count())
        .select_from(Contact)
        .where(
            Contact.account_id == account_id,
            Contact.status.in_([s.value for s in LIVE_STATUSES]),
            Contact.contact_type == ContactType.WHATSAPP.value,
            (Contact.whatsapp_sender.is_(None))
            | (Contact.whatsapp_sender == SenderMode.DEDICATED.value),
        )
    ).scalar_one()
