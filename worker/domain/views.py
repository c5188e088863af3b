"""The public shape of a contact, shared by the API, webhook payloads and the CLI.

Pure: it reads a contact's and its steps' attributes (the store's rows fit `ContactRecord` and
`StepRecord`), so the store can render an event's payload without importing the layers above.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from worker.domain.contacts import ContactType, StepStatus, step_plan
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
    charged: bool
    error_code: str | None
    error_message: str | None
    batch_id: str | None
    created_at: datetime
    updated_at: datetime


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def contact_view(contact: ContactRecord, steps: Sequence[StepRecord]) -> dict[str, Any]:
    # Steps not yet journaled by a worker are shown as pending, in plan order.
    by_name = {s.name: s for s in steps}
    shown = [
        {
            "name": name,
            "status": by_name[name].status if name in by_name else StepStatus.PENDING.value,
            "attempts": by_name[name].attempts if name in by_name else 0,
        }
        for name in step_plan(ContactType(contact.contact_type), contact.request)
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
        "charged": contact.charged,
        "error": error,
        "steps": shown,
        "batch_id": contact.batch_id,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }
