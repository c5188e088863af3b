"""Shared by the two Twilio clients: HTTP basic auth and the one classification of Twilio's
error responses (`{"code", "message", "more_info", "status"}`) into our error hierarchy."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import SecretStr

from worker.providers.errors import (
    ADDRESS_INVALID,
    ADDRESS_REQUIRED,
    AUTH_FAILED,
    BUNDLE_REQUIRED,
    CONFLICT,
    INVALID_REQUEST,
    NUMBER_UNAVAILABLE,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    SENDER_REJECTED,
    UNEXPECTED_RESPONSE,
    NotFound,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.providers.http import ProviderClient, json_object, parse_retry_after

PROVIDER = "twilio"

# Twilio error codes we act on (https://www.twilio.com/docs/api/errors).
AUTHENTICATION_ERROR = 20003
RESOURCE_NOT_FOUND = 20404
TOO_MANY_REQUESTS = 20429
PHONE_NUMBER_NOT_AVAILABLE = 21422
# Regulatory refusals of a purchase: Permanent, named by Twilio's code in the message.
REGULATORY = {
    21649: BUNDLE_REQUIRED,  # a twilio-approved bundle for the number's country and type
    21631: ADDRESS_REQUIRED,  # an address meeting the number's address requirement
    21628: ADDRESS_INVALID,  # the address cannot be validated
    21629: ADDRESS_INVALID,  # the same, with a suggested address
}
# 63xxx: WhatsApp / Channels errors (63100 validation, 63110 already registered, ...).
_CHANNELS_ERRORS = range(63000, 64000)


def raise_for_twilio(response: httpx.Response) -> None:
    """Raise the error a non-2xx Twilio response means; the only place that reads Twilio
    status and error codes."""
    if response.is_success:
        return
    status = response.status_code
    body = json_object(response)
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) else None
    provider_code = str(raw_code) if raw_code is not None else None
    message = str(body.get("message") or response.reason_phrase or f"HTTP {status}")

    if status == 429 or code == TOO_MANY_REQUESTS:
        raise RateLimited(
            PROVIDER,
            RATE_LIMITED,
            message,
            status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            provider_code=provider_code,
        )
    if status >= 500 or status == 408:
        raise Retryable(
            PROVIDER, PROVIDER_UNAVAILABLE, message, status, provider_code=provider_code
        )
    if status in (401, 403) or code == AUTHENTICATION_ERROR:
        raise Permanent(PROVIDER, AUTH_FAILED, message, status, provider_code=provider_code)
    if status == 404 or code == RESOURCE_NOT_FOUND:
        raise NotFound(PROVIDER, message, status, provider_code=provider_code)
    if code in REGULATORY:
        raise Permanent(
            PROVIDER,
            REGULATORY[code],
            f"Twilio {code}: {message}",
            status,
            provider_code=provider_code,
        )
    if code == PHONE_NUMBER_NOT_AVAILABLE:
        raise Permanent(PROVIDER, NUMBER_UNAVAILABLE, message, status, provider_code=provider_code)
    if code is not None and code in _CHANNELS_ERRORS:
        raise Permanent(PROVIDER, SENDER_REJECTED, message, status, provider_code=provider_code)
    if status == 409:
        raise Permanent(PROVIDER, CONFLICT, message, status, provider_code=provider_code)
    if status < 400:
        raise Permanent(PROVIDER, UNEXPECTED_RESPONSE, message, status, provider_code=provider_code)
    raise Permanent(PROVIDER, INVALID_REQUEST, message, status, provider_code=provider_code)


class TwilioClient(ProviderClient):
    """Base of the Twilio clients: basic auth with the Account SID and Auth Token, or with an
    API key SID and secret (then `auth_token` is the key's secret)."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        auth_token: SecretStr,
        timeout: httpx.Timeout,
        max_connections: int = 100,
        api_key_sid: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.account_sid = account_sid
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
            auth=httpx.BasicAuth(api_key_sid or account_sid, auth_token.get_secret_value()),
            raise_for_status=raise_for_twilio,
            transport=transport,
        )
        self.connection = account_sid  # Twilio's limits are per account


def require(body: dict[str, object], key: str) -> str:
    """A string field a 2xx Twilio body must carry; a body without it is not Twilio's."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise Permanent(PROVIDER, UNEXPECTED_RESPONSE, f"response has no {key!r}")
    return value


def rfc2822(value: object) -> datetime | None:
    """A date of Twilio's 2010 API ("Thu, 30 Jul 2015 20:12:31 +0000"), or None."""
    if not isinstance(value, str):
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
