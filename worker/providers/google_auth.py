"""Google OAuth 2.0 access tokens for a service account with domain-wide delegation.

`google-auth` signs the JWT (`iss` the service account, `sub` the Workspace admin it acts as,
`scope` the Directory scope) and exchanges it at the token endpoint (RFC 7523 JWT bearer
grant) for a token of about an hour. `ServiceAccountTokenSource` keeps that token, takes a new
one before it expires (google-auth's refresh threshold, minutes ahead) and when the Directory
API refused the last one (`refresh=True`, after a 401), one refresh at a time per source.

The token request goes through our own httpx transport: our timeouts, no redirects, and our
error classes (a 5xx or a dropped connection is `Retryable`, a refused grant `Permanent`
`auth_failed`), so google-auth's own retry loop never sleeps in a worker thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import service_account

from worker.providers.errors import (
    AUTH_FAILED,
    INVALID_REQUEST,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.providers.http import (
    build_client,
    parse_retry_after,
    timeout_from_settings,
    transport_errors,
)
from worker.settings import Settings

PROVIDER = "google"
DIRECTORY_USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
# Fields of a service account key file that the token exchange needs.
KEY_FIELDS = ("client_email", "private_key")


class _Response(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest(transport.Request):
    """google-auth's transport over one pooled httpx client. A 5xx or 429 from the token
    endpoint raises our `Retryable` / `RateLimited` here, before google-auth sees it."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        with transport_errors(PROVIDER):
            response = self._client.request(method, url, content=body, headers=headers)
        if response.status_code == 429:
            raise RateLimited(
                PROVIDER,
                RATE_LIMITED,
                "token endpoint throttled",
                429,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 500:
            raise Retryable(
                PROVIDER, PROVIDER_UNAVAILABLE, "token endpoint unavailable", response.status_code
            )
        return _Response(response)


def check_key(info: Any) -> list[str]:
    """The fields a service account key lacks (empty when it has what the exchange needs)."""
    if not isinstance(info, Mapping):
        return ["service_account"]
    missing = [f for f in KEY_FIELDS if not isinstance(info.get(f), str) or not info.get(f)]
    if info.get("type", "service_account") != "service_account":
        missing.append("type")
    return missing


class ServiceAccountTokenSource:
    """Tokens of one service account acting as `subject` (a `TokenSource`)."""

    def __init__(
        self,
        info: Mapping[str, Any],
        subject: str,
        *,
        token_url: str,
        timeout: httpx.Timeout,
        scopes: tuple[str, ...] = (DIRECTORY_USER_SCOPE,),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            self._credentials = service_account.Credentials.from_service_account_info(
                # Our token URL, whatever the key says (the sandbox's in tests).
                {**info, "token_uri": token_url},
                scopes=list(scopes),
                subject=subject,
            )
        except (ValueError, KeyError, TypeError) as exc:
            # google-auth's message names the field, never the key's content.
            raise Permanent(
                PROVIDER, INVALID_REQUEST, f"unusable service account key: {type(exc).__name__}"
            ) from exc
        self.client_email = str(info.get("client_email"))
        self._http = build_client(
            base_url="", timeout=timeout, max_connections=4, transport=transport
        )
        self._request = HttpxRequest(self._http)
        self._lock = threading.Lock()

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            stale = self._credentials.token if refresh else None
            # After a 401, refresh unless another thread already replaced the refused token.
            if not self._credentials.valid or (stale and self._credentials.token == stale):
                self._refresh()
            return str(self._credentials.token)

    def _refresh(self) -> None:
        try:
            self._credentials.refresh(self._request)
        except google_exceptions.RefreshError as exc:
            # invalid_grant (bad signature, unknown or disabled key, a subject outside the
            # delegation), unauthorized_client (no domain-wide delegation for the scope).
            raise Permanent(PROVIDER, AUTH_FAILED, _refresh_message(exc), 400) from exc
        except google_exceptions.TransportError as exc:
            raise Retryable(PROVIDER, PROVIDER_UNAVAILABLE, "token request failed") from exc

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"ServiceAccountTokenSource({self.client_email!r})"


def platform_google_source(settings: Settings) -> ServiceAccountTokenSource | None:
    """The platform's Google token source: its service account with delegation when one is
    configured, else None (the static token then: tests, or tokens made outside)."""
    info = None
    if settings.google_service_account_json.get_secret_value():
        info = json.loads(settings.google_service_account_json.get_secret_value())
    elif settings.google_service_account_file is not None:
        info = json.loads(settings.google_service_account_file.read_text())
    if info is None:
        return None
    return ServiceAccountTokenSource(
        info,
        settings.google_admin_subject,
        token_url=settings.google_token_url,
        timeout=timeout_from_settings(settings),
    )


def _refresh_message(exc: google_exceptions.RefreshError) -> str:
    """The token endpoint's error and description, without anything we sent."""
    details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else {}
    error = details.get("error") or "refused"
    description = details.get("error_description") or ""
    return f"token request refused: {error}" + (f": {description}" if description else "")


__all__ = [
    "DIRECTORY_USER_SCOPE",
    "HttpxRequest",
    "ServiceAccountTokenSource",
    "check_key",
    "platform_google_source",
]
