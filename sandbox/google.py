"""Google Admin SDK Directory API emulation: users.insert, users.get, users.delete.

Real base URL: https://admin.googleapis.com. `Authorization: Bearer <token>` (a token
from the sandbox's token endpoint while live, or any other non-empty token), JSON bodies,
Google's error envelope. Passwords are kept only as a
salted hash and never returned.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.errors import google_error
from sandbox.http import bearer_token, sandbox_state
from sandbox.identity import identity
from sandbox.state import AlreadyExists, NotFound, UserRecord, hash_password, utcnow

router = APIRouter()

BASE = "/admin/directory/v1/users"
CUSTOMER_ID = "C00sandbox"
NAME_MAX = 60
PASSWORD_MIN, PASSWORD_MAX = 8, 100
_LOCAL = r"[A-Za-z0-9_'-]+(?:\.[A-Za-z0-9_'-]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
EMAIL = re.compile(rf"^(?P<local>{_LOCAL})@{_DOMAIN}$")


def _unauthenticated() -> JSONResponse:
    return google_error(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        detail="Invalid Credentials",
        location="Authorization",
        locationType="header",
    )


def _refused(request: Request) -> bool:
    """No token, or one the token endpoint issued that has expired or was revoked (any
    other non-empty token is accepted: a static token in tests)."""
    token = bearer_token(request)
    if token is None:
        return True
    state, issued = identity(request).state(token)
    return state in ("expired", "revoked") or (issued is not None and issued.kind != "google")


def _outside_delegation(request: Request, email: str) -> bool:
    """A token issued to a service account acting as a delegated admin (`sub`) reaches only
    that admin's domain and its subdomains: Google's admins administer their own customer's
    domains, and a user of another answers 403 `forbidden`. Static tokens (tests) and tokens
    issued without a subject reach every domain."""
    token = bearer_token(request)
    if token is None:
        return False
    _, issued = identity(request).state(token)
    if issued is None or issued.kind != "google" or "@" not in issued.tenant:
        return False
    admin = issued.tenant.rpartition("@")[2].lower()
    domain = email.rpartition("@")[2].lower()
    return domain != admin and not domain.endswith("." + admin)


def _forbidden() -> JSONResponse:
    return google_error(403, "forbidden", "Not Authorized to access this resource/api")


def _user_outside(request: Request, user_key: str) -> bool:
    """The user named by `user_key` (an address or an id) is outside the token's reach."""
    try:
        email = sandbox_state(request).get_user(user_key).primary_email
    except NotFound:
        email = user_key if "@" in user_key else ""
    return bool(email) and _outside_delegation(request, email)


def _invalid(message: str) -> JSONResponse:
    return google_error(400, "invalid", message)


def _google_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def render_user(record: UserRecord, mailbox_ready: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "admin#directory#user",
        "id": record.id,
        "etag": record.etag,
        "primaryEmail": record.primary_email,
        "name": {
            "givenName": record.given_name,
            "familyName": record.family_name,
            "fullName": f"{record.given_name} {record.family_name}",
        },
        "isAdmin": False,
        "isDelegatedAdmin": False,
        "lastLoginTime": "1970-01-01T00:00:00.000Z",
        "creationTime": _google_time(record.creation_time),
        "agreedToTerms": False,
        "suspended": False,
        "archived": False,
        "changePasswordAtNextLogin": record.change_password_at_next_login,
        "ipWhitelisted": False,
        "emails": [{"address": record.primary_email, "primary": True}],
        "customerId": CUSTOMER_ID,
        "orgUnitPath": record.extra.get("orgUnitPath", "/"),
        "isMailboxSetup": mailbox_ready,
        "isEnrolledIn2Sv": False,
        "isEnforcedIn2Sv": False,
        "includeInGlobalAddressList": True,
    }
    if record.external_ids:
        body["externalIds"] = record.external_ids
    return body


def _name_error(value: object, field: str) -> JSONResponse | None:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > NAME_MAX
        or any(ch in value for ch in "<>")
    ):
        return _invalid(f"Invalid Given/Family Name: {field}")
    return None


def _parse_user(body: dict[str, Any]) -> UserRecord | JSONResponse:
    email = body.get("primaryEmail")
    match = EMAIL.match(email) if isinstance(email, str) else None
    if match is None or len(match.group("local")) > 64:
        return _invalid("Invalid Input: primary_user_email")
    name = body.get("name")
    if not isinstance(name, dict):
        return _invalid("Invalid Given/Family Name: GivenName")
    for key, field in (("givenName", "GivenName"), ("familyName", "FamilyName")):
        if (error := _name_error(name.get(key), field)) is not None:
            return error
    password = body.get("password")
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return _invalid("Invalid Password")
    external_ids = body.get("externalIds", [])
    if external_ids is None:
        external_ids = []
    if not isinstance(external_ids, list) or not all(isinstance(e, dict) for e in external_ids):
        return _invalid("Invalid Input: externalIds")
    change = body.get("changePasswordAtNextLogin", False)
    if not isinstance(change, bool):
        return _invalid("Invalid Input: changePasswordAtNextLogin")
    extra = {"orgUnitPath": body["orgUnitPath"]} if isinstance(body.get("orgUnitPath"), str) else {}
    return UserRecord(
        id=str(10**20 + secrets.randbelow(9 * 10**20)),
        primary_email=email,  # type: ignore[arg-type]  # checked by the regex above
        given_name=name["givenName"].strip(),
        family_name=name["familyName"].strip(),
        password_hash=hash_password(password),
        change_password_at_next_login=change,
        external_ids=external_ids,
        creation_time=utcnow(),
        etag=f'"{secrets.token_urlsafe(27)}"',
        extra=extra,
    )


@router.post(BASE)
async def insert_user(request: Request) -> Response:
    if _refused(request):
        return _unauthenticated()
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return google_error(400, "parseError", "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return google_error(400, "parseError", "Invalid JSON payload received.")
    parsed = _parse_user(body)
    if isinstance(parsed, JSONResponse):
        return parsed
    if _outside_delegation(request, parsed.primary_email):
        return _forbidden()
    try:
        record = sandbox_state(request).create_user(parsed)
    except AlreadyExists:
        return google_error(409, "duplicate", "Entity already exists.")
    return JSONResponse(render_user(record, mailbox_ready=False))


@router.get(BASE + "/{user_key}")
async def get_user(request: Request, user_key: str) -> Response:
    if _refused(request):
        return _unauthenticated()
    if _user_outside(request, user_key):
        return _forbidden()
    try:
        record = sandbox_state(request).get_user(user_key)
    except NotFound:
        return google_error(404, "notFound", "Resource Not Found: userKey")
    return JSONResponse(render_user(record))


@router.delete(BASE + "/{user_key}")
async def delete_user(request: Request, user_key: str) -> Response:
    if _refused(request):
        return _unauthenticated()
    if _user_outside(request, user_key):
        return _forbidden()
    try:
        sandbox_state(request).delete_user(user_key)
    except NotFound:
        return google_error(404, "notFound", "Resource Not Found: userKey")
    return Response(status_code=204)
