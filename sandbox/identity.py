"""Token endpoints: Google's OAuth 2.0 endpoint (JWT bearer grant, RFC 7523, as a service
account with domain-wide delegation uses it) and the Microsoft identity platform's (client
credentials, with its OpenID discovery document), and the tokens they issue.

Real endpoints: `https://oauth2.googleapis.com/token`; `https://login.microsoftonline.com/
{tenant}/oauth2/v2.0/token` and `/{tenant}/v2.0/.well-known/openid-configuration`.

Credentials are registered with `PUT /_sandbox/google/service-accounts/{client_email}`
`{"public_key_pem", "admin_subjects"?}` and `PUT /_sandbox/microsoft/apps/{client_id}`
`{"client_secret", "tenant_id"?}`: a registered credential must match (the assertion's RS256
signature verifies with the public key; the secret is the one given), and registering again
revokes every token issued under the old one. An unregistered credential is accepted when well
formed. `POST /_sandbox/tokens/expire` makes every issued token expired now (the Directory and
Graph then answer 401 until the client fetches a new one).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import jwt
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sandbox.errors import oauth_error

router = APIRouter()

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_PREFIX = "ya29.sandbox-"
MICROSOFT_PREFIX = "eyJ0.sandbox-"
TOKEN_TTL_S = 3599
ASSERTION_MAX_S = 3600  # Google refuses an assertion valid for longer than an hour
MICROSOFT_HOST = "https://login.microsoftonline.com"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

TokenState = Literal["unknown", "live", "expired", "revoked"]


@dataclass
class Issued:
    kind: Literal["google", "microsoft"]
    principal: str  # the service account's email, or the app's client id
    tenant: str  # Microsoft tenant; for Google the delegated admin (sub)
    scope: str
    expires_at: float
    revoked: bool = False


@dataclass
class ServiceAccount:
    public_key_pem: str
    admin_subjects: list[str] | None = None


@dataclass
class App:
    client_secret: str
    tenant_id: str | None = None


class Identity:
    """Registered credentials and issued tokens; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, Issued] = {}
        self.ttl_s = TOKEN_TTL_S

    def register_service_account(self, email: str, account: ServiceAccount) -> None:
        with self._lock:
            self.service_accounts[email] = account
            self._revoke("google", email)

    def register_app(self, client_id: str, app: App) -> None:
        with self._lock:
            self.apps[client_id] = app
            self._revoke("microsoft", client_id)

    def _revoke(self, kind: str, principal: str) -> None:
        for issued in self.tokens.values():
            if issued.kind == kind and issued.principal == principal:
                issued.revoked = True

    def issue(
        self, kind: Literal["google", "microsoft"], principal: str, tenant: str, scope: str
    ) -> str:
        prefix = GOOGLE_PREFIX if kind == "google" else MICROSOFT_PREFIX
        token = prefix + secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = Issued(kind, principal, tenant, scope, time.time() + self.ttl_s)
        return token

    def state(self, token: str) -> tuple[TokenState, Issued | None]:
        with self._lock:
            issued = self.tokens.get(token)
        if issued is None:
            return "unknown", None
        if issued.revoked:
            return "revoked", issued
        if time.time() >= issued.expires_at:
            return "expired", issued
        return "live", issued

    def expire_all(self) -> int:
        now = time.time()
        with self._lock:
            for issued in self.tokens.values():
                issued.expires_at = min(issued.expires_at, now)
            return len(self.tokens)


def identity(request: Request) -> Identity:
    value: Identity = request.app.state.identity
    return value


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(raw, keep_blank_values=True))


def _token_answer(token: str, ttl_s: int, extra: dict[str, Any] | None = None) -> JSONResponse:
    body = {"access_token": token, "token_type": "Bearer", "expires_in": ttl_s, **(extra or {})}
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# --- Google ------------------------------------------------------------------------------------


