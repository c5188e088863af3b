"""The public shape of a contact, shared by the API, webhook payloads and the CLI.

Pure: it reads a contact's and its steps' attributes (the store's rows fit `ContactRecord` and
`StepRecord`), so the store can render an event's payload without importing the layers above.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from worker.domain.contacts import (
    ContactStatus,
    ContactType,
    StepStatus,
    deprovision_plan,
    step_plan,
)
from worker.domain.money import format_amount


class StepRecord(Protocol):
    name: str
    status: str
    attempts: int


class ContactRecord(Protocol):
    id: str
    assistant_id: int
    contact_type: str
    status: str
    address: str | None
    request: dict[str, Any]
    setup_cost_cents: int
    monthly_cost_cents: int
    charged: bool
    billed_through: str | None
    grace_ends_at: datetime | None
    deleted_at: datetime | None
    deleted_reason: str | None
    error_code: str | None
    error_message: str | None
    batch_id: str | None
    created_at: datetime
    updated_at: datetime
    stuck_since: datetime | None


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_RELEASING = (ContactStatus.DELETING.value, ContactStatus.DELETED.value)


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def contact_view(contact: ContactRecord, steps: Sequence[StepRecord]) -> dict[str, Any]:
    # Steps not yet journaled by a worker are shown as pending, in plan order; the release
    # steps once the contact is being deleted (a contact deleted before it ever ran has none
    # of either journaled, and shows none of the release steps it never needed).
    by_name = {s.name: s for s in steps}
    plan = step_plan(ContactType(contact.contact_type), contact.request)
    if contact.status in _RELEASING:
        releases = deprovision_plan(ContactType(contact.contact_type), contact.request)
        if contact.status == ContactStatus.DELETING.value or any(n in by_name for n in releases):
            plan = plan + releases
    # A contact deleted before a runner made its journal never ran those steps.
    unjournaled = (
        StepStatus.SKIPPED.value
        if contact.status == ContactStatus.DELETED.value
        else StepStatus.PENDING.value
    )
    shown = [
        {
            "name": name,
            "status": by_name[name].status if name in by_name else unjournaled,
            "attempts": by_name[name].attempts if name in by_name else 0,
        }
        for name in plan
    ]
    error = (
        {"code": contact.error_code, "message": contact.error_message or ""}
        if contact.error_code
        else None
    )
    return {
        "id": contact.id,
        "assistant_id": contact.assistant_id,
        "contact_type": contact.contact_type,
        "status": contact.status,
        "address": contact.address,
        "request": contact.request,
        "setup_cost": format_amount(contact.setup_cost_cents),
        "monthly_cost": format_amount(contact.monthly_cost_cents or 0),
        "charged": contact.charged,
        "billed_through": contact.billed_through,
        "grace_ends_at": _iso_or_none(contact.grace_ends_at),
        "deleted_at": _iso_or_none(contact.deleted_at),
        "deleted_reason": contact.deleted_reason,
        "error": error,
        # Failing or deleting, and its clean-up at the providers cannot finish until an
        # operator acts.
        "stuck": contact.stuck_since is not None,
        "steps": shown,
        "batch_id": contact.batch_id,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


class LedgerRecord(Protocol):
    id: int
    kind: str
    amount_cents: int
    contact_id: str | None
    month: str | None
    created_at: datetime


# The API's name of each stored kind, and the sign of its amount: top-ups, captures and fees
# move the balance; reserves and releases move only the available credits (a hold, and its
# return).
_LEDGER_KINDS = {
    "topup": ("top_up", 1),
    "reserve": ("reserve", -1),
    "capture": ("capture", -1),
    "release": ("release", 1),
    "monthly_fee": ("monthly_fee", -1),
}


def ledger_view(entry: LedgerRecord) -> dict[str, Any]:
    kind, sign = _LEDGER_KINDS[entry.kind]
    return {
        "id": str(entry.id),
        "kind": kind,
        "amount": format_amount(sign * entry.amount_cents),
        "contact_id": entry.contact_id,
        "month": entry.month,
        "created_at": iso(entry.created_at),
    }
