"""Credit movements: reserve on acceptance, capture on `active`, release on `failed`.

Every movement is one ledger row with a unique key, inserted before the balance changes in the
same transaction, so a retried or redelivered step that tries to move the same money again
inserts nothing and changes nothing. Capture and release of one reservation share the key
`settle:<contact>:<n>`, so at most one of them ever happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.store.models import Account, Contact, LedgerEntry
from worker.store.sql import insert_if_absent


@dataclass(frozen=True)
class Balance:
    balance_cents: int
    reserved_cents: int

    @property
    def available_cents(self) -> int:
        return self.balance_cents - self.reserved_cents


def balance(session: Session, account_id: int) -> Balance:
    row = session.execute(
        select(Account.balance_cents, Account.reserved_cents).where(Account.id == account_id)
    ).one()
    return Balance(row.balance_cents, row.reserved_cents)


def try_reserve(session: Session, account_id: int, cents: int) -> bool:
    """Reserve `cents` if available; one conditional UPDATE, safe under concurrent requests.

    PostgreSQL re-evaluates the WHERE after waiting for the row lock; SQLite writers are
    serialised by BEGIN IMMEDIATE. A SELECT-then-UPDATE would be safe on neither.
    """
    result = session.execute(
        update(Account)
        .where(Account.id == account_id, Account.balance_cents - Account.reserved_cents >= cents)
        .values(reserved_cents=Account.reserved_cents + cents)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def record(
    session: Session, account_id: int, contact_id: str | None, kind: str, cents: int, key: str
) -> bool:
    return insert_if_absent(
        session,
        LedgerEntry.__table__,  # type: ignore[arg-type]
        {
            "account_id": account_id,
            "contact_id": contact_id,
            "kind": kind,
            "amount_cents": cents,
            "key": key,
        },
        ["key"],
    )


def reservation_key(contact_id: str, seq: int) -> str:
    return f"reserve:{contact_id}:{seq}"


def settlement_key(contact_id: str, seq: int) -> str:
    return f"settle:{contact_id}:{seq}"


def claim_capture(session: Session, contact: Contact) -> bool:
    """The ledger half of a capture: True if this call is the one that charges the contact.

    Split from `apply_capture` so a caller can write everything else of its transaction
    between the two, and update the account row (every job of the account contends for its
    lock) last, just before the commit.
    """
    key = settlement_key(contact.id, contact.reservation_seq)
    if not record(
        session, contact.account_id, contact.id, "capture", contact.setup_cost_cents, key
    ):
        return False
    session.execute(
        update(Contact)
        .where(Contact.id == contact.id)
        .values(charged=True)
        .execution_options(synchronize_session=False)
    )
    contact.charged = True
    return True


def apply_capture(session: Session, contact: Contact) -> None:
    """The balance half of a capture claimed by `claim_capture` in the same transaction."""
    cents = contact.setup_cost_cents
    session.execute(
        update(Account)
        .where(Account.id == contact.account_id)
        .values(
            balance_cents=Account.balance_cents - cents,
            reserved_cents=Account.reserved_cents - cents,
        )
        .execution_options(synchronize_session=False)
    )


def capture(session: Session, contact: Contact) -> bool:
    """Turn the contact's reservation into a charge, exactly once; True if this call did it."""
    if not claim_capture(session, contact):
        return False
    apply_capture(session, contact)
    return True


def release(session: Session, contact: Contact) -> bool:
    """Give the contact's reservation back, exactly once; True if this call did it."""
    key = settlement_key(contact.id, contact.reservation_seq)
    cents = contact.setup_cost_cents
    if not record(session, contact.account_id, contact.id, "release", cents, key):
        return False
    session.execute(
        update(Account)
        .where(Account.id == contact.account_id)
        .values(reserved_cents=Account.reserved_cents - cents)
    )
    return True


def top_up(session: Session, account_id: int, cents: int, key: str) -> bool:
    """Add credits; `key` makes a repeated top-up (same key) a no-op."""
    if not record(session, account_id, None, "topup", cents, key):
        return False
    result = session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(balance_cents=Account.balance_cents + cents)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LookupError(f"no account {account_id}")
    return True
