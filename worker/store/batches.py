"""Batches: accept many contacts of one account in one transaction, and count them by status."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from worker.domain.contacts import LIVE_STATUSES, ContactStatus
from worker.store import contacts as contacts_store
from worker.store import credits
from worker.store.models import Account, Assistant, Batch, Contact, LedgerEntry

_contacts: Table = Contact.__table__  # type: ignore[assignment]
_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]
_LIVE = [s.value for s in LIVE_STATUSES]


@dataclass(frozen=True)
class AccountState:
    """What a batch is judged against, read while holding the account's row lock."""

    available_cents: int
    owned: set[int]
    live: set[tuple[int, str]]


def lock_state(session: Session, account_id: int, assistant_ids: Iterable[int]) -> AccountState:
    """Lock the account's row, then read its credits, assistants and live contacts.

    Every acceptance of the account (single or batch) updates that row, so while the lock is
    held nobody else can reserve credits or accept a contact for its assistants: what is read
    here stays true until the commit. (SQLite: BEGIN IMMEDIATE already serialises writers.)
    """
    row = session.execute(
        select(Account.balance_cents, Account.reserved_cents)
        .where(Account.id == account_id)
        .with_for_update()
    ).one()
    ids = sorted(set(assistant_ids))
    owned: set[int] = set()
    live: set[tuple[int, str]] = set()
    if ids:
        owned = set(
            session.execute(
                select(Assistant.id).where(
                    Assistant.account_id == account_id, Assistant.id.in_(ids)
                )
            ).scalars()
        )
    if owned:
        live = {
            (r.assistant_id, r.contact_type)
            for r in session.execute(
                select(Contact.assistant_id, Contact.contact_type).where(
                    Contact.assistant_id.in_(sorted(owned)), Contact.status.in_(_LIVE)
                )
            )
        }
    return AccountState(row.balance_cents - row.reserved_cents, owned, live)


def queued_ahead(session: Session, account_id: int, cap: int) -> int:
    """How many of the account's contacts still wait for a worker (`pending`), counted up to
    `cap` (beyond it every position is in the last tier): where its next batch's contacts
    stand in the account's line (`worker.domain.batch.queue_priorities`). An index-only count
    on `ix_contacts_account_status`."""
    waiting = (
        select(Contact.id)
        .where(Contact.account_id == account_id, Contact.status == ContactStatus.PENDING.value)
        .limit(cap)
        .subquery()
    )
    return int(session.execute(select(func.count()).select_from(waiting)).scalar_one())


def insert_batch(
    session: Session, batch_id: str, account_id: int, contacts: Sequence[Contact], now: datetime
) -> None:
    """Record the batch, its contacts and their reservations (one ledger row each) and
    reserve their total on the account, in the caller's transaction (after `lock_state`)."""
    total = sum(c.setup_cost_cents for c in contacts)
    session.add(Batch(id=batch_id, account_id=account_id, total=len(contacts), created_at=now))
    session.flush()
    if not contacts:
        return
    reserved = session.execute(
        update(Account)
        .where(Account.id == account_id, Account.balance_cents - Account.reserved_cents >= total)
        .values(reserved_cents=Account.reserved_cents + total)
    )
    if reserved.rowcount != 1:  # type: ignore[attr-defined]
        # Cannot happen under the row lock; refuse to over-reserve if it ever does.
        raise RuntimeError("the account's credits changed under its lock")
    connection = session.connection()
    connection.execute(
        insert(_contacts),
        [
            {
                "id": c.id,
                "account_id": c.account_id,
                "assistant_id": c.assistant_id,
                "contact_type": c.contact_type,
                "status": c.status,
                "request": c.request,
                "setup_cost_cents": c.setup_cost_cents,
                "monthly_cost_cents": c.monthly_cost_cents,
                "charged": False,
                "reservation_seq": c.reservation_seq,
                "deliveries": 0,
                "takeovers": 0,
                "batch_id": batch_id,
                "connection_id": c.connection_id,
                "created_at": now,
                "updated_at": now,
            }
            for c in contacts
        ],
    )
    connection.execute(
        insert(_ledger),
        [
            {
                "account_id": c.account_id,
                "contact_id": c.id,
                "kind": "reserve",
                "amount_cents": c.setup_cost_cents,
                "key": credits.reservation_key(c.id, c.reservation_seq),
                "created_at": now,
            }
            for c in contacts
        ],
    )


@dataclass(frozen=True)
class BatchCounts:
    batch_id: str
    total: int
    counts: dict[str, int]


def counts(session: Session, account_id: int, batch_id: str) -> BatchCounts | None:
    """The batch's contacts by status (every status present, zeros included), or None if the
    batch does not exist for this account."""
    total = session.execute(
        select(Batch.total).where(Batch.id == batch_id, Batch.account_id == account_id)
    ).scalar_one_or_none()
    if total is None:
        return None
    found = {s.value: 0 for s in ContactStatus}
    for status, n in session.execute(
        select(Contact.status, func.count())
        .where(Contact.batch_id == batch_id, Contact.account_id == account_id)
        .group_by(Contact.status)
    ):
        found[status] = n
    return BatchCounts(batch_id, total, found)


def exists(session: Session, account_id: int, batch_id: str) -> bool:
    found = session.execute(
        select(Batch.id).where(Batch.id == batch_id, Batch.account_id == account_id)
    ).first()
    return found is not None


def batch_contacts(
    session: Session, account_id: int, batch_id: str, limit: int, starting_after: str | None
) -> Sequence[Contact]:
    """A page of the batch's contacts in id order (a batch holds at most a thousand)."""
    return contacts_store.page_of_contacts(
        session, account_id, Contact.batch_id == batch_id, limit, starting_after
    )
