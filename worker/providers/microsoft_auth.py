"""Microsoft Graph app-only access tokens: the OAuth 2.0 client-credentials flow through `msal`.

`MsalTokenSource` holds one `msal.ConfidentialClientApplication` per connection (tenant,
client id, client secret); msal caches the token (about an hour) and takes a new one before it
expires. After Graph refused a token (`refresh=True`, a 401) the cached token is dropped so
the next call fetches another, once per refused token.

msal speaks to `https://login.microsoftonline.com/{tenant}` only through `PinnedHttpClient`,
which sends every request to OUR configured login URL (path and query kept; the host msal
names is ignored): the client secret can reach no other host, `PROVISIONER_MICROSOFT_LOGIN_URL`
can point at the sandbox (msal itself accepts only https authorities), and answers are
classified here: a 5xx or dropped connection `Retryable`, a refused credential `Permanent`
`auth_failed`.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import msal

from worker.providers.errors import (
    AUTH_FAILED,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    UNEXPECTED_RESPONSE,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.providers.http import build_client, parse_retry_after, relative_url, transport_errors

PROVIDER = "microsoft"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# What msal is told the authority is; requests actually go to the configured login URL.
AUTHORITY_HOST = "https://login.microsoftonline.com"


class PinnedHttpClient:
    """The `http_client` msal calls (`get`/`post` returning a requests-like response)."""

    def __init__(self, base_url: str, timeout: httpx.Timeout) -> None:
        self._http = build_client(base_url=base_url, timeout=timeout, max_connections=4)

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        return self._send("GET", url, params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        if isinstance(data, str):
            return self._send("POST", url, params=params, content=data, headers=headers)
        return self._send("POST", url, params=params, data=data, headers=headers)

    def _send(self, method: str, url: str, **kwargs: Any) -> _Response:
        with transport_errors(PROVIDER):
            response = self._http.request(method, relative_url(url), **kwargs)
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

    def close(self) -> None:
        self._http.close()


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.text = response.text
        self.headers = response.headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise Permanent(PROVIDER, AUTH_FAILED, f"login endpoint answered {self.status_code}")


class MsalTokenSource:
    """App-only Graph tokens of one app registration in one tenant (a `TokenSource`)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        login_url: str,
        timeout: httpx.Timeout,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = client_secret
        self._http = PinnedHttpClient(login_url, timeout)
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()
        self._token: str | None = None

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh and self._token is not None:
                self._forget(self._token)
            result = self._application().acquire_token_for_client(scopes=[GRAPH_SCOPE])
            token = result.get("access_token") if isinstance(result, dict) else None
            if not token:
                raise _refused(result if isinstance(result, dict) else {})
            self._token = str(token)
            return self._token

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._secret,
                    authority=f"{AUTHORITY_HOST}/{self.tenant_id}",
                    http_client=self._http,
                    instance_discovery=False,
                )
            except ValueError as exc:
                # Tenant discovery refused: a tenant that does not exist.
                raise Permanent(
                    PROVIDER, AUTH_FAILED, f"tenant {self.tenant_id!r} not found", 400
                ) from exc
        return self._app

    def _forget(self, token: str) -> None:
        """Drop `token` from msal's cache, so the next acquire asks the endpoint."""
        if self._app is None:
            return
        cache = self._app.token_cache
        entries = list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN))
        for entry in entries:
            if entry.get("secret") == token:
                cache.remove_at(entry)

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"MsalTokenSource(tenant={self.tenant_id!r}, client_id={self.client_id!r})"


def _refused(result: dict[str, Any]) -> Permanent:
    """The error an msal result without a token means: the credential was refused."""
    error = str(result.get("error") or "")
    description = str(result.get("error_description") or "").split("\r\n")[0]
    if not error:
        return Permanent(PROVIDER, UNEXPECTED_RESPONSE, "no token in the login response")
    code = next(iter(result.get("error_codes") or []), None)
    return Permanent(
        PROVIDER,
        AUTH_FAILED,
        f"token request refused: {error}" + (f": {description}" if description else ""),
        400,
        provider_code=str(code) if code is not None else error,
    )
