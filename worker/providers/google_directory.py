"""Google Workspace accounts through the Admin SDK Directory API (`/admin/directory/v1/users`):
insert, get, delete; and the idempotent `ensure_user` / `delete_tagged` steps.

A user we create carries our tag (the contact id) as an `externalIds` entry of custom type
`contact_id`: that is how a retried step tells "the account an earlier attempt created" from
"an address someone else already has".
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from worker.providers.errors import (
    AUTH_FAILED,
    EMAIL_TAKEN,
    INVALID_REQUEST,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    UNEXPECTED_RESPONSE,
    NotFound,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.providers.google_auth import platform_google_source
from worker.providers.http import (
    ProviderClient,
    json_object,
    parse_retry_after,
    timeout_from_settings,
)
from worker.settings import Settings

PROVIDER = "google"
USERS_PATH = "/admin/directory/v1/users"
TAG_TYPE = "contact_id"
# Google's reasons (in error.errors[].reason) for throttling, sent with 403 as well as 429.
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})

_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#$%*+-=?@^_~"


class TokenSource(Protocol):
    """Where OAuth 2.0 access tokens come from. `refresh=True` asks for a new token because
    the last one was refused (a service-account source fetches one; a static one cannot)."""

    def token(self, *, refresh: bool = False) -> str: ...


class StaticTokenSource:
    """A fixed access token, e.g. from PROVISIONER_GOOGLE_ACCESS_TOKEN."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def token(self, *, refresh: bool = False) -> str:
        return self._token.get_secret_value()

    def __repr__(self) -> str:
        return "StaticTokenSource(**********)"


class BearerAuth(httpx.Auth):
    """Bearer auth that asks its token source on every request and, when Google answers 401,
    once more for a fresh token and retries with it."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._source.token()
        _authorize(request, token)
        response = yield request
        if response.status_code == 401:
            fresh = self._source.token(refresh=True)
            if fresh != token:  # the same token would be refused the same way
                _authorize(request, fresh)
                yield request


def _authorize(request: httpx.Request, token: str) -> None:
    if token:
        request.headers["Authorization"] = f"Bearer {token}"
    else:  # no credentials configured: let the provider say 401
        request.headers.pop("Authorization", None)


def raise_for_google(response: httpx.Response) -> None:
    """Raise the error a non-2xx Directory API response means; the only place that reads
    Google's status codes and error reasons (`{"error": {"code", "message", "errors": [...]}}`)."""
    if response.is_success:
        return
    status = response.status_code
    error = json_object(response).get("error")
    error = error if isinstance(error, dict) else {}
    details = [e for e in error.get("errors") or [] if isinstance(e, dict)]
    reasons = {str(e.get("reason")) for e in details if e.get("reason")}
    reason = next(iter(sorted(reasons)), None) or error.get("status")
    message = str(error.get("message") or response.reason_phrase or f"HTTP {status}")

    def permanent(code: str) -> Permanent:
        return Permanent(PROVIDER, code, message, status, provider_code=reason)

    if (
        status == 429
        or (status == 403 and reasons & RATE_LIMIT_REASONS)
        or error.get("status") == "RESOURCE_EXHAUSTED"
    ):
        raise RateLimited(
            PROVIDER,
            RATE_LIMITED,
            message,
            status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            provider_code=reason,
        )
    if status >= 500 or status == 408:
        raise Retryable(PROVIDER, PROVIDER_UNAVAILABLE, message, status, provider_code=reason)
    if status in (401, 403):
        raise permanent(AUTH_FAILED)
    if status == 404:
        raise NotFound(PROVIDER, message, status, provider_code=reason)
    if status == 409:  # reason "duplicate": the address is in use
        raise permanent(EMAIL_TAKEN)
    if status < 400:
        raise permanent(UNEXPECTED_RESPONSE)
    raise permanent(INVALID_REQUEST)


@dataclass(frozen=True)
class DirectoryUser:
    """A Workspace user; `tag` is our contact id if we created it, else None."""

    id: str
    primary_email: str
    tag: str | None


