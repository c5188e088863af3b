"""Twilio Senders API (v2) emulation for WhatsApp senders, and the SMS their verification
codes arrive by (the 2010 API's Messages list, and the number's SmsUrl).

Real base URL: https://messaging.twilio.com. HTTP Basic auth (any Account SID with a
non-empty token; the SID scopes what the caller sees), JSON request bodies. Create
answers 202 Accepted with status `CREATING`, under a registered WABA
(`configuration.waba_id`) that has room. After `sender_online_after_s` seconds the sender
is `ONLINE`, or, for the share of senders that must verify (the onboarding control),
`PENDING_VERIFICATION` with a code sent by SMS to the number; the right code (an update's
`configuration.verification_code`) leads to `VERIFYING`, then `TWILIO_REVIEW` (when the
onboarding control gives it a duration), then `ONLINE`. A sender can only be registered
for an IncomingPhoneNumber the same account bought in this sandbox, once per number.
See docs/sandbox.md for where each rule comes from.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from email.utils import format_datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.errors import (
    TW_AUTHENTICATE,
    TW_BAD_REQUEST,
    TW_CONFLICT,
    TW_NOT_FOUND,
    TW_SENDER_VALIDATION,
    TW_WABA_FULL,
    TW_WABA_INVALID,
    twilio_error,
)
from sandbox.http import (
    basic_credentials,
    faults,
    page_window,
    parse_page,
    parse_page_size,
    sandbox_state,
    single_page,
    with_query,
)
from sandbox.state import (
    AlreadyExists,
    MessageRecord,
    NotFound,
    NotOwned,
    NotPendingVerification,
    SenderRecord,
    WabaFull,
    WabaUnknown,
    WrongCode,
)

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
        code, message = record.offline or ("63100", "The phone number of this sender was released")
        offline_reasons = [
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
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
    waba_id = (body.get("configuration") or {}).get("waba_id")
    if not isinstance(waba_id, str) or not waba_id:
        return _validation("configuration.waba_id is required for a WhatsApp sender")
    online_after = faults(request).config().sender_online_after_s
    try:
        record = sandbox_state(request).create_sender(
            account, match.group(0), match.group(1), body, waba_id, online_after
        )
    except NotOwned:
        return _validation(f"{match.group(1)} is not an IncomingPhoneNumber of account {account}")
    except WabaUnknown:
        return twilio_error(
            400, TW_WABA_INVALID, f"WABA ID {waba_id} provided is not valid or unable to be used"
        )
    except WabaFull:
        return twilio_error(
            400,
            TW_WABA_FULL,
            f"The WhatsApp Business Account {waba_id} has reached its limit of phone numbers",
        )
    except AlreadyExists:
        return twilio_error(409, TW_CONFLICT, f"A sender for {sender_id} already exists")
    if record.verification_code is not None:
        _deliver_later(request, record, online_after)
    return JSONResponse(render_sender(request, record), status_code=202)


@router.post(BASE + "/{sid}")
async def update_sender(request: Request, sid: str) -> Response:
    """Twilio's update (POST, JSON): profile, webhook, configuration; a
    `configuration.verification_code` verifies a sender in PENDING_VERIFICATION."""
    account = _account(request)
    if isinstance(account, JSONResponse):
        return account
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return _validation("Invalid JSON in request body")
    if not isinstance(body, dict):
        return _validation("Request body must be a JSON object")
    for section in ("configuration", "webhook", "profile"):
        if body.get(section) is not None and not isinstance(body[section], dict):
            return _validation(f"{section} must be an object")
    configuration = body.get("configuration") or {}
    code = configuration.pop("verification_code", None)
    if code is not None and not isinstance(code, str):
        return _validation("configuration.verification_code must be a string")
    online_after = faults(request).config().sender_online_after_s
    try:
        record = sandbox_state(request).update_sender(account, sid, body, code, online_after)
    except NotFound:
        return _not_found(request)
    except NotPendingVerification:
        return _validation("The sender is not pending verification")
    except WrongCode:
        return _validation("The verification code is not valid")
    return JSONResponse(render_sender(request, record), status_code=202)


_DELIVERIES: set[asyncio.Task[None]] = set()


def _deliver_later(request: Request, record: SenderRecord, after_s: float) -> None:
    """POST the verification SMS to the number's SmsUrl when CREATING ends, as Twilio
    delivers an incoming message: form fields, signed with X-Twilio-Signature."""
    state = sandbox_state(request)
    creds = basic_credentials(request)
    token = creds[1] if creds else ""

    async def deliver() -> None:
        # The loop may wake a little early: wait until the message is there to be received.
        await asyncio.sleep(max(0.0, record.created_at + after_s - time.monotonic()) + 0.01)
        url = state.sms_url(record.account_sid, record.phone_number)
        found = state.messages(record.account_sid, record.phone_number)
        if url is None or not found:
            return
        form = sms_webhook_form(found[0])
        headers = {"X-Twilio-Signature": twilio_signature(token, url, form)}
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                await client.post(url, data=form, headers=headers)
        except httpx.HTTPError:
            return  # Twilio too gives up on an unreachable SmsUrl (and logs 11200)

    task = asyncio.get_running_loop().create_task(deliver())
    _DELIVERIES.add(task)
    task.add_done_callback(_DELIVERIES.discard)


def sms_webhook_form(message: MessageRecord) -> dict[str, str]:
    return {
        "MessageSid": message.sid,
        "SmsSid": message.sid,
        "AccountSid": message.account_sid,
        "From": message.from_,
        "To": message.to,
        "Body": message.body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }


def twilio_signature(token: str, url: str, form: dict[str, str]) -> str:
    """Twilio's request signature: HMAC-SHA1 with the auth token over the URL followed by
    each POST parameter's name and value, sorted by name; base64."""
    payload = url + "".join(k + form[k] for k in sorted(form))
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@router.get("/2010-04-01/Accounts/{account_sid}/Messages.json")
async def list_messages(request: Request, account_sid: str) -> Response:
    """The 2010 API's Messages list, for the SMS our numbers received (filters `To`)."""
    creds = basic_credentials(request)
    if creds is None or creds[0] != account_sid or not creds[1]:
        return twilio_error(
            401,
            TW_AUTHENTICATE,
            "Authenticate",
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
    params = request.query_params
    page_size = parse_page_size(params.get("PageSize"), default=50)
    if page_size is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize.")
    found = sandbox_state(request).messages(account_sid, params.get("To"))[:page_size]
    rendered = [render_message(m) for m in found]
    return JSONResponse(single_page(request, "messages", rendered, page_size))


def render_message(message: MessageRecord) -> dict[str, Any]:
    date = format_datetime(message.date_sent)
    return {
        "account_sid": message.account_sid,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": date,
        "date_sent": date,
        "date_updated": date,
        "direction": "inbound",
        "error_code": None,
        "error_message": None,
        "from": message.from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": message.sid,
        "status": "received",
        "to": message.to,
        "uri": f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}.json",
    }


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
