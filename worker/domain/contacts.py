"""The contact's life: types, statuses, the transitions between them and the steps per type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.domain.errors import InvalidTransition
from worker.domain.whatsapp_pool import is_shared


class ContactType(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    WHATSAPP = "whatsapp"


class ContactStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    GRACE_PERIOD = "grace_period"  # a monthly fee is unpaid; the contact keeps working
    DELETING = "deleting"  # its provider resources are being released
    FAILED = "failed"
    DELETED = "deleted"


class DeletedReason(StrEnum):
    REQUESTED = "requested"  # DELETE of a live contact
    CANCELLED = "cancelled"  # DELETE while it was still pending or provisioning
    UNPAID = "unpaid"  # a grace period that ended with fees still owed


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    COMPENSATED = "compensated"


# Statuses that hold the assistant's one slot per contact type: until a contact is `failed` or
# `deleted`, the assistant cannot ask for another of its type.
LIVE_STATUSES = frozenset(
    {
        ContactStatus.PENDING,
        ContactStatus.PROVISIONING,
        ContactStatus.ACTIVE,
        ContactStatus.GRACE_PERIOD,
        ContactStatus.DELETING,
    }
)
# Statuses in which a contact holds its provider resources and owes a fee for every month.
BILLED_STATUSES = frozenset(
    {ContactStatus.ACTIVE, ContactStatus.GRACE_PERIOD, ContactStatus.DELETING}
)
# Statuses a runner works on: provisioning (pending, provisioning) or releasing (deleting).
RUNNABLE_STATUSES = frozenset(
    {ContactStatus.PENDING, ContactStatus.PROVISIONING, ContactStatus.DELETING}
)
# Where nothing moves a contact any more (but the operator's retry of a failed one).
FINAL_STATUSES = frozenset({ContactStatus.FAILED, ContactStatus.DELETED})
# Where provisioning has come to an end (a batch is done when all its contacts are here).
SETTLED_STATUSES = frozenset(
    {ContactStatus.ACTIVE, ContactStatus.GRACE_PERIOD, ContactStatus.FAILED, ContactStatus.DELETED}
)
# Statuses a DELETE moves to `deleting`; from pending or provisioning it is a cancellation.
DELETABLE_STATUSES = frozenset(
    {
        ContactStatus.PENDING,
        ContactStatus.PROVISIONING,
        ContactStatus.ACTIVE,
        ContactStatus.GRACE_PERIOD,
    }
)

# `failed -> pending` is the operator's explicit retry (`provisioner jobs retry`), which
# reserves the setup cost again; nothing automatic ever takes it. `grace_period -> active` is
# the one other edge back: the fees were paid.
_TRANSITIONS: dict[ContactStatus, frozenset[ContactStatus]] = {
    ContactStatus.PENDING: frozenset(
        {ContactStatus.PROVISIONING, ContactStatus.FAILED, ContactStatus.DELETING}
    ),
    ContactStatus.PROVISIONING: frozenset(
        {ContactStatus.ACTIVE, ContactStatus.FAILED, ContactStatus.DELETING}
    ),
    ContactStatus.ACTIVE: frozenset({ContactStatus.GRACE_PERIOD, ContactStatus.DELETING}),
    ContactStatus.GRACE_PERIOD: frozenset({ContactStatus.ACTIVE, ContactStatus.DELETING}),
    ContactStatus.DELETING: frozenset({ContactStatus.DELETED}),
    ContactStatus.FAILED: frozenset({ContactStatus.PENDING}),
    ContactStatus.DELETED: frozenset(),
}


def deleted_reason_for(current: ContactStatus) -> DeletedReason:
    """Why a DELETE of a contact in `current` ends it: a cancellation before it was active."""
    if current in (ContactStatus.PENDING, ContactStatus.PROVISIONING):
        return DeletedReason.CANCELLED
    return DeletedReason.REQUESTED


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


# The steps that release what a contact holds, in order. Each finds its resource by the tag
# the provisioning steps set (not by the journal: a create whose answer was lost is in no
# journal), and a resource already gone counts as released.
DEPROVISION_PLANS: dict[ContactType, tuple[str, ...]] = {
    ContactType.PHONE: ("release_number",),
    ContactType.EMAIL: ("delete_user",),
    ContactType.WHATSAPP: ("delete_sender", "release_number"),
}
# A WhatsApp contact given a sender of the shared pool (worker/domain/whatsapp_pool.py): one
# step takes (or grows) a pool sender and routes the user to it; its release removes only the
# route, never the shared sender or its number.
POOL_PLAN = ("assign_pool_sender",)
POOL_RELEASE_PLAN = ("release_pool_route",)
# Journal positions of the release steps: after every provisioning step.
DEPROVISION_POSITION = 100

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
        if contact_type is ContactType.WHATSAPP and is_shared(request):
            return POOL_PLAN
    return STEP_PLANS[contact_type]


def deprovision_plan(
    contact_type: ContactType, request: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The release steps of a contact of `contact_type` with the normalised `request`."""
    if contact_type is ContactType.WHATSAPP and is_shared(request):
        return POOL_RELEASE_PLAN
    return DEPROVISION_PLANS[contact_type]


def read_only_first_step(contact_type: ContactType) -> str | None:
    """The type's first step if it only reads from the provider, else None."""
    first = STEP_PLANS[contact_type][0]
    return first if first in READ_ONLY_STEPS else None


@dataclass(frozen=True)
class FirstRun:
    """What a contact's first run needs before it reads the contact's row: the inputs of its
    type's read-only first step (a number search reads only the country). The API sends it in
    the task message, and the worker runs that step ahead of the lease on it alone.

    A hint, never the truth: the lease decides whether this run is the first (a redelivered
    message carries the same hint, and its search is then not journaled), and a message
    without one (a retry, the reconciler's, an older API's) is run as before.
    """

    contact_type: ContactType
    phone_country: str | None
    bulk: bool  # a batch's contact: its provider requests draw on the bulk share

    @classmethod
    def of(
        cls, contact_type: str, request: Mapping[str, Any] | None, *, bulk: bool
    ) -> FirstRun | None:
        """The hint for a new contact, or None when its first step is not read-only."""
        kind = ContactType(contact_type)
        if read_only_first_step(kind) is None or step_plan(kind, request) != STEP_PLANS[kind]:
            return None  # brought, Microsoft's, a pool sender: not the type's plain plan
        if (request or {}).get("phone_number_type", "local") != "local" or (request or {}).get(
            "documents"
        ):
            # Its search needs more than the country (the list, the documents' address):
            # the worker reads the row first.
            return None
        country = (request or {}).get("phone_country")
        return cls(kind, str(country) if country else None, bulk)

    def header(self) -> dict[str, Any]:
        return {"type": self.contact_type.value, "country": self.phone_country, "bulk": self.bulk}

    @classmethod
    def from_header(cls, value: object) -> FirstRun | None:
        """The hint a message carries; None for none, or for one this version cannot read."""
        if not isinstance(value, Mapping):
            return None
        country = value.get("country")
        try:
            kind = ContactType(value.get("type"))
        except ValueError:
            return None
        if read_only_first_step(kind) is None or not isinstance(value.get("bulk"), bool):
            return None
        if country is not None and not (isinstance(country, str) and len(country) == 2):
            return None
        return cls(kind, country, value["bulk"])

    @property
    def request(self) -> dict[str, Any]:
        """The contact's request as far as the first step reads it."""
        return {"phone_country": self.phone_country} if self.phone_country else {}
