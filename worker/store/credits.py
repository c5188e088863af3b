"""Credit movements: reserve on acceptance, capture on `active`, release on `failed`.

Every movement is one ledger row with a unique key, inserted before the balance changes in the
same transaction, so a retried or redelivered step that tries to move the same money again
inserts nothing and changes nothing. Capture and release of one reservation share the key
`settle:<contact>:<n>`, so at most one of them ever happens.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from worker.domain.billing import fee_key
from worker.store import driver
from worker.store.models import Account, Contact, LedgerEntry

# The worker's statements, built once (see worker/store/pipeline.py): Core statements with
# bind parameters, executed on the transaction's connection.
_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]
_accounts: Table = Account.__table__  # type: ignore[assignment]
_contacts: Table = Contact.__table__  # type: ignore[assignment]


def _insert_ledger(insert: Any) -> Any:
    # INSERT ... ON CONFLICT DO NOTHING on the unique key; RETURNING, not rowcount: psycopg
    # reports -1 for it. The values are the parameters' keys; created_at gets its default.
    return insert(_ledger).on_conflict_do_nothing(index_elements=["key"]).returning(_ledger.c.key)


_RECORD = {"postgresql": _insert_ledger(pg_insert), "sqlite": _insert_ledger(sqlite_insert)}
_CHARGED = update(_contacts).where(_contacts.c.id == bindparam("p_id")).values(charged=True)
_CAPTURE = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("p_id"))
    .values(
        balance_cents=_accounts.c.balance_cents
        - bindparam("p_cents", type_=_accounts.c.balance_cents.type),
        reserved_cents=_accounts.c.reserved_cents
        - bindparam("p_cents", type_=_accounts.c.reserved_cents.type),
    )
)
_RELEASE = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("p_id"))
    .values(
        reserved_cents=_accounts.c.reserved_cents
        - bindparam("p_cents", type_=_accounts.c.reserved_cents.type),
    )
)


# The capture of an activation, and the month's fee with it if the available credits
# (balance - reserved, which the capture leaves as it is) cover the fee: one UPDATE, so the
# account row (every activation of the account waits for its lock) is locked for one statement
# and the commit. No row when the credits cannot pay the fee: nothing changed.
_CAPTURE_AND_FEE = (
    update(_accounts)
    .where(
        _accounts.c.id == bindparam("p_id"),
        _accounts.c.balance_cents - _accounts.c.reserved_cents
        >= bindparam("p_fee", type_=_accounts.c.balance_cents.type),
    )
    .values(
        balance_cents=_accounts.c.balance_cents
        - bindparam("p_cents", type_=_accounts.c.balance_cents.type)
        - bindparam("p_fee", type_=_accounts.c.balance_cents.type),
        reserved_cents=_accounts.c.reserved_cents
        - bindparam("p_cents", type_=_accounts.c.reserved_cents.type),
    )
)
# The capture and the month's fee (p_fee, 0 for none) without a condition: the CHECK on the
# accounts table (available >= 0) refuses it when the credits cannot cover the fee.
_SETTLE = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("p_id"))
    .values(
        balance_cents=_accounts.c.balance_cents
        - bindparam("p_cents", type_=_accounts.c.balance_cents.type)
        - bindparam("p_fee", type_=_accounts.c.balance_cents.type),
        reserved_cents=_accounts.c.reserved_cents
        - bindparam("p_cents", type_=_accounts.c.reserved_cents.type),
    )
)
AVAILABLE_CHECK = "ck_accounts_available_not_negative"
_UNRECORD = delete(_ledger).where(_ledger.c.key == bindparam("p_key"))


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


# The columns a ledger row is written with (created_at takes its default).
LEDGER_COLUMNS = ("account_id", "contact_id", "kind", "amount_cents", "key", "month")


def _ledger_row(
    account_id: int, contact_id: str | None, kind: str, cents: int, key: str, month: str | None
) -> dict[str, Any]:
    return dict(zip(LEDGER_COLUMNS, (account_id, contact_id, kind, cents, key, month), strict=True))


def _record_stmt(connection: Any) -> Any:
    return _RECORD["postgresql" if connection.dialect.name == "postgresql" else "sqlite"]


def record(
    session: Session,
    account_id: int,
    contact_id: str | None,
    kind: str,
    cents: int,
    key: str,
    month: str | None = None,
) -> bool:
    connection = session.connection()
    row = _ledger_row(account_id, contact_id, kind, cents, key, month)
    return connection.execute(_record_stmt(connection), row).first() is not None


def reservation_key(contact_id: str, seq: int) -> str:
    return f"reserve:{contact_id}:{seq}"


def settlement_key(contact_id: str, seq: int) -> str:
    return f"settle:{contact_id}:{seq}"


def capture(session: Session, contact: Contact) -> bool:
    """Turn the contact's reservation into a charge, exactly once; True if this call did it."""
    key = settlement_key(contact.id, contact.reservation_seq)
    if not record(
        session, contact.account_id, contact.id, "capture", contact.setup_cost_cents, key
    ):
        return False
    connection = session.connection()
    connection.execute(_CHARGED, {"p_id": contact.id})
    # As loaded, not a change: a contact attached to the session has nothing left to flush.
    set_committed_value(contact, "charged", True)
    connection.execute(_CAPTURE, {"p_id": contact.account_id, "p_cents": contact.setup_cost_cents})
    return True


