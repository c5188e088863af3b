"""Twilio Senders API (v2) emulation for WhatsApp senders.

Real base URL: https://messaging.twilio.com. HTTP Basic auth (any Account SID with a
non-empty token; the SID scopes what the caller sees), JSON request bodies. Create
answers 202 Accepted with status `CREATING`; a fetch after `sender_online_after_s`
seconds shows `ONLINE`. A sender can only be registered for an IncomingPhoneNumber the
same account bought in this sandbox, and only once per number.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.errors import (
    TW_AUTHENTICATE,
    TW_BAD_REQUEST,
    TW_CONFLICT,
    TW_NOT_FOUND,
    TW_SENDER_VALIDATION,
    twilio_error,
)
from sandbox.http import (
    basic_credentials,
    faults,
    page_window,
    parse_page,
    parse_page_size,
    sandbox_state,
    with_query,
)
from sandbox.state import AlreadyExists, NotFound, NotOwned, SenderRecord

router = APIRouter()

BASE = "/v2/Channels/Senders"
SENDER_ID = re.compile(r"^whatsapp:(\+[1-9]\d{6,14})$")
_CONFIGURATION_KEYS = (
    "waba_id",
    "verification_method",
    "verification_code",
    "voice_application_sid",
    "account_type",
)
_WEBHOOK_KEYS = (
    "callback_url",
    "callback_method",
    "fallback_url",
    "fallback_method",
    "status_callback_url",
    "status_callback_method",
)
_PROFILE_KEYS = (
    "name",
    "about",
    "address",
    "description",
    "emails",
    "logo_url",
    "vertical",
    "websites",
    "banner_url",
    "privacy_url",
    "terms_of_service_url",
    "accent_color",
    "use_case",
    "phone_numbers",
)


def _account(request: Request) -> str | JSONResponse:
    creds = basic_credentials(request)
    if creds is None or not creds[0] or not creds[1]:
        return twilio_error(
            401,
            TW_AUTHENTICATE,
            "Authenticate",
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
    return creds[0]


def _validation(message: str) -> JSONResponse:
    return twilio_error(400, TW_SENDER_VALIDATION, message)


def _section(body: dict[str, Any], name: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    value = body.get(name)
    if not isinstance(value, dict):
        return None
    return {key: value.get(key) for key in keys}


def render_sender(request: Request, record: SenderRecord) -> dict[str, Any]:
    status = record.status(faults(request).config().sender_online_after_s)
    base = str(request.base_url).rstrip("/")
    offline_reasons = None
    if status == "OFFLINE":
        offline_reasons = [
            {
                "code": "63100",
                "message": "The phone number of this sender was released",
                "more_info": "https://www.twilio.com/docs/errors/63100",
            }
        ]
    online = status == "ONLINE"
    return {
        "sid": record.sid,
        "status": status,
        "sender_id": record.sender_id,
        "configuration": _section(record.body, "configuration", _CONFIGURATION_KEYS),
        "webhook": _section(record.body, "webhook", _WEBHOOK_KEYS),
        "profile": _section(record.body, "profile", _PROFILE_KEYS),
        "properties": {
            "quality_rating": "HIGH" if online else None,
            "messaging_limit": "1K Customers/24hr" if online else None,
        },
        "offline_reasons": offline_reasons,
        "compliance": None,
        "url": f"{base}{BASE}/{record.sid}",
    }


@router.post(BASE)
async def create_sender(request: Request) -> Response:
    account = _account(request)
    if isinstance(account, JSONResponse):
        return account
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return _validation("Invalid JSON in request body")
    if not isinstance(body, dict):
        return _validation("Request body must be a JSON object")
    sender_id = body.get("sender_id")
    match = SENDER_ID.match(sender_id) if isinstance(sender_id, str) else None
    if match is None:
        return _validation("sender_id must be in whatsapp:<E.164_PHONE_NUMBER> format")
    profile = body.get("profile")
    name = profile.get("name") if isinstance(profile, dict) else None
    if not isinstance(name, str) or not name.strip():
        return _validation("profile.name is required for a WhatsApp sender")
    for section in ("configuration", "webhook"):
        if body.get(section) is not None and not isinstance(body[section], dict):
            return _validation(f"{section} must be an object")
    try:
        record = sandbox_state(request).create_sender(account, match.group(0), match.group(1), body)
    except NotOwned:
        return _validation(f"{match.group(1)} is not an IncomingPhoneNumber of account {account}")
    except AlreadyExists:
        return twilio_error(409, TW_CONFLICT, f"A sender for {sender_id} already exists")
    return JSONResponse(render_sender(request, record), status_code=202)


@router.get(BASE)
async def list_senders(request: Request) -> Response:
    account = _account(request)
    if isinstance(account, JSONResponse):
        return account
    params = request.query_params
    channel = params.get("Channel")
    if not channel:
        return twilio_error(400, TW_BAD_REQUEST, "Missing required parameter Channel")
    page_size = parse_page_size(params.get("PageSize"), default=20)
    page = parse_page(params.get("Page"))
    if page_size is None or page is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize or Page.")
    records = sandbox_state(request).list_senders(account) if channel == "whatsapp" else []
    sids = [r.sid for r in records]
    start, end = page_window(sids, page, page_size, params.get("PageToken"))
    items = records[start:end]
    base = str(request.base_url).rstrip("/") + BASE

    def page_url(index: int, token: str | None = None) -> str:
        query = [("PageSize", str(page_size)), ("Page", str(index)), ("Channel", channel)]
        if token:
            query.append(("PageToken", token))
        return with_query(base, query)

    has_next = end < len(sids) and bool(items)
    return JSONResponse(
        {
            "senders": [render_sender(request, r) for r in items],
            "meta": {
                "page": page,
                "page_size": page_size,
                "first_page_url": page_url(0),
                "previous_page_url": (
                    page_url(page - 1, "PB" + items[0].sid) if page > 0 and items else None
                ),
                "url": page_url(page, params.get("PageToken")),
                "next_page_url": page_url(page + 1, "PA" + items[-1].sid) if has_next else None,
                "key": "senders",
            },
        }
    )


def _not_found(request: Request) -> JSONResponse:
    return twilio_error(
        404, TW_NOT_FOUND, f"The requested resource {request.url.path} was not found"
    )


@router.get(BASE + "/{sid}")
async def fetch_sender(request: Request, sid: str) -> Response:
    account = _account(request)
    if isinstance(account, JSONResponse):
        return account
    try:
        record = sandbox_state(request).get_sender(account, sid)
    except NotFound:
        return _not_found(request)
    return JSONResponse(render_sender(request, record))


@router.delete(BASE + "/{sid}")
async def delete_sender(request: Request, sid: str) -> Response:
    account = _account(request)
    if isinstance(account, JSONResponse):
        return account
    try:
        sandbox_state(request).delete_sender(account, sid)
    except NotFound:
        return _not_found(request)
    return Response(status_code=204)
