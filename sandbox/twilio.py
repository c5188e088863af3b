"""Twilio REST 2010-04-01 emulation: AvailablePhoneNumbers (the countries, each with the number
lists it has, and their searches: Local, Mobile, National, TollFree) and IncomingPhoneNumbers,
whose purchase passes the regulatory check of `sandbox.regulatory` (bundles, addresses).

Real base URL: https://api.twilio.com. HTTP Basic auth (username = the Account SID of
the path), form-encoded request bodies, JSON responses, Twilio error bodies.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime

import pycountry
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.errors import (
    TW_AUTHENTICATE,
    TW_BAD_REQUEST,
    TW_NOT_FOUND,
    TW_NUMBER_INVALID,
    TW_NUMBER_NOT_AVAILABLE,
    TW_NUMBER_REQUIRED,
    twilio_error,
)
from sandbox.http import (
    basic_credentials,
    form_fields,
    page_window,
    parse_page,
    parse_page_size,
    sandbox_state,
    single_page,
    with_query,
)
from sandbox.inventory import SUPPORTED_COUNTRIES, friendly_format, number_types
from sandbox.regulatory import regulatory_state
from sandbox.state import NotAvailable, NotFound, PhoneNumberRecord, Refused

router = APIRouter()

API = "/2010-04-01"
FRIENDLY_NAME_MAX = 64
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# IncomingPhoneNumber parameters stored and echoed back (form name -> JSON name).
URL_FIELDS = {
    "VoiceUrl": "voice_url",
    "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url",
    "VoiceFallbackMethod": "voice_fallback_method",
    "VoiceApplicationSid": "voice_application_sid",
    "SmsUrl": "sms_url",
    "SmsMethod": "sms_method",
    "SmsFallbackUrl": "sms_fallback_url",
    "SmsFallbackMethod": "sms_fallback_method",
    "SmsApplicationSid": "sms_application_sid",
    "StatusCallback": "status_callback",
    "StatusCallbackMethod": "status_callback_method",
}
_DEFAULTS = {name: ("POST" if name.endswith("method") else "") for name in URL_FIELDS.values()}
_DEFAULTS["voice_application_sid"] = ""
_DEFAULTS["sms_application_sid"] = ""
# AvailablePhoneNumbers/{Country}/<list>.json -> the inventory's number type.
LISTS = {"Local": "local", "Mobile": "mobile", "National": "national", "TollFree": "toll_free"}
_LIST_OF = {number_type: name for name, number_type in LISTS.items()}


def _authenticate(request: Request, account_sid: str) -> JSONResponse | None:
    creds = basic_credentials(request)
    if creds is None or creds[0] != account_sid or not creds[1]:
        return twilio_error(
            401,
            TW_AUTHENTICATE,
            "Authenticate",
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
    return None


def _not_found(request: Request) -> JSONResponse:
    return twilio_error(
        404, TW_NOT_FOUND, f"The requested resource {request.url.path} was not found"
    )


def _number_uri(account_sid: str, sid: str) -> str:
    return f"{API}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json"


def _twilio_date(value: datetime) -> str:
    return format_datetime(value)  # RFC 2822 with "+0000", as the 2010 API writes dates


def render_number(record: PhoneNumberRecord) -> dict[str, object]:
    uri = _number_uri(record.account_sid, record.sid)
    body: dict[str, object] = {
        "account_sid": record.account_sid,
        "address_requirements": record.address_requirements,
        "address_sid": record.address_sid,
        "api_version": "2010-04-01",
        "beta": False,
        "bundle_sid": record.bundle_sid,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": _twilio_date(record.date_created),
        "date_updated": _twilio_date(record.date_updated),
        "emergency_address_sid": None,
        "emergency_address_status": "unregistered",
        "emergency_status": "Active",
        "friendly_name": record.friendly_name,
        "identity_sid": None,
        "origin": "twilio",
        "phone_number": record.phone_number,
        "sid": record.sid,
        "status": "in-use",
        "subresource_uris": {
            "assigned_add_ons": uri.removesuffix(".json") + "/AssignedAddOns.json"
        },
        "trunk_sid": None,
        "uri": uri,
        "voice_caller_id_lookup": False,
        "voice_receive_mode": "voice",
    }
    for form_name, json_name in URL_FIELDS.items():
        body[json_name] = record.fields.get(form_name, _DEFAULTS[json_name])
    for json_name in ("voice_application_sid", "sms_application_sid"):
        body[json_name] = body[json_name] or None
    return body


def _validate_friendly_name(fields: dict[str, str]) -> JSONResponse | None:
    name = fields.get("FriendlyName")
    if name is not None and len(name) > FRIENDLY_NAME_MAX:
        return twilio_error(
            400, TW_BAD_REQUEST, f"FriendlyName is too long (max {FRIENDLY_NAME_MAX} characters)"
        )
    return None


def _url_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k in URL_FIELDS}


def _render_country(account_sid: str, country: str) -> dict[str, object]:
    """The AvailablePhoneNumberCountry resource: the country and, under `subresource_uris`,
    each number list it has (keyed local, mobile, national, toll_free)."""
    base = f"{API}/Accounts/{account_sid}/AvailablePhoneNumbers/{country}"
    known = pycountry.countries.get(alpha_2=country)
    return {
        "country_code": country,
        "country": getattr(known, "name", country),
        "uri": base + ".json",
        "beta": False,
        "subresource_uris": {t: f"{base}/{_LIST_OF[t]}.json" for t in number_types(country)},
    }


@router.get(API + "/Accounts/{account_sid}/AvailablePhoneNumbers.json")
async def available_countries(request: Request, account_sid: str) -> Response:
    """Every country whose numbers the account may search (Twilio: one page of them)."""
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    countries = [_render_country(account_sid, c) for c in SUPPORTED_COUNTRIES]
    return JSONResponse(single_page(request, "countries", countries, len(countries)))


@router.get(API + "/Accounts/{account_sid}/AvailablePhoneNumbers/{country}.json")
async def available_country(request: Request, account_sid: str, country: str) -> Response:
    """Which number lists a country has; 404 for one whose numbers Twilio does not sell."""
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    code = country.upper()
    if code != country or code not in SUPPORTED_COUNTRIES:
        return _not_found(request)
    return JSONResponse(_render_country(account_sid, code))


@router.get(API + "/Accounts/{account_sid}/AvailablePhoneNumbers/{country}/{kind}.json")
async def available_numbers(
    request: Request, account_sid: str, country: str, kind: str
) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    number_type = LISTS.get(kind)
    if number_type is None or number_type not in number_types(country):
        return _not_found(request)  # Twilio: 404 for a list the country does not have
    requirement = regulatory_state(request).rule_for(country, number_type).address
    params = request.query_params
    excluded = {
        "any": params.get("ExcludeAllAddressRequired"),
        "local": params.get("ExcludeLocalAddressRequired"),
        "foreign": params.get("ExcludeForeignAddressRequired"),
    }
    # The Exclude*AddressRequired filters drop numbers with that address requirement.
    numbers_wanted = (excluded.get(requirement) or "").lower() != "true"
    page_size = parse_page_size(params.get("PageSize"), default=50)
    if page_size is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize.")
    area_code = params.get("AreaCode")
    contains = params.get("Contains")
    calling_prefix = "+1" if country.upper() in ("US", "CA") else None

    def accept(number: str) -> bool:
        if area_code and (
            calling_prefix is None or not number.startswith(calling_prefix + area_code)
        ):
            return False
        return not contains or _matches_pattern(number, contains)

    numbers = sandbox_state(request).available(country, page_size, accept, number_type)
    if numbers is None:
        return _not_found(request)
    if not numbers_wanted:
        numbers = []
    iso = country.upper()
    rendered = [_render_available(n, iso, requirement) for n in numbers]
    return JSONResponse(single_page(request, "available_phone_numbers", rendered, page_size))


def _matches_pattern(number: str, pattern: str) -> bool:
    """Twilio's `Contains`: digits and `*` (any one digit) anywhere in the number."""
    regex = "".join(r"\d" if ch == "*" else re.escape(ch) for ch in pattern.strip())
    return re.search(regex, number) is not None