class Activation(enum.Enum):
    """What `capture_activation` did: captured (and the fee paid, if one was due), captured
    with the fee unpaid (the credits left could not cover it), or nothing (already settled)."""

    PAID = "paid"
    FEE_UNPAID = "fee_unpaid"
    ALREADY_SETTLED = "already_settled"


def capture_activation(
    session: Session, contact: Contact, fee_month: str | None, *, commit: bool = False
) -> Activation:
    """The money of an activation: capture the contact's reservation exactly once and charge
    the fee of `fee_month` (none when None or the contact has no monthly cost) if the
    available credits cover it. The caller has set `charged` on the contact itself.

    Both ledger rows are written first, in one INSERT; then one UPDATE moves the balance. Call
    it last before the commit: the account row is locked from that UPDATE until the commit,
    and every activation of the account waits for it. A fee the credits cannot cover is taken
    back out of the ledger (its row, written by this transaction, is deleted before anyone
    can see it) and the capture alone is applied. With `commit`, `settle_and_commit` moves
    the balance instead.
    """
    rows, charge = activation_rows(contact, fee_month)
    connection = session.connection()
    written = set(connection.execute(_record_stmt(connection), rows).scalars())
    settle = settle_and_commit if commit else settle_activation
    return settle(session, contact, charge, written)


@dataclass(frozen=True)
class ActivationCharge:
    """What an activation takes: the capture of the reservation and the month's fee (0: none)."""

    cents: int
    capture_key: str
    fee: int
    fee_key: str


def activation_rows(
    contact: Contact, fee_month: str | None
) -> tuple[list[dict[str, Any]], ActivationCharge]:
    """The ledger rows of an activation (the capture, and the fee when one is due) and what
    they charge; `settle_activation` moves the balance once they are written."""
    cents = contact.setup_cost_cents
    capture = settlement_key(contact.id, contact.reservation_seq)
    rows = [_ledger_row(contact.account_id, contact.id, "capture", cents, capture, None)]
    fee = contact.monthly_cost_cents if fee_month is not None else 0
    key = fee_key(contact.id, fee_month) if fee_month is not None else ""
    if fee:
        rows.append(_ledger_row(contact.account_id, contact.id, "monthly_fee", fee, key, fee_month))
    return rows, ActivationCharge(cents, capture, fee, key)


def settle_activation(
    session: Session, contact: Contact, charge: ActivationCharge, written: set[str]
) -> Activation:
    """The balance of an activation whose ledger rows were inserted (`written`: the keys the
    insert wrote; a key already there was not written again)."""
    if charge.capture_key not in written:
        return Activation.ALREADY_SETTLED
    set_committed_value(contact, "charged", True)
    fee = charge.fee
    if fee and charge.fee_key not in written:
        fee = 0  # paid before (a fee row is written with its charge): not twice
    connection = session.connection()
    params = {"p_id": contact.account_id, "p_cents": charge.cents}
    if fee:
        if driver.count(connection, _CAPTURE_AND_FEE, {**params, "p_fee": fee}) == 1:
            return Activation.PAID
        connection.execute(_UNRECORD, {"p_key": charge.fee_key})
        driver.count(connection, _CAPTURE, params)
        return Activation.FEE_UNPAID
    driver.count(connection, _CAPTURE, params)
    return Activation.PAID


class FeeNotCovered(Exception):
    """`settle_and_commit`: the credits left cannot cover the month's fee; nothing was
    committed, and the transaction is to be rolled back and the activation run again with
    `settle_activation`, which starts the grace period."""


def settle_and_commit(
    session: Session, contact: Contact, charge: ActivationCharge, written: set[str]
) -> Activation:
    """`settle_activation` that also commits, in the same round trip (`driver.commit_with`):
    the account row, which every activation of the account updates, is locked for the
    server's time only. The fee is charged without a condition; if the credits cannot cover
    it the CHECK on the accounts table refuses the UPDATE and this raises `FeeNotCovered`.
    Already settled: nothing is sent, nothing committed (the caller rolls back)."""
    if charge.capture_key not in written:
        return Activation.ALREADY_SETTLED
    fee = charge.fee if charge.fee_key in written else 0  # a fee row is written with its charge
    params = {"p_id": contact.account_id, "p_cents": charge.cents, "p_fee": fee}
    try:
        driver.commit_with(session.connection(), _SETTLE, params)
    except driver.CheckViolated as exc:
        if exc.constraint == AVAILABLE_CHECK:
            raise FeeNotCovered(contact.id) from exc
        raise
    set_committed_value(contact, "charged", True)
    return Activation.PAID


def release(session: Session, contact: Contact) -> bool:
    """Give the contact's reservation back, exactly once; True if this call did it."""
    key = settlement_key(contact.id, contact.reservation_seq)
    cents = contact.setup_cost_cents
    if not record(session, contact.account_id, contact.id, "release", cents, key):
        return False
    session.connection().execute(_RELEASE, {"p_id": contact.account_id, "p_cents": cents})
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


def ledger_page(
    session: Session, account_id: int, limit: int, before_id: int | None
) -> list[LedgerEntry]:
    """The account's ledger, newest first; after `before_id` (the last id of the previous
    page) when given."""
    query = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    return list(session.execute(query.order_by(LedgerEntry.id.desc()).limit(limit)).scalars())
