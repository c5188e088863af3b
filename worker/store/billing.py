"""The billing pass's writes: an account's owed monthly fees charged in one transaction under
its row lock, with the status moves they cause (grace period, back to active, unpaid).

Exactly once: every fee is a ledger row keyed by contact and month (`fee:<contact>:<YYYY-MM>`),
inserted with ON CONFLICT DO NOTHING, and the balance drops by the fees actually inserted; the
contact's `billed_through` moves in the same transaction. Two passes at once serialise on the
account's row lock (the second finds nothing owed), a pass killed halfway rolls back its
account, and a pass run again for the same month inserts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker.domain.billing import Billable, Plan, fee_key, month_of, plan_account
from worker.domain.contacts import BILLED_STATUSES, ContactStatus, DeletedReason
from worker.store.models import Account, Contact, ContactStep, LedgerEntry
from worker.store.outbox import outbox
from worker.store.pipeline import step_of

_contacts: Table = Contact.__table__  # type: ignore[assignment]
_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]
_accounts: Table = Account.__table__  # type: ignore[assignment]
_steps: Table = ContactStep.__table__  # type: ignore[assignment]
_c = _contacts.c
_BILLED = [s.value for s in BILLED_STATUSES]

_IN_CHUNK = 1000  # ids per UPDATE ... WHERE id IN (...)


@dataclass
class Billed:
    """What one account's pass did."""

    fees: int = 0  # fee rows inserted (months charged)
    charged_cents: int = 0
    grace_period: list[str] = field(default_factory=list)  # contacts that entered grace
    restored: list[str] = field(default_factory=list)  # back to active
    unpaid: list[str] = field(default_factory=list)  # moved to deleting
    events: list[str] = field(default_factory=list)  # outbox ids to publish
    more: bool = False  # the account has more due contacts than this pass took
    last_id: str = ""  # the last contact taken: the next call goes on after it

    def moves(self) -> list[tuple[str, str]]:
        """(contact id, new status) of every contact this pass moved."""
        return [
            *((c, ContactStatus.GRACE_PERIOD.value) for c in self.grace_period),
            *((c, ContactStatus.ACTIVE.value) for c in self.restored),
            *((c, ContactStatus.DELETING.value) for c in self.unpaid),
        ]


def due_accounts(session: Session, now: datetime, after: int, limit: int) -> list[int]:
    """Accounts with a live contact not paid through `now`'s month, in id order after `after`."""
    month = month_of(now)
    return list(
        session.execute(
            select(_c.account_id)
            .where(
                _c.status.in_(_BILLED),
                _c.billed_through < month,
                _c.account_id > after,
            )
            .group_by(_c.account_id)
            .order_by(_c.account_id)
            .limit(limit)
        ).scalars()
    )


def bill_account(
    session: Session,
    account_id: int,
    now: datetime,
    grace_days: int,
    limit: int = 5000,
    after_id: str = "",
) -> Billed:
    """Charge up to `limit` of the account's due contacts after `after_id` (oldest first: ids
    are time-ordered) what they owe."""
    month = month_of(now)
    account = session.execute(
        select(_accounts.c.balance_cents, _accounts.c.reserved_cents)
        .where(_accounts.c.id == account_id)
        .with_for_update()
    ).one()
    rows = session.execute(
        select(_c.id, _c.status, _c.monthly_cost_cents, _c.billed_through, _c.grace_ends_at)
        .where(
            _c.account_id == account_id,
            _c.status.in_(_BILLED),
            _c.billed_through < month,
            _c.id > after_id,
        )
        .order_by(_c.id)
        .limit(limit + 1)
    ).all()
    billed = Billed(
        more=len(rows) > limit, last_id=rows[min(limit, len(rows)) - 1].id if rows else ""
    )
    billables = [
        Billable(r.id, r.status, r.monthly_cost_cents, r.billed_through, r.grace_ends_at)
        for r in rows[:limit]
    ]
    plan = plan_account(account.balance_cents - account.reserved_cents, billables, now, grace_days)
    _charge(session, account_id, plan, now, billed)
    _apply(session, plan, billables, now, billed)
    return billed


def _charge(session: Session, account_id: int, plan: Plan, now: datetime, billed: Billed) -> None:
    if not plan.fees:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(_ledger)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(_ledger.c.key, _ledger.c.amount_cents)
    )
    rows = [
        {
            "account_id": account_id,
            "contact_id": fee.contact_id,
            "kind": "monthly_fee",
            "amount_cents": fee.cents,
            "key": fee_key(fee.contact_id, fee.month),
            "month": fee.month,
            "created_at": now,
        }
        for fee in plan.fees
    ]
    inserted = session.execute(stmt, rows).all()
    billed.fees = len(inserted)
    billed.charged_cents = sum(r.amount_cents for r in inserted)
    if billed.charged_cents:
        session.execute(
            update(_accounts)
            .where(_accounts.c.id == account_id)
            .values(balance_cents=_accounts.c.balance_cents - billed.charged_cents)
        )


def _apply(
    session: Session,
    plan: Plan,
    billables: list[Billable],
    now: datetime,
    billed: Billed,
) -> None:
    if not plan.changes:
        return
    # Contacts that change alike are updated together: in a month where everyone pays, one
    # statement per chunk. The status is matched as read, so a contact a DELETE moved meanwhile
    # keeps its new status (its fee stays charged: it was live that month).
    old = {b.contact_id: b.status for b in billables}
    groups: dict[tuple[Any, ...], list[str]] = {}
    for change in plan.changes:
        key = (old[change.contact_id], change.billed_through, change.moved_to, change.grace_ends_at)
        groups.setdefault(key, []).append(change.contact_id)
    connection = session.connection()
    for (status, through, moved_to, grace_ends_at), ids in groups.items():
        values: dict[str, Any] = {"billed_through": through, "updated_at": now}
        if moved_to is not None:
            values.update(status=moved_to.value, grace_ends_at=grace_ends_at)
            if moved_to == ContactStatus.DELETING:
                # No lease and no due time: the reconciler takes it at once if the pass's
                # publish is lost (a pass may run as of another time than now).
                values["deleted_reason"] = DeletedReason.UNPAID.value
        for start in range(0, len(ids), _IN_CHUNK):
            connection.execute(
                update(_contacts)
                .where(_c.id.in_(ids[start : start + _IN_CHUNK]), _c.status == status)
                .values(values)
            )
    billed.grace_period = plan.moved_to(ContactStatus.GRACE_PERIOD)
    billed.restored = plan.moved_to(ContactStatus.ACTIVE)
    billed.unpaid = plan.moved_to(ContactStatus.DELETING)
    moved = billed.grace_period + billed.restored
    if moved:
        _events(session, moved, now, billed.events)


def _events(session: Session, contact_ids: list[str], now: datetime, events: list[str]) -> None:
    """`contact.grace_period` / `contact.active` for the contacts that moved (as they are now:
    a concurrent DELETE that won the race leaves its contact out)."""
    contacts = (
        session.execute(
            select(Contact).where(
                Contact.id.in_(contact_ids),
                Contact.status.in_([ContactStatus.GRACE_PERIOD.value, ContactStatus.ACTIVE.value]),
            )
        )
        .scalars()
        .all()
    )
    steps: dict[str, list[ContactStep]] = {c.id: [] for c in contacts}
    for row in session.execute(
        select(*_steps.c).where(_steps.c.contact_id.in_(list(steps))).order_by(_steps.c.position)
    ):
        steps[row.contact_id].append(step_of(row))
    for contact in contacts:
        outbox(session, contact, steps[contact.id], now, events)
