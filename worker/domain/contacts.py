"""The contact's life: types, statuses, the transitions between them and the steps per type."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from worker.domain.errors import InvalidTransition


class ContactType(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    WHATSAPP = "whatsapp"


class ContactStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    COMPENSATED = "compensated"


# Statuses that hold the assistant's one slot per contact type.
LIVE_STATUSES = frozenset({ContactStatus.PENDING, ContactStatus.PROVISIONING, ContactStatus.ACTIVE})
TERMINAL_STATUSES = frozenset({ContactStatus.ACTIVE, ContactStatus.FAILED})

# Forward only. `failed -> pending` is the operator's explicit retry (`provisioner jobs retry`),
# which reserves the setup cost again; nothing automatic ever takes it.
_TRANSITIONS: dict[ContactStatus, frozenset[ContactStatus]] = {
    ContactStatus.PENDING: frozenset({ContactStatus.PROVISIONING, ContactStatus.FAILED}),
    ContactStatus.PROVISIONING: frozenset({ContactStatus.ACTIVE, ContactStatus.FAILED}),
    ContactStatus.ACTIVE: frozenset(),
    ContactStatus.FAILED: frozenset({ContactStatus.PENDING}),
}


def can_transition(current: ContactStatus, target: ContactStatus) -> bool:
    return target in _TRANSITIONS[current]


def check_transition(current: ContactStatus, target: ContactStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(f"a {current} contact cannot become {target}")


# The provider steps of each type, in order. Each is idempotent on its own (look up by tag,
# then create), so the pipeline may re-run any of them after a crash.
STEP_PLANS: dict[ContactType, tuple[str, ...]] = {
    ContactType.PHONE: ("find_number", "buy_number"),
    ContactType.EMAIL: ("create_user", "confirm_user"),
    ContactType.WHATSAPP: ("find_number", "buy_number", "create_sender", "await_sender_online"),
}


# Steps that only read from the provider (a search): running one changes nothing there, so
# it may run before the runner holds the contact's lease (its result is journaled in the
# transaction that takes the lease; a runner that loses the race just drops it).
READ_ONLY_STEPS = frozenset({"find_number"})


# A Microsoft 365 account needs a licence (and so a mailbox) after it exists.
MICROSOFT_EMAIL_PLAN = ("create_user", "assign_license", "confirm_user")


def step_plan(
    contact_type: ContactType, request: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The steps of a contact of `contact_type` with the normalised `request`: none for an
    address the customer brought (`provisioned_by: "user"`), Microsoft's for a Microsoft 365
    email contact."""
    if request is not None:
        if request.get("provisioned_by") == "user":
            return ()
        if contact_type is ContactType.EMAIL and request.get("email_provider") == "microsoft":
            return MICROSOFT_EMAIL_PLAN
    return STEP_PLANS[contact_type]


def read_only_first_step(contact_type: ContactType) -> str | None:
    """The type's first step if it only reads from the provider, else None."""
    first = STEP_PLANS[contact_type][0]
    return first if first in READ_ONLY_STEPS else None
