"""Errors of the business rules; the HTTP layer maps each code to a status once."""

from __future__ import annotations


class DomainError(Exception):
    """A request the rules refuse; `code` is the stable machine-readable name."""

    code = "invalid_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class InvalidRequest(DomainError):
    """The body breaks a validation rule; `fields` names each offending field."""

    code = "invalid_request"


class NotFound(DomainError):
    """The assistant or contact does not exist for this account."""

    code = "not_found"


class InsufficientCredits(DomainError):
    """Available credits are below the setup cost."""

    code = "insufficient_credits"


class ContactExists(DomainError):
    """The assistant already has a live contact of this type."""

    code = "contact_exists"


class IdempotencyKeyReused(DomainError):
    """The Idempotency-Key was first used with another body or route."""

    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(DomainError):
    """The first request with this Idempotency-Key has not finished."""

    code = "idempotency_key_in_flight"


class InvalidTransition(DomainError):
    """A contact status change that the state machine forbids."""

    code = "invalid_transition"


class ConnectionInUse(DomainError):
    """A live contact was made through this provider connection."""

    code = "connection_in_use"


class AddressInUse(DomainError):
    """The address is live on another contact."""

    code = "address_in_use"


class ProviderUnavailable(DomainError):
    """The provider could not be reached to check the credentials; try again."""

    code = "provider_unavailable"


class RegulatoryBundleRequired(DomainError):
    """The country and number type need a regulatory bundle the account does not have."""

    code = "regulatory_bundle_required"


class RegulatoryAddressRequired(DomainError):
    """The country and number type need an address the account does not have."""

    code = "regulatory_address_required"


class RegulatoryInUse(DomainError):
    """A live contact's number was bought with these regulatory documents."""

    code = "regulatory_in_use"