def _render_available(number: str, iso: str, requirement: str) -> dict[str, object]:
    return {
        "address_requirements": requirement,
        "beta": False,
        "capabilities": {"voice": True, "SMS": True, "MMS": True, "fax": False},
        "friendly_name": friendly_format(number),
        "iso_country": iso,
        "lata": None,
        "latitude": None,
        "locality": None,
        "longitude": None,
        "phone_number": number,
        "postal_code": None,
        "rate_center": None,
        "region": None,
    }


@router.post(API + "/Accounts/{account_sid}/IncomingPhoneNumbers.json")
async def create_number(request: Request, account_sid: str) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    fields = await form_fields(request)
    if (invalid := _validate_friendly_name(fields)) is not None:
        return invalid
    state = sandbox_state(request)
    phone_number = fields.get("PhoneNumber", "").strip()
    area_code = fields.get("AreaCode", "").strip()
    if not phone_number:
        if not area_code:
            return twilio_error(
                400, TW_NUMBER_REQUIRED, "A 'PhoneNumber' or 'AreaCode' parameter is required."
            )
        found = state.available("US", 1, lambda n: n.startswith("+1" + area_code))
        if not found:
            return twilio_error(
                400, TW_NUMBER_REQUIRED, f"No phone numbers found in area code {area_code}"
            )
        phone_number = found[0]
    if not E164.match(phone_number):
        return twilio_error(400, TW_NUMBER_INVALID, f"PhoneNumber {phone_number} is invalid")
    bundle_sid = fields.get("BundleSid") or None
    address_sid = fields.get("AddressSid") or None
    regulatory = regulatory_state(request)

    def check(country: str, number_type: str) -> str:
        return regulatory.check_purchase(account_sid, country, number_type, bundle_sid, address_sid)

    try:
        record = state.buy(
            account_sid,
            phone_number,
            fields.get("FriendlyName"),
            _url_fields(fields),
            check,
            bundle_sid,
            address_sid,
        )
    except NotAvailable:
        return twilio_error(400, TW_NUMBER_NOT_AVAILABLE, "PhoneNumber requested is not available")
    except Refused as refused:
        return twilio_error(400, refused.code, refused.message)
    return JSONResponse(render_number(record), status_code=201)


