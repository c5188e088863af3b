"""Clients wired to `httpx.MockTransport` handlers, for tests of pure client logic.

Each fixture returns a factory taking the handler that plays the provider.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from worker.providers import GoogleDirectory, StaticTokenSource, TwilioNumbers, TwilioSenders
from worker.providers.google_directory import TokenSource
from worker.providers.http import make_timeout

Handler = Callable[[httpx.Request], httpx.Response]
ACCOUNT = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-secret-token-value"
GOOGLE_TOKEN = "ya29.google-secret-token"
TIMEOUT = make_timeout(1.0, 1.0)


@pytest.fixture
def numbers_client() -> Callable[..., TwilioNumbers]:
    def build(handler: Handler, **kwargs: object) -> TwilioNumbers:
        return TwilioNumbers(
            base_url="https://api.twilio.test",
            account_sid=ACCOUNT,
            auth_token=SecretStr(TWILIO_TOKEN),
            timeout=TIMEOUT,
            transport=httpx.MockTransport(handler),
            **kwargs,  # type: ignore[arg-type]
        )

    return build


@pytest.fixture
def senders_client() -> Callable[[Handler], TwilioSenders]:
    def build(handler: Handler) -> TwilioSenders:
        return TwilioSenders(
            base_url="https://messaging.twilio.test",
            account_sid=ACCOUNT,
            auth_token=SecretStr(TWILIO_TOKEN),
            timeout=TIMEOUT,
            transport=httpx.MockTransport(handler),
        )

    return build


@pytest.fixture
def directory_client() -> Callable[..., GoogleDirectory]:
    def build(handler: Handler, source: TokenSource | None = None) -> GoogleDirectory:
        return GoogleDirectory(
            base_url="https://admin.googleapis.test",
            token_source=source or StaticTokenSource(SecretStr(GOOGLE_TOKEN)),
            timeout=TIMEOUT,
            transport=httpx.MockTransport(handler),
        )

    return build


def twilio_error(status: int, code: int, message: str = "error", **headers: str) -> httpx.Response:
    """A Twilio error response, as the REST API sends it."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return httpx.Response(status, json=body, headers=headers)


def google_error(
    status: int, reason: str, message: str = "error", **headers: str
) -> httpx.Response:
    """A Google API error response (`{"error": {"code", "message", "errors": [...]}}`)."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def twilio_error_response() -> Callable[..., httpx.Response]:
    return twilio_error


@pytest.fixture
def google_error_response() -> Callable[..., httpx.Response]:
    return google_error
