"""Graph's answers classified once, in the client (pure: hand-made responses)."""

from __future__ import annotations

import httpx
import pytest

from worker.providers import EMAIL_TAKEN, AUTH_FAILED, NotFound, Permanent, RateLimited, Retryable
from worker.providers.microsoft_graph import LICENSE_UNAVAILABLE, raise_for_graph


def graph(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


def test_429_is_rate_limited_with_its_retry_after():
    with pytest.raises(RateLimited) as caught:
        raise_for_graph(graph(429, "TooManyRequests", "slow down", **{"Retry-After": "7"}))
    assert caught.value.retry_after == 7


def test_resource_not_found_is_not_found():
    with pytest.raises(NotFound):
        raise_for_graph(graph(404, "Request_ResourceNotFound", "Resource 'x' does not exist"))


def test_a_user_principal_name_conflict_is_email_taken():
    message = "Another object with the same value for property userPrincipalName already exists."
    with pytest.raises(Permanent) as caught:
        raise_for_graph(graph(400, "Request_BadRequest", message))
    assert caught.value.code == EMAIL_TAKEN


def test_no_licences_left_is_license_unavailable():
    message = "Subscription with SKU abc does not have any available licenses."
    with pytest.raises(Permanent) as caught:
        raise_for_graph(graph(400, "Request_BadRequest", message))
    assert caught.value.code == LICENSE_UNAVAILABLE


@pytest.mark.parametrize("status", [401, 403])
def test_refused_tokens_and_missing_permissions_are_auth_failed(status):
    with pytest.raises(Permanent) as caught:
        raise_for_graph(graph(status, "Authorization_RequestDenied", "Insufficient privileges"))
    assert caught.value.code == AUTH_FAILED


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retryable(status):
    with pytest.raises(Retryable):
        raise_for_graph(graph(status, "serviceNotAvailable", "try later"))
