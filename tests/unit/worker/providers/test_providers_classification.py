"""Each provider's responses map to exactly one error class and code, decided in one place."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from worker.providers import (
    GoogleDirectory,
    NotFound,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
    TwilioNumbers,
)

TWILIO_CASES = [
    # (status, twilio code, headers, expected class, expected code)
    (500, 20500, {}, Retryable, "provider_unavailable"),
    (503, 20503, {}, Retryable, "provider_unavailable"),
    (429, 20429, {"Retry-After": "3"}, RateLimited, "rate_limited"),
    (400, 20429, {}, RateLimited, "rate_limited"),
    (401, 20003, {}, Permanent, "auth_failed"),
    (403, 20403, {}, Permanent, "auth_failed"),
    (404, 20404, {}, NotFound, "not_found"),
    (400, 21422, {}, Permanent, "number_unavailable"),
    (400, 63100, {}, Permanent, "sender_rejected"),
    (409, 20409, {}, Permanent, "conflict"),
    (400, 21421, {}, Permanent, "invalid_request"),
    (302, 0, {"Location": "https://elsewhere.test/"}, Permanent, "unexpected_response"),
]


@pytest.mark.parametrize(("status", "twilio_code", "headers", "cls", "code"), TWILIO_CASES)
def test_twilio_response_classification(
    numbers_client: Callable[..., TwilioNumbers],
    twilio_error_response: Callable[..., httpx.Response],
    status: int,
    twilio_code: int,
    headers: dict[str, str],
    cls: type[ProviderError],
    code: str,
) -> None:
    client = numbers_client(lambda request: twilio_error_response(status, twilio_code, **headers))
    with pytest.raises(cls) as caught:
        client.search_available("US")
    error = caught.value
    assert type(error) is cls
    assert (error.provider, error.code, error.status) == ("twilio", code, status)


def test_twilio_rate_limit_carries_retry_after(
    numbers_client: Callable[..., TwilioNumbers],
    twilio_error_response: Callable[..., httpx.Response],
) -> None:
    client = numbers_client(lambda r: twilio_error_response(429, 20429, **{"Retry-After": "3"}))
    with pytest.raises(RateLimited) as caught:
        client.find(friendly_name="c_1")
    assert caught.value.retry_after == 3.0


def test_twilio_rate_limit_without_header_has_no_retry_after(
    numbers_client: Callable[..., TwilioNumbers],
    twilio_error_response: Callable[..., httpx.Response],
) -> None:
    client = numbers_client(lambda r: twilio_error_response(429, 20429))
    with pytest.raises(RateLimited) as caught:
        client.find(friendly_name="c_1")
    assert caught.value.retry_after is None


def test_twilio_error_without_json_body_is_still_classified(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    client = numbers_client(lambda r: httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(Retryable) as caught:
        client.search_available("US")
    assert caught.value.status == 502


def test_twilio_auth_failure_message_has_no_credentials(
    numbers_client: Callable[..., TwilioNumbers],
    twilio_error_response: Callable[..., httpx.Response],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return twilio_error_response(401, 20003, "Authenticate")

    client = numbers_client(handler)
    with pytest.raises(Permanent) as caught:
        client.search_available("US")
    assert seen[0].headers["Authorization"].startswith("Basic ")
    for text in (str(caught.value), repr(caught.value), caught.value.message):
        assert "twilio-secret-token-value" not in text
        assert seen[0].headers["Authorization"] not in text


GOOGLE_CASES = [
    # (status, reason, headers, expected class, expected code)
    (500, "backendError", {}, Retryable, "provider_unavailable"),
    (503, "backendError", {}, Retryable, "provider_unavailable"),
    (429, "rateLimitExceeded", {"Retry-After": "2"}, RateLimited, "rate_limited"),
    (403, "rateLimitExceeded", {}, RateLimited, "rate_limited"),
    (403, "userRateLimitExceeded", {}, RateLimited, "rate_limited"),
    (403, "quotaExceeded", {}, RateLimited, "rate_limited"),
    (401, "authError", {}, Permanent, "auth_failed"),
    (403, "forbidden", {}, Permanent, "auth_failed"),
    (404, "notFound", {}, NotFound, "not_found"),
    (409, "duplicate", {}, Permanent, "email_taken"),
    (400, "invalid", {}, Permanent, "invalid_request"),
]


@pytest.mark.parametrize(("status", "reason", "headers", "cls", "code"), GOOGLE_CASES)
def test_google_response_classification(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
    status: int,
    reason: str,
    headers: dict[str, str],
    cls: type[ProviderError],
    code: str,
) -> None:
    client = directory_client(lambda request: google_error_response(status, reason, **headers))
    with pytest.raises(cls) as caught:
        client.get_user("a@example.com")
    error = caught.value
    assert type(error) is cls
    assert (error.provider, error.code, error.status) == ("google", code, status)
    assert error.provider_code == reason


def test_google_rate_limit_carries_retry_after(
    directory_client: Callable[..., GoogleDirectory],
    google_error_response: Callable[..., httpx.Response],
) -> None:
    client = directory_client(
        lambda r: google_error_response(429, "rateLimitExceeded", **{"Retry-After": "2"})
    )
    with pytest.raises(RateLimited) as caught:
        client.get_user("a@example.com")
    assert caught.value.retry_after == 2.0


def test_google_resource_exhausted_status_is_rate_limited(
    directory_client: Callable[..., GoogleDirectory],
) -> None:
    body = {"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}
    client = directory_client(lambda r: httpx.Response(429, json=body))
    with pytest.raises(RateLimited):
        client.delete_user("a@example.com")


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
)
def test_transport_failures_are_retryable_for_every_client(
    numbers_client: Callable[..., TwilioNumbers],
    directory_client: Callable[..., GoogleDirectory],
    error: Exception,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(Retryable):
        numbers_client(handler).buy("+15550000001", "c_1")
    with pytest.raises(Retryable):
        directory_client(handler).insert_user("a@example.com", "A", "B", "c_1")


def test_success_status_with_unreadable_body_is_retryable(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    client = numbers_client(lambda r: httpx.Response(201, text='{"sid": "PN1", "phone_'))
    with pytest.raises(Retryable) as caught:
        client.buy("+15550000001", "c_1")
    assert caught.value.code == "incomplete_response"


def test_success_body_that_is_not_the_resource_is_permanent(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    client = numbers_client(lambda r: httpx.Response(201, json={"hello": "world"}))
    with pytest.raises(Permanent) as caught:
        client.buy("+15550000001", "c_1")
    assert caught.value.code == "unexpected_response"
