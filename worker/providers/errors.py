"""The one exception hierarchy every provider client raises; callers decide retry or fail from
the class alone and never look at HTTP status codes.

    ProviderError
    ├── Retryable            5xx, timeouts, dropped connections, incomplete responses
    │   └── RateLimited      429 (or the provider's rate-limit error), with `retry_after`
    └── Permanent            will fail the same way again; `code` is shown to users
        └── NotFound         the resource does not exist (or no longer exists)

Messages come from the provider's error body or from us, never from request headers: no
credential, token or password ever reaches an exception.
"""

from __future__ import annotations

# Stable, lowercase codes of `Permanent` errors that surface in a contact's `error.code`.
NUMBER_UNAVAILABLE = "number_unavailable"
NO_NUMBERS_AVAILABLE = "no_numbers_available"
EMAIL_TAKEN = "email_taken"
INVALID_REQUEST = "invalid_request"
AUTH_FAILED = "auth_failed"
SENDER_REJECTED = "sender_rejected"
WABA_INVALID = "waba_invalid"  # Twilio cannot use the WhatsApp Business Account
WABA_SENDER_LIMIT = "waba_sender_limit"  # the WABA holds as many senders as Meta allows
NOT_FOUND = "not_found"
CONFLICT = "conflict"
UNEXPECTED_RESPONSE = "unexpected_response"
# A purchase Twilio refused for regulatory reasons (its code is in the message).
BUNDLE_REQUIRED = "regulatory_bundle_refused"  # 21649: no approved bundle fit for the number
ADDRESS_REQUIRED = "regulatory_address_refused"  # 21631: no address meeting its requirement
ADDRESS_INVALID = "regulatory_address_invalid"  # 21628, 21629: the address failed validation
# A number search Twilio answered 404: the country has no list of that type (any more).
NUMBER_TYPE_NOT_SOLD = "number_type_not_sold"

# Codes of `Retryable` errors (for logs and metrics; nothing branches on them).
PROVIDER_UNAVAILABLE = "provider_unavailable"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
INCOMPLETE_RESPONSE = "incomplete_response"
RATE_LIMITED = "rate_limited"

_MAX_MESSAGE = 300


class ProviderError(Exception):
    """A provider call failed; `provider`, a stable `code`, a short `message`, the HTTP `status`."""

    def __init__(
        self,
        provider: str,
        code: str,
        message: str,
        status: int | None = None,
        *,
        provider_code: str | None = None,
    ) -> None:
        self.provider = provider
        self.code = code
        self.message = message[:_MAX_MESSAGE]
        self.status = status
        # The provider's own error code (Twilio's 21422, Google's "duplicate"), for logs.
        self.provider_code = provider_code
        super().__init__(f"{provider}: {code}: {self.message}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, code={self.code!r}, "
            f"status={self.status!r}, provider_code={self.provider_code!r})"
        )


class Retryable(ProviderError):
    """A transient failure: the same call may succeed later."""


class RateLimited(Retryable):
    """The provider throttled us; `retry_after` is the seconds it asked us to wait, if it said."""

    def __init__(
        self,
        provider: str,
        code: str,
        message: str,
        status: int | None = None,
        *,
        retry_after: float | None = None,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(provider, code, message, status, provider_code=provider_code)
        self.retry_after = retry_after


class Permanent(ProviderError):
    """The call will fail the same way if repeated; `code` is one of the stable codes above."""


class NotFound(Permanent):
    """The addressed resource does not exist."""

    code_of_kind = NOT_FOUND

    def __init__(
        self,
        provider: str,
        message: str = "resource not found",
        status: int | None = 404,
        *,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(provider, self.code_of_kind, message, status, provider_code=provider_code)


class NoSuchNumberList(NotFound):
    """A number search's 404: the country has no list of that type (any more)."""

    code_of_kind = NUMBER_TYPE_NOT_SOLD