class GoogleDirectory(ProviderClient):
    """Client of the Directory API's users collection."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        base_url: str,
        token_source: TokenSource,
        timeout: httpx.Timeout,
        max_connections: int = 100,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
            auth=BearerAuth(token_source),
            raise_for_status=raise_for_google,
            transport=transport,
        )
        self.token_source = token_source

    @classmethod
    def from_settings(
        cls, settings: Settings, token_source: TokenSource | None = None
    ) -> GoogleDirectory:
        """A client for the base URL `settings` name, authorised by `token_source` (default:
        the platform's service account when configured, else the static
        `google_access_token`)."""
        if token_source is None:
            token_source = platform_google_source(settings) or StaticTokenSource(
                settings.google_access_token
            )
        return cls(
            base_url=settings.google_directory_url,
            token_source=token_source,
            timeout=timeout_from_settings(settings),
            max_connections=settings.provider_max_connections,
        )

    # Operations -------------------------------------------------------------------------

    def insert_user(
        self, primary_email: str, given_name: str, family_name: str, tag: str
    ) -> DirectoryUser:
        """Create the account with a strong random password that nobody ever sees (the user
        sets their own: `changePasswordAtNextLogin`), tagged with `tag`."""
        body = {
            "primaryEmail": primary_email,
            "name": {"givenName": given_name, "familyName": family_name},
            "password": _new_password(),
            "changePasswordAtNextLogin": True,
            "externalIds": [{"type": "custom", "customType": TAG_TYPE, "value": tag}],
        }
        return _parse_user(self._request_json("POST", USERS_PATH, json=body))

    def get_user(self, user_key: str) -> DirectoryUser:
        """The user whose primary email, alias or id is `user_key` (NotFound if none)."""
        return _parse_user(self._request_json("GET", self._user_path(user_key)))

    def delete_user(self, user_key: str) -> None:
        """Delete the user (NotFound if there is none)."""
        self._request("DELETE", self._user_path(user_key))

    # Idempotent steps -------------------------------------------------------------------

    def ensure_user(
        self,
        primary_email: str,
        given_name: str,
        family_name: str,
        tag: str,
        *,
        look_up: bool = True,
    ) -> DirectoryUser:
        """The account `primary_email` tagged `tag`, created if it does not exist yet.
        Permanent("email_taken") if the address belongs to anyone else. Safe to repeat.

        `look_up=False` goes straight to the insert (a 409 still leads to the look-up).
        """
        if look_up:
            try:
                return _ours(self.get_user(primary_email), tag)
            except NotFound:
                pass
        try:
            return self.insert_user(primary_email, given_name, family_name, tag)
        except Permanent as exc:
            if exc.code != EMAIL_TAKEN:
                raise
            conflict = exc
        # 409: created meanwhile, perhaps by an attempt of ours whose response was lost.
        try:
            return _ours(self.get_user(primary_email), tag)
        except NotFound as exc:
            # Directory reads lag behind writes: it exists, but is not visible yet.
            raise Retryable(
                PROVIDER, EMAIL_TAKEN, "address in use but not readable yet", conflict.status
            ) from exc

    def delete_tagged(self, primary_email: str, tag: str) -> bool:
        """Delete the account if it carries our tag; True if this call deleted it. Someone
        else's account is never touched; one already gone is fine."""
        try:
            user = self.get_user(primary_email)
        except NotFound:
            return False
        if user.tag != tag:
            return False
        try:
            self.delete_user(user.id)
        except NotFound:
            return False
        return True

    def _user_path(self, user_key: str) -> str:
        return f"{USERS_PATH}/{quote(user_key, safe='@')}"


def _ours(user: DirectoryUser, tag: str) -> DirectoryUser:
    if user.tag != tag:
        raise Permanent(PROVIDER, EMAIL_TAKEN, "the address belongs to another account", 409)
    return user


def _parse_user(body: dict[str, Any]) -> DirectoryUser:
    user_id, email = body.get("id"), body.get("primaryEmail")
    if not isinstance(user_id, str) or not isinstance(email, str):
        raise Permanent(PROVIDER, UNEXPECTED_RESPONSE, "response is not a user")
    tag = next(
        (
            str(e.get("value"))
            for e in body.get("externalIds") or []
            if isinstance(e, dict)
            and e.get("type") == "custom"
            and e.get("customType") == TAG_TYPE
            and e.get("value")
        ),
        None,
    )
    return DirectoryUser(id=user_id, primary_email=email, tag=tag)


def _new_password(length: int = 24) -> str:
    """A random password with upper and lower case letters, digits and symbols, so any
    Workspace password-strength policy accepts it."""
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(not c.isalnum() for c in password)
        ):
            return password