@router.post("/token")
async def google_token(request: Request) -> Response:
    form = await _form(request)
    if form.get("grant_type") != JWT_BEARER:
        return oauth_error(
            400, "unsupported_grant_type", "Invalid grant_type: " + form.get("grant_type", "")
        )
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token")
    email = claims.get("iss")
    if header.get("alg") != "RS256" or not isinstance(email, str) or not _EMAIL.match(email):
        return oauth_error(400, "invalid_grant", "Invalid JWT: iss must be a service account")
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        return oauth_error(400, "invalid_grant", "Invalid JWT: exp and iat are required")
    if exp <= now or iat > now + 300 or exp - iat > ASSERTION_MAX_S:
        return oauth_error(
            400,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) "
            "and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        )
    if not str(claims.get("aud", "")).endswith("/token"):
        return oauth_error(400, "invalid_grant", "Invalid JWT: aud is not the token endpoint")
    scope = claims.get("scope")
    if not isinstance(scope, str) or not scope.strip():
        return oauth_error(
            400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        )
    subject = claims.get("sub")
    if subject is not None and (not isinstance(subject, str) or not _EMAIL.match(subject)):
        return oauth_error(400, "invalid_grant", "Invalid email or User ID")
    registered = identity(request).service_accounts.get(email)
    if registered is not None:
        try:
            jwt.decode(
                assertion,
                registered.public_key_pem,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, ValueError):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if registered.admin_subjects is not None and subject not in registered.admin_subjects:
            # Not an admin the service account is delegated to: Google's answer for it.
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
    token = identity(request).issue("google", email, str(subject or ""), scope)
    return _token_answer(token, identity(request).ttl_s)


# --- Microsoft ---------------------------------------------------------------------------------


def _tenant_ok(tenant: str) -> bool:
    return bool(_GUID.match(tenant) or _DOMAIN.match(tenant))


def _no_tenant(tenant: str) -> JSONResponse:
    return oauth_error(
        400,
        "invalid_tenant",
        f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct "
        "tenant ID and are signing into the correct cloud.",
        [90002],
    )


@router.get("/{tenant}/v2.0/.well-known/openid-configuration")
async def openid_configuration(tenant: str) -> Response:
    if not _tenant_ok(tenant):
        return _no_tenant(tenant)
    base = f"{MICROSOFT_HOST}/{tenant}"
    return JSONResponse(
        {
            "issuer": f"{base}/v2.0",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "tenant_region_scope": "EU",
        }
    )


@router.post("/{tenant}/oauth2/v2.0/token")
async def microsoft_token(request: Request, tenant: str) -> Response:
    if not _tenant_ok(tenant):
        return _no_tenant(tenant)
    form = await _form(request)
    if form.get("grant_type") != "client_credentials":
        return oauth_error(
            400, "unsupported_grant_type", "AADSTS70003: unsupported grant type", [70003]
        )
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    scope = form.get("scope", "")
    if not client_id:
        return oauth_error(
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
            [900144],
        )
    if not any(s.endswith("/.default") for s in scope.split()):
        return oauth_error(
            400,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
            [1002012],
        )
    app = identity(request).apps.get(client_id)
    if app is not None and app.tenant_id is not None and app.tenant_id.lower() != tenant.lower():
        return oauth_error(
            400,
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
            f"directory '{tenant}'.",
            [700016],
        )
    if not secret or (app is not None and not secrets.compare_digest(secret, app.client_secret)):
        return oauth_error(
            401,
            "invalid_client",
            f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
            f"request is the client secret value, not the client secret ID, for a secret added "
            f"to app '{client_id}'.",
            [7000215],
        )
    token = identity(request).issue("microsoft", client_id, tenant.lower(), scope)
    ttl = identity(request).ttl_s
    return _token_answer(token, ttl, {"ext_expires_in": ttl})


# --- registration (control endpoints, no faults) -----------------------------------------------


class ServiceAccountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key_pem: str = Field(min_length=1)
    admin_subjects: list[str] | None = None


class AppBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_secret: str = Field(min_length=1)
    tenant_id: str | None = None


class TokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: int = Field(ge=1, le=86400)


@router.put("/_sandbox/google/service-accounts/{client_email}")
async def register_service_account(
    request: Request, client_email: str, body: ServiceAccountBody
) -> dict[str, Any]:
    identity(request).register_service_account(
        client_email, ServiceAccount(body.public_key_pem, body.admin_subjects)
    )
    return {"client_email": client_email, "registered": True}


@router.put("/_sandbox/microsoft/apps/{client_id}")
async def register_app(request: Request, client_id: str, body: AppBody) -> dict[str, Any]:
    identity(request).register_app(client_id, App(body.client_secret, body.tenant_id))
    return {"client_id": client_id, "registered": True}


@router.post("/_sandbox/tokens/expire")
async def expire_tokens(request: Request) -> dict[str, Any]:
    return {"expired": identity(request).expire_all()}


@router.put("/_sandbox/tokens")
async def token_settings(request: Request, body: TokenSettings) -> dict[str, Any]:
    identity(request).ttl_s = body.ttl_s
    return {"ttl_s": body.ttl_s}