@router.get(API + "/Accounts/{account_sid}/IncomingPhoneNumbers.json")
async def list_numbers(request: Request, account_sid: str) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    params = request.query_params
    page_size = parse_page_size(params.get("PageSize"), default=50)
    page = parse_page(params.get("Page"))
    if page_size is None or page is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize or Page.")
    friendly_name = params.get("FriendlyName")
    phone_number = params.get("PhoneNumber")
    records = sandbox_state(request).list_numbers(account_sid, friendly_name, phone_number)
    sids = [r.sid for r in records]
    start, end = page_window(sids, page, page_size, params.get("PageToken"))
    items = records[start:end]

    path = request.url.path
    filters = [
        (k, v)
        for k, v in (("FriendlyName", friendly_name), ("PhoneNumber", phone_number))
        if v is not None
    ]

    def page_uri(index: int, token: str | None = None) -> str:
        query = [*filters, ("PageSize", str(page_size)), ("Page", str(index))]
        if token:
            query.append(("PageToken", token))
        return with_query(path, query)

    first_index = page * page_size
    return JSONResponse(
        {
            "incoming_phone_numbers": [render_number(r) for r in items],
            "end": first_index + max(0, len(items) - 1),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1, "PA" + items[-1].sid)
            if end < len(sids) and items
            else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1, "PB" + items[0].sid)
            if page > 0 and items
            else None,
            "start": first_index,
            "uri": page_uri(page, params.get("PageToken")),
        }
    )


@router.get(API + "/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json")
async def fetch_number(request: Request, account_sid: str, sid: str) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    try:
        record = sandbox_state(request).get_number(account_sid, sid)
    except NotFound:
        return _not_found(request)
    return JSONResponse(render_number(record))


@router.post(API + "/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json")
async def update_number(request: Request, account_sid: str, sid: str) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    fields = await form_fields(request)
    if (invalid := _validate_friendly_name(fields)) is not None:
        return invalid
    try:
        record = sandbox_state(request).update_number(
            account_sid, sid, fields.get("FriendlyName"), _url_fields(fields)
        )
    except NotFound:
        return _not_found(request)
    return JSONResponse(render_number(record))


@router.delete(API + "/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json")
async def release_number(request: Request, account_sid: str, sid: str) -> Response:
    if (denied := _authenticate(request, account_sid)) is not None:
        return denied
    try:
        sandbox_state(request).release_number(account_sid, sid)
    except NotFound:
        return _not_found(request)
    return Response(status_code=204)
