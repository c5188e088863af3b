"""Monthly fees: which UTC calendar months a live contact owes, and what a billing pass does
with an account's credits. Pure: the store applies the plan in one transaction per account."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.domain.contacts import ContactStatus


def month_of(moment: datetime) -> str:
    """The UTC calendar month of `moment`, as `YYYY-MM`."""
    return f"{moment.year:04d}-{moment.month:02d}"


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + 1:04d}-01" if number == 12 else f"{year:04d}-{number + 1:02d}"


def previous_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"


def months_owed(billed_through: str, now_month: str) -> list[str]:
    """The months after `billed_through` up to and including `now_month`, oldest first."""
    owed: list[str] = []
    month = next_month(billed_through)
    while month <= now_month:
        owed.append(month)
        month = next_month(month)
    return owed


def fee_key(contact_id: str, month: str) -> str:
    """The ledger key of one contact's fee for one month: at most one such row, ever."""
    return f"fee:{contact_id}:{month}"


@dataclass(frozen=True)
class Billable:
    """A live contact as a pass sees it."""

    contact_id: str
    status: str  # active | grace_period | deleting
    monthly_cents: int
    billed_through: str
    grace_ends_at: datetime | None


@dataclass(frozen=True)
class Fee:
    contact_id: str
    month: str
    cents: int


@dataclass(frozen=True)
class Change:
    """A contact whose row the pass updates. `moved_to`: its new status, when it moves
    (`grace_period`, back to `active`, or `deleting` when a grace period ended unpaid)."""

    contact_id: str
    billed_through: str
    grace_ends_at: datetime | None
    moved_to: ContactStatus | None = None


@dataclass
class Plan:
    fees: list[Fee] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def charged_cents(self) -> int:
        return sum(fee.cents for fee in self.fees)

    def moved_to(self, status: ContactStatus) -> list[str]:
        return [c.contact_id for c in self.changes if c.moved_to == status]


def plan_account(
    available_cents: int,
    contacts: Iterable[Billable],
    now: datetime,
    grace_days: int,
) -> Plan:
    """Charge each contact its owed months, oldest first, while the credits cover them.

    Contacts are taken in the order given (the store gives the oldest first). A contact whose
    fee the credits cannot cover enters `grace_period` (once: its end is fixed then); one in
    grace that is paid up returns to `active`; one in grace whose end has passed with fees
    still owed goes to `deleting`. A `deleting` contact pays what it can and changes nothing
    else. A type without a fee (0) owes nothing and writes no ledger row.
    """
    plan = Plan()
    now_month = month_of(now)
    for contact in contacts:
        through = contact.billed_through
        short = False
        for month in months_owed(contact.billed_through, now_month):
            if contact.monthly_cents == 0:  # no fee for this type: nothing to charge or owe
                through = month
                continue
            if contact.monthly_cents > available_cents:
                short = True
                break
            available_cents -= contact.monthly_cents
            plan.fees.append(Fee(contact.contact_id, month, contact.monthly_cents))
            through = month
        status = ContactStatus(contact.status)
        grace_ends_at = contact.grace_ends_at
        moved_to: ContactStatus | None = None
        if status == ContactStatus.ACTIVE and short:
            moved_to = ContactStatus.GRACE_PERIOD
            grace_ends_at = now + timedelta(days=grace_days)
        elif status == ContactStatus.GRACE_PERIOD and not short:
            moved_to, grace_ends_at = ContactStatus.ACTIVE, None
        elif status == ContactStatus.GRACE_PERIOD and (
            grace_ends_at is None or now >= grace_ends_at
        ):
            moved_to = ContactStatus.DELETING
        if through != contact.billed_through or moved_to is not None:
            plan.changes.append(Change(contact.contact_id, through, grace_ends_at, moved_to))
    return plan
