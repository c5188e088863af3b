"""The documented shapes of the API's answers, for the OpenAPI document only.

Handlers build their bodies from the views (worker/domain/views.py, worker/app/webhooks.py,
worker/app/batches.py, worker/app/contacts.py) and return them as they are: these models are
named in the routes' `responses=` and never validate or re-serialise an answer on the request
path.
`extra="forbid"` documents every shape as exact (`additionalProperties: false`), so the
schemathesis test notices a field that a view adds and this module does not declare.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.domain.contacts import ContactStatus, ContactType, DeletedReason, StepStatus
from worker.domain.webhooks import DeliveryStatus, Outcome

# Money: a decimal string with two places, never a float (`format_amount`).
Money = Annotated[
    str,
    Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["12.50"], description="decimal string"),
]
_ID = "[0-9abcdefghjkmnpqrstvwxyz]{26}"
ContactId = Annotated[str, Field(pattern=f"^ct_{_ID}$", examples=["ct_01jd3x9k2m4n5p6q7r8s9t0v1w"])]
BatchId = Annotated[str, Field(pattern=f"^bt_{_ID}$")]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ----------------------------------------------------------------------------------


class ErrorDetail(_Shape):
    code: str = Field(
        description="stable machine-readable name, e.g. `unauthenticated`, `not_found`, "
        "`invalid_request`, `insufficient_credits`, `contact_exists`, "
        "`idempotency_key_reused`, `idempotency_key_in_flight`, `payload_too_large`, "
        "`rate_limited`, `unavailable`, `not_ready`"
    )
    message: str
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="for `invalid_request` (and `not_ready`): what is wrong with each named "
        "field; absent when there is nothing to name",
    )


class ErrorResponse(_Shape):
    """Every error: `{"error": {"code", "message", "fields"?}}`."""

    error: ErrorDetail


# --- contacts --------------------------------------------------------------------------------


class ContactError(_Shape):
    code: str
    message: str


class Step(_Shape):
    name: str = Field(description="the provider step, e.g. `find_number`, `create_user`")
    status: StepStatus
    attempts: int = Field(ge=0)


class ContactRequestFields(_Shape):
    """The request as normalised: `contact_type` and only the fields its type uses."""

    contact_type: ContactType
    phone_country: str | None = None
    user_phone: str | None = None
    email_local: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    user_whatsapp_number: str | None = None
    email_provider: Literal["google", "microsoft"] | None = Field(
        default=None, description="email: the suite the account is made in"
    )
    provisioned_by: Literal["user"] | None = Field(
        default=None, description="`user`: an address the customer already has, recorded as is"
    )
    address: str | None = Field(default=None, description="the address brought (`user`)")
    phone_number_type: Literal["local", "mobile", "national", "toll_free"] | None = Field(
        default=None, description="phone: the number type bought"
    )
    documents: Literal["account", "platform"] | None = Field(
        default=None,
        description="phone, whatsapp: whose regulatory documents the number is bought with",
    )
    bundle_sid: str | None = Field(default=None, description="the Twilio bundle sent, if any")
    address_sid: str | None = Field(default=None, description="the Twilio address sent, if any")
    address_country: str | None = Field(default=None, description="that address's country")
    whatsapp_sender: Literal["dedicated", "shared"] | None = Field(
        default=None,
        description="whatsapp: a sender of its own, or one of the platform's shared pool "
        "(then `address` is the pool sender's number, shared with other users' assistants, "
        "and `user_whatsapp_number` the route from that user to this assistant)",
    )


class Contact(_Shape):
    id: ContactId
    assistant_id: int
    contact_type: ContactType
    status: ContactStatus
    address: str | None = Field(description="the E.164 number or email address, once known")
    request: ContactRequestFields
    setup_cost: Money
    monthly_cost: Money = Field(description="the fee for each UTC calendar month it is live")
    charged: bool = Field(description="the setup cost is captured")
    billed_through: str | None = Field(
        description="the last month (`YYYY-MM`) whose fee is paid", pattern=r"^\d{4}-\d{2}$"
    )
    grace_ends_at: datetime | None = Field(
        description="in `grace_period`: when it is deleted if the fees are still owed"
    )
    deleted_at: datetime | None
    deleted_reason: DeletedReason | None
    error: ContactError | None
    stuck: bool = Field(
        description="removing what the contact made at the providers (it is failing, or "
        "`deleting`) meets an error that needs an operator (see `provisioner jobs stuck`); "
        "retried every PROVISIONER_COMPENSATION_STUCK_RETRY_S"
    )
    steps: list[Step]
    batch_id: BatchId | None
    created_at: datetime
    updated_at: datetime


class ContactResponse(_Shape):
    info: Contact


class ContactListResponse(_Shape):
    info: list[Contact]


# --- credits ---------------------------------------------------------------------------------


class Credits(_Shape):
    balance: Money
    reserved: Money
    available: Money = Field(description="balance - reserved")


class CreditsResponse(_Shape):
    info: Credits


LedgerKind = Literal["top_up", "reserve", "capture", "release", "monthly_fee"]


class LedgerEntry(_Shape):
    id: str
    kind: LedgerKind
    amount: str = Field(
        description="signed decimal: `top_up` (+), `capture` (-) and `monthly_fee` (-) move the "
        "balance; `reserve` (-) and `release` (+) move only the available credits (the hold "
        "taken when a contact is accepted, given back when it fails or is cancelled; a capture "
        "settles it)",
        examples=["-1.50"],
    )
    contact_id: ContactId | None
    month: str | None = Field(description="a monthly fee's month, `YYYY-MM`")
    created_at: datetime


class LedgerResponse(_Shape):
    info: list[LedgerEntry]


# --- batches ---------------------------------------------------------------------------------


class BatchAcceptedItem(_Shape):
    index: int = Field(ge=0)
    contact_id: ContactId


class BatchRejectedItem(_Shape):
    index: int = Field(ge=0)
    error: ErrorDetail


class BatchAccepted(_Shape):
    batch_id: BatchId
    accepted: list[BatchAcceptedItem]
    rejected: list[BatchRejectedItem]


class BatchAcceptedResponse(_Shape):
    info: BatchAccepted


class BatchStatus(_Shape):
    batch_id: BatchId
    total: int = Field(ge=0)
    counts: dict[ContactStatus, int] = Field(description="the batch's contacts by status")
    done: bool = Field(description="every contact is active or failed")


class BatchStatusResponse(_Shape):
    info: BatchStatus


# --- webhooks --------------------------------------------------------------------------------


class WebhookEndpoint(_Shape):
    set: Literal[True]
    url: str
    enabled: bool
    disabled_at: datetime | None = Field(description="when a 410 answer disabled it")
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookEndpointUnset(_Shape):
    set: Literal[False]
    url: None
    enabled: Literal[False]


class WebhookEndpointResponse(_Shape):
    info: WebhookEndpoint | WebhookEndpointUnset


class WebhookEndpointSet(WebhookEndpoint):
    secret: str | None = Field(
        pattern="^whsec_", description="the signing secret on the first set only, else null"
    )


class WebhookEndpointSetResponse(_Shape):
    info: WebhookEndpointSet


class WebhookEndpointRotated(WebhookEndpoint):
    secret: str = Field(pattern="^whsec_", description="the new signing secret, shown once")


class WebhookEndpointRotatedResponse(_Shape):
    info: WebhookEndpointRotated


class WebhookDeleted(_Shape):
    deleted: bool = Field(description="false when no endpoint was set")


class WebhookDeletedResponse(_Shape):
    info: WebhookDeleted


class DeliveryAttempt(_Shape):
    attempted_at: datetime
    outcome: Outcome
    status_code: int | None
    latency_ms: int
    response: str | None = Field(description="the first KiB of the answer")
    error: str | None


class Delivery(_Shape):
    id: str
    event_id: str
    contact_id: str
    type: str = Field(examples=["contact.active", "contact.failed"])
    status: DeliveryStatus
    attempts: list[DeliveryAttempt]
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryListResponse(_Shape):
    info: list[Delivery]


# --- health ----------------------------------------------------------------------------------


class Health(_Shape):
    status: Literal["ok"]


class HealthResponse(_Shape):
    info: Health


class Readiness(_Shape):
    database: Literal["ok"]
    redis: Literal["ok"]
    twilio: Literal["ok", "credentials_refused", "unreachable"] | None = Field(
        None,
        description="Twilio's last answer to the configured credentials (checked at most"
        " once per PROVISIONER_PROVIDER_CHECK_INTERVAL_S); absent until the first check."
        " Reported only: a refusal leaves the answer 200 (the API calls no provider) and sets"
        " `provisioner_provider_credentials_ok{provider}` to 0.",
    )
    google: Literal["ok", "credentials_refused", "unreachable"] | None = Field(
        None, description="The Google Directory's last answer, as for `twilio`"
    )


class ReadinessResponse(_Shape):
    info: Readiness


class ProviderConnection(_Shape):
    provider: Literal["google", "microsoft", "whatsapp"]
    domain: str | None = None  # google and microsoft
    admin_subject: str | None = None
    client_email: str | None = None
    private_key_id: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    license_sku: str | None = None
    license_sku_id: str | None = None
    license_sku_part_number: str | None = None
    usage_location: str | None = None
    # whatsapp: the account's own WhatsApp Business Account, and how many of our senders
    # Twilio listed under it when it was set.
    waba_id: str | None = None
    senders_on_waba: int | None = None
    verified_at: datetime
    created_at: datetime
    updated_at: datetime


class ProviderConnectionResponse(_Shape):
    info: ProviderConnection


class RegulatoryDocuments(_Shape):
    country: str = Field(description="ISO 3166-1 alpha-2")
    number_type: Literal["local", "mobile", "national", "toll_free"]
    bundle_sid: str | None = None
    address_sid: str | None = None
    address_country: str | None = Field(default=None, description="the address's, per Twilio")
    bundle_status: str | None = Field(default=None, description="`twilio-approved` when checked")
    regulation_sid: str | None = None
    end_user_type: str | None = None
    verified_at: datetime
    created_at: datetime
    updated_at: datetime


class RegulatoryDocumentsResponse(_Shape):
    info: RegulatoryDocuments


class RegulatoryDocumentsListResponse(_Shape):
    info: list[RegulatoryDocuments]


def ok(
    model: type[BaseModel], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A success entry for a route's `responses=`: documented, never used to validate."""
    entry: dict[str, Any] = {"model": model, "description": description}
    if headers:
        entry["headers"] = headers
    return entry
