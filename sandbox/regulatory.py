"""Twilio's regulatory compliance, emulated: Regulations and Bundles (numbers.twilio.com
`/v2/RegulatoryCompliance/...`), Addresses (api.twilio.com `/2010-04-01/Accounts/{sid}/
Addresses.json`), and the check a purchase of a regulated number must pass.

What each rule is and where it comes from: docs/sandbox.md ("Regulatory compliance"). In
short: a Bundle is created `draft`, submitted by the customer (`Status=pending-review`) and
then approved or rejected by Twilio's reviewers (here: the `/_sandbox/twilio/bundles/{sid}/
approve|reject` controls); a number whose Regulation needs a bundle is sold only with an
approved bundle of that country and number type (else 21649), one with an address
requirement only with an address that meets it (else 21631), and an address that failed
validation is refused (21628). Addresses in the countries Twilio validates are checked when
created (21628, or 21629 with a suggestion when `AutoCorrectAddress=false`).
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Literal

import pycountry
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from sandbox.errors import (
    TW_ADDRESS_INVALID,
    TW_ADDRESS_REQUIRED,
    TW_ADDRESS_SUGGESTION,
    TW_AUTHENTICATE,
    TW_BAD_REQUEST,
    TW_BUNDLE_INVALID_TYPE,
    TW_BUNDLE_REQUIRED,
    TW_NOT_FOUND,
    twilio_error,
)
from sandbox.http import basic_credentials, form_fields, parse_page, parse_page_size, with_query
from sandbox.inventory import number_types
from sandbox.state import Refused, utcnow

router = APIRouter()
controls = APIRouter(prefix="/_sandbox/twilio")

V2 = "/v2/RegulatoryCompliance"
API = "/2010-04-01"

# Twilio's NumberType spelling (Bundles, Regulations) -> the inventory's list name.
NUMBER_TYPES = {
    "local": "local",
    "mobile": "mobile",
    "national": "national",
    "toll-free": "toll_free",
}
TWILIO_TYPE = {v: k for k, v in NUMBER_TYPES.items()}
END_USER_TYPES = ("individual", "business")
BUNDLE_STATUSES = (
    "draft",
    "pending-review",
    "in-review",
    "twilio-rejected",
    "twilio-approved",
    "provisionally-approved",
)


@dataclass(frozen=True)
class Rule:
    """What a country's number type needs: an approved bundle, and an address that is
    `none`, `any` (anywhere), `local` (in the number's country) or `foreign` (outside it)."""

    bundle: bool
    address: str


# (country, number type) -> its rule, for every list the sandbox sells. From Twilio's
# Phone Number Regulatory Guidelines per country (twilio.com/en-us/guidelines/<cc>/regulatory)
# as docs/sandbox.md cites them: the US and Canada need nothing; the European countries and
# Australia need a bundle for every type, and a local address for geographic numbers in
# Germany, France, Australia and Ireland. Countries not listed here (NL, SE, ...) sell only
# Local numbers, unregulated in the sandbox.
RULES: dict[tuple[str, str], Rule] = {
    ("US", "local"): Rule(False, "none"),
    ("US", "toll_free"): Rule(False, "none"),
    ("CA", "local"): Rule(False, "none"),
    ("GB", "local"): Rule(True, "any"),
    ("GB", "mobile"): Rule(True, "any"),
    ("GB", "national"): Rule(True, "any"),
    ("GB", "toll_free"): Rule(True, "any"),
    ("DE", "local"): Rule(True, "local"),
    ("DE", "mobile"): Rule(True, "any"),
    ("DE", "national"): Rule(True, "any"),
    ("DE", "toll_free"): Rule(True, "any"),
    ("FR", "local"): Rule(True, "local"),
    ("FR", "mobile"): Rule(True, "any"),
    ("FR", "national"): Rule(True, "any"),
    ("FR", "toll_free"): Rule(True, "any"),
    ("AU", "local"): Rule(True, "local"),
    ("AU", "mobile"): Rule(True, "any"),
    ("AU", "toll_free"): Rule(True, "any"),
    ("IE", "local"): Rule(True, "local"),
    ("IE", "mobile"): Rule(True, "any"),
    ("IE", "national"): Rule(True, "any"),
    ("IE", "toll_free"): Rule(True, "any"),
}
UNREGULATED = Rule(False, "none")

# Countries whose addresses Twilio validates with a third party (its address validation
# FAQ), with the postal-code form the sandbox checks in place of that third party.
_POSTAL_CODES: dict[str, re.Pattern[str]] = {
    "GB": re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?) ?(\d[A-Z]{2})$"),
    "DE": re.compile(r"^(\d{5})()$"),
    "FR": re.compile(r"^(\d{5})()$"),
    "AU": re.compile(r"^(\d{4})()$"),
    "IE": re.compile(r"^([AC-FHKNPRTV-Y]\d[\dW]) ?([\dAC-FHKNPRTV-Y]{4})$"),
    "NL": re.compile(r"^(\d{4}) ?([A-Z]{2})$"),
    "AT": re.compile(r"^(\d{4})()$"),
    "ES": re.compile(r"^(\d{5})()$"),
    "IT": re.compile(r"^(\d{5})()$"),
    "PL": re.compile(r"^(\d{2})-?(\d{3})$"),
    "LU": re.compile(r"^(\d{4})()$"),
    "BR": re.compile(r"^(\d{5})-?(\d{3})$"),
    "MX": re.compile(r"^(\d{5})()$"),
}
_JOIN = {"GB": " ", "IE": " ", "NL": " ", "PL": "-", "BR": "-"}


def regulation_sid(country: str, number_type: str, end_user_type: str) -> str:
    digest = hashlib.sha256(f"{country}/{number_type}/{end_user_type}".encode()).hexdigest()
    return "RN" + digest[:32]


@dataclass(frozen=True)
class Regulation:
    sid: str
    country: str
    number_type: str  # the inventory's name (toll_free)
    end_user_type: str
    rule: Rule


def regulations_of(rules: dict[tuple[str, str], Rule]) -> dict[str, Regulation]:
    """The Regulations a rule table gives: one per end-user type for each country and type
    that needs a bundle (the ones a Bundle is made for)."""
    return {
        regulation_sid(c, t, e): Regulation(regulation_sid(c, t, e), c, t, e, rule)
        for (c, t), rule in rules.items()
        if rule.bundle
        for e in END_USER_TYPES
    }


# Every Regulation the built-in table has: what a fresh sandbox (and each reset) answers.
REGULATIONS: dict[str, Regulation] = regulations_of(RULES)


@dataclass
class BundleRecord:
    sid: str
    account_sid: str
    regulation_sid: str
    friendly_name: str
    email: str
    status_callback: str | None
    is_test: bool
    date_created: datetime
    date_updated: datetime
    status: str = "draft"


@dataclass
class AddressRecord:
    sid: str
    account_sid: str
    fields: dict[str, Any]
    date_created: datetime
    date_updated: datetime
    validated: bool = True
    verified: bool = False


@dataclass
class RegulatoryState:
    """Bundles and addresses of every account; one lock, never held across an await."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bundles: dict[str, BundleRecord] = field(default_factory=dict)
    _addresses: dict[str, AddressRecord] = field(default_factory=dict)
    # The rules in force: RULES, as the `/_sandbox/twilio/regulations` control changed them
    # (Twilio changes a country's requirements from time to time).
    _rules: dict[tuple[str, str], Rule] = field(default_factory=lambda: dict(RULES))
    _regulations: dict[str, Regulation] = field(default_factory=lambda: dict(REGULATIONS))
    # Every regulation ever in force, by SID: a bundle keeps its regulation's country and
    # type after a rule change withdrew it.
    _known: dict[str, Regulation] = field(default_factory=lambda: dict(REGULATIONS))

    def reset(self) -> None:
        with self._lock:
            self._bundles.clear()
            self._addresses.clear()
            self._rules = dict(RULES)
            self._regulations = dict(REGULATIONS)
            self._known = dict(REGULATIONS)

    def rule_for(self, country: str, number_type: str) -> Rule:
        with self._lock:
            return self._rules.get((country.upper(), number_type), UNREGULATED)

    def set_rule(self, country: str, number_type: str, rule: Rule) -> Rule:
        """Change what a country's number type needs: its Regulations, its numbers'
        `address_requirements` and the purchase check follow at once."""
        with self._lock:
            self._rules[(country.upper(), number_type)] = rule
            self._regulations = regulations_of(self._rules)
            self._known.update(self._regulations)
            return rule

    def regulations(self) -> list[Regulation]:
        with self._lock:
            return list(self._regulations.values())

    def regulation(self, sid: str) -> Regulation | None:
        """A regulation in force."""
        with self._lock:
            return self._regulations.get(sid)

    def regulation_ever(self, sid: str) -> Regulation | None:
        """A regulation in force now or before (what a bundle was made for)."""
        with self._lock:
            return self._known.get(sid)

    def add_bundle(self, record: BundleRecord) -> BundleRecord:
        with self._lock:
            self._bundles[record.sid] = record
            return copy.deepcopy(record)

    def bundle(self, account_sid: str, sid: str) -> BundleRecord | None:
        with self._lock:
            record = self._bundles.get(sid)
            ok = record is not None and record.account_sid == account_sid
            return copy.deepcopy(record) if ok else None

    def find_bundle(self, sid: str) -> BundleRecord | None:
        """Any account's bundle (for the review controls)."""
        with self._lock:
            record = self._bundles.get(sid)
            return copy.deepcopy(record) if record is not None else None

    def bundles(self, account_sid: str) -> list[BundleRecord]:
        with self._lock:
            return [
                copy.deepcopy(b) for b in self._bundles.values() if b.account_sid == account_sid
            ]

    def set_bundle_status(
        self, sid: str, status: str, account_sid: str | None = None, **changes: Any
    ) -> BundleRecord | None:
        with self._lock:
            record = self._bundles.get(sid)
            if record is None or (account_sid is not None and record.account_sid != account_sid):
                return None
            record.status = status
            for name, value in changes.items():
                setattr(record, name, value)
            record.date_updated = utcnow()
            return copy.deepcopy(record)

    def delete_bundle(self, account_sid: str, sid: str) -> bool:
        with self._lock:
            record = self._bundles.get(sid)
            if record is None or record.account_sid != account_sid:
                return False
            del self._bundles[sid]
            return True

    def add_address(self, record: AddressRecord) -> AddressRecord:
        with self._lock:
            self._addresses[record.sid] = record
            return copy.deepcopy(record)

    def address(self, account_sid: str, sid: str) -> AddressRecord | None:
        with self._lock:
            record = self._addresses.get(sid)
            ok = record is not None and record.account_sid == account_sid
            return copy.deepcopy(record) if ok else None

    def addresses(self, account_sid: str) -> list[AddressRecord]:
        with self._lock:
            return [
                copy.deepcopy(a) for a in self._addresses.values() if a.account_sid == account_sid
            ]

    def invalidate_address(self, sid: str) -> AddressRecord | None:
        with self._lock:
            record = self._addresses.get(sid)
            if record is None:
                return None
            record.validated = False
            record.date_updated = utcnow()
            return copy.deepcopy(record)

    def delete_address(self, account_sid: str, sid: str) -> bool:
        with self._lock:
            record = self._addresses.get(sid)
            if record is None or record.account_sid != account_sid:
                return False
            del self._addresses[sid]
            return True

    # --- the purchase ---------------------------------------------------------------------

    def check_purchase(
        self,
        account_sid: str,
        country: str,
        number_type: str,
        bundle_sid: str | None,
        address_sid: str | None,
    ) -> str:
        """The number's `address_requirements` if the documents given satisfy its rule; else
        raises `Refused` with Twilio's code."""
        rule = self.rule_for(country, number_type)
        shown = TWILIO_TYPE[number_type]
        if bundle_sid:
            bundle = self.bundle(account_sid, bundle_sid)
            if bundle is None:
                raise Refused(TW_BUNDLE_REQUIRED, f"Bundle {bundle_sid} was not found")
            if bundle.status != "twilio-approved":
                raise Refused(
                    TW_BUNDLE_REQUIRED, f"Bundle {bundle_sid} status is not twilio-approved"
                )
            regulation = self.regulation_ever(bundle.regulation_sid)
            if regulation is None or (regulation.country, regulation.number_type) != (
                country,
                number_type,
            ):
                raise Refused(
                    TW_BUNDLE_REQUIRED,
                    f"Bundle {bundle_sid} is not for {country} {shown} phone numbers",
                )
        elif rule.bundle:
            raise Refused(
                TW_BUNDLE_REQUIRED,
                f"Phone Number Requires a Bundle: a twilio-approved BundleSid for {country} "
                f"{shown} numbers is required",
            )
        if rule.address == "none" and not address_sid:
            return rule.address
        if not address_sid:
            raise Refused(
                TW_ADDRESS_REQUIRED,
                f"Phone Number Requires an Address ({rule.address} address requirement)",
            )
        address = self.address(account_sid, address_sid)
        wrong_place = address is not None and (
            (rule.address == "local" and address.fields["iso_country"] != country)
            or (rule.address == "foreign" and address.fields["iso_country"] == country)
        )
        if address is None or wrong_place:
            raise Refused(
                TW_ADDRESS_REQUIRED,
                f"Could not find Address with sid {address_sid} for account {account_sid} to "
                f"satisfy {rule.address.capitalize()} Address requirement",
            )
        if not address.validated:
            raise Refused(
                TW_ADDRESS_INVALID,
                f"The address you have provided cannot be validated ({address_sid})",
            )
        return rule.address


def regulatory_state(request: Request) -> RegulatoryState:
    state: RegulatoryState = request.app.state.regulatory
    return state


def _account(request: Request, account_sid: str | None = None) -> str | JSONResponse:
    """The caller's Account SID (basic auth username; it must be the path's on the 2010 API)."""
    creds = basic_credentials(request)
    if creds is None or not creds[0] or not creds[1] or (account_sid and creds[0] != account_sid):
        return twilio_error(
            401,
            TW_AUTHENTICATE,
            "Authenticate",
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
    return creds[0]


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _not_found(request: Request) -> JSONResponse:
    return twilio_error(
        404, TW_NOT_FOUND, f"The requested resource {request.url.path} was not found"
    )


def _missing(name: str) -> JSONResponse:
    return twilio_error(400, TW_BAD_REQUEST, f"Missing required parameter {name} in the post body")


def _page(
    request: Request, items: list[dict[str, Any]], key: str, default_size: int = 50
) -> JSONResponse:
    params = request.query_params
    size = parse_page_size(params.get("PageSize"), default=default_size)
    page = parse_page(params.get("Page"))
    if size is None or page is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize or Page.")
    chunk = items[page * size : (page + 1) * size]
    filters = [
        (k, v) for k, v in params.multi_items() if k not in ("Page", "PageSize", "PageToken")
    ]
    url = _base(request) + request.url.path

    def at(index: int) -> str:
        return with_query(url, [*filters, ("PageSize", str(size)), ("Page", str(index))])

    more = (page + 1) * size < len(items)
    return JSONResponse(
        {
            key: chunk,
            "meta": {
                "page": page,
                "page_size": size,
                "first_page_url": at(0),
                "previous_page_url": at(page - 1) if page > 0 else None,
                "url": at(page),
                "next_page_url": at(page + 1) if more else None,
                "key": key,
            },
        }
    )


# --- Regulations ------------------------------------------------------------------------------


# Twilio's own words for a proof of address, by the address requirement it stands for
# (the `local` one is the description in twilio-oai's Regulations example, AU Local).
_ADDRESS_DESCRIPTIONS = {
    "local": "The physical location of the individual or business. Must be within locality or "
    "region covered by the phone numbers prefix; a PO Box is not acceptable where a local "
    "address is required.",
    "foreign": "The physical location of the individual or business. Must be outside the "
    "country of the phone number.",
    "any": "The physical location of the individual or business.",
}
_END_USER_FIELDS = {
    "individual": [("first_name", "First Name", "First name of the Individual"),
                   ("last_name", "Last Name", "Last name of the Individual")],
    "business": [("business_name", "Business Name", "Name of the company")],
}  # fmt: skip


def _detailed(fields: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{"machine_name": m, "friendly_name": f, "description": d} for m, f, d in fields]


def render_regulation(request: Request, regulation: Regulation) -> dict[str, Any]:
    """A Regulation as twilio-oai's `numbers.v2.regulatory_compliance.regulation` has it:
    sid, friendly_name, iso_country, number_type, end_user_type, requirements (end_user,
    supporting_document: groups of which one document each is needed) and url."""
    country = pycountry.countries.get(alpha_2=regulation.country)
    country_name = country.name if country is not None else regulation.country
    shown = TWILIO_TYPE[regulation.number_type]
    base = _base(request)
    supporting: list[list[dict[str, Any]]] = []
    if regulation.rule.address != "none":
        supporting.append(
            [
                {
                    "name": "Address",
                    "type": "document",
                    "requirement_name": "proof_of_address",
                    "description": _ADDRESS_DESCRIPTIONS[regulation.rule.address],
                    "accepted_documents": [
                        {
                            "name": "Address Validation",
                            "type": "address",
                            "url": f"{base}{V2}/DocumentTypes/address",
                            "fields": ["address_sids"],
                            "detailed_fields": _detailed(
                                [("address_sids", "Address sid(s)", "Address sid of the end user")]
                            ),
                        }
                    ],
                }
            ]
        )
    fields = _END_USER_FIELDS[regulation.end_user_type]
    return {
        "sid": regulation.sid,
        "friendly_name": f"{country_name}: {shown.capitalize()} - "
        f"{regulation.end_user_type.capitalize()}",
        "iso_country": regulation.country,
        "number_type": shown,
        "end_user_type": regulation.end_user_type,
        "requirements": {
            "end_user": [
                {
                    "name": regulation.end_user_type.capitalize(),
                    "type": regulation.end_user_type,
                    "requirement_name": f"{regulation.end_user_type}_info",
                    "url": f"{base}{V2}/Regulations/{regulation.end_user_type}",
                    "fields": [f[0] for f in fields],
                    "detailed_fields": _detailed(fields),
                }
            ],
            "supporting_document": supporting,
        },
        "url": f"{base}{V2}/Regulations/{regulation.sid}",
    }


@router.get(V2 + "/Regulations")
async def list_regulations(request: Request) -> Response:
    """Filtered by IsoCountry, NumberType and EndUserType (IncludeConstraints is accepted;
    the sandbox has no constraints to add), in the v2 envelope (`results`, `meta`)."""
    if isinstance(denied := _account(request), JSONResponse):
        return denied
    params = request.query_params
    country = (params.get("IsoCountry") or "").upper() or None
    number_type = params.get("NumberType")
    end_user_type = params.get("EndUserType")
    if number_type is not None and number_type not in NUMBER_TYPES:
        return twilio_error(400, TW_BUNDLE_INVALID_TYPE, f"Invalid NumberType {number_type}")
    if end_user_type is not None and end_user_type not in END_USER_TYPES:
        return twilio_error(400, TW_BUNDLE_INVALID_TYPE, f"Invalid EndUserType {end_user_type}")
    found = [
        render_regulation(request, r)
        for r in regulatory_state(request).regulations()
        if (country is None or r.country == country)
        and (number_type is None or r.number_type == NUMBER_TYPES[number_type])
        and (end_user_type is None or r.end_user_type == end_user_type)
    ]
    return _page(request, found, "results")


@router.get(V2 + "/Regulations/{sid}")
async def fetch_regulation(request: Request, sid: str) -> Response:
    if isinstance(denied := _account(request), JSONResponse):
        return denied
    regulation = regulatory_state(request).regulation(sid)
    if regulation is None:
        return _not_found(request)
    return JSONResponse(render_regulation(request, regulation))


class RuleBody(BaseModel):
    """What a country's number type needs from now on."""

    model_config = ConfigDict(extra="forbid")

    bundle: bool
    address: Literal["none", "any", "local", "foreign"]


@controls.put("/regulations/{country}/{number_type}")
async def set_regulation(request: Request, country: str, number_type: str) -> Response:
    """Twilio changes what a country's number type needs (`number_type` in Twilio's
    spelling: local, mobile, national, toll-free): its Regulations, its numbers'
    `address_requirements` and the purchase check answer the new rule at once."""
    code = country.upper()
    kind = NUMBER_TYPES.get(number_type)
    if pycountry.countries.get(alpha_2=code) is None or len(code) != 2:
        return JSONResponse({"detail": f"no country {country}"}, status_code=404)
    if kind is None or kind not in number_types(code):
        return JSONResponse(
            {"detail": f"{code} sells no {number_type} numbers here"}, status_code=404
        )
    try:
        body = RuleBody.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": exc.errors(include_url=False)}, status_code=422)
    rule = regulatory_state(request).set_rule(code, kind, Rule(body.bundle, body.address))
    return JSONResponse(
        {"country": code, "number_type": number_type, "bundle": rule.bundle,
         "address": rule.address}
    )  # fmt: skip


# --- Bundles ----------------------------------------------------------------------------------


def render_bundle(request: Request, bundle: BundleRecord) -> dict[str, Any]:
    url = f"{_base(request)}{V2}/Bundles/{bundle.sid}"
    return {
        "sid": bundle.sid,
        "account_sid": bundle.account_sid,
        "regulation_sid": bundle.regulation_sid,
        "friendly_name": bundle.friendly_name,
        "status": bundle.status,
        "valid_until": None,
        "email": bundle.email,
        "status_callback": bundle.status_callback,
        "date_created": _iso(bundle.date_created),
        "date_updated": _iso(bundle.date_updated),
        "url": url,
        "links": {
            "evaluations": url + "/Evaluations",
            "item_assignments": url + "/ItemAssignments",
            "bundle_copies": url + "/Copies",
        },
    }


@router.post(V2 + "/Bundles")
async def create_bundle(request: Request) -> Response:
    if isinstance(account := _account(request), JSONResponse):
        return account
    fields = await form_fields(request)
    state = regulatory_state(request)
    for name in ("FriendlyName", "Email"):
        if not fields.get(name):
            return _missing(name)
    sid = fields.get("RegulationSid")
    if sid:
        if state.regulation(sid) is None:
            return twilio_error(400, TW_BUNDLE_INVALID_TYPE, f"Regulation {sid} was not found")
    else:
        country = (fields.get("IsoCountry") or "").upper()
        number_type = fields.get("NumberType") or ""
        end_user_type = fields.get("EndUserType") or ""
        if number_type not in NUMBER_TYPES or end_user_type not in END_USER_TYPES:
            return twilio_error(
                400, TW_BUNDLE_INVALID_TYPE, "An invalid End-User Type or Number Type was given"
            )
        sid = regulation_sid(country, NUMBER_TYPES[number_type], end_user_type)
        if state.regulation(sid) is None:
            return twilio_error(
                400,
                TW_BUNDLE_INVALID_TYPE,
                f"No regulation requires a bundle for {country} {number_type} numbers "
                f"({end_user_type})",
            )
    now = utcnow()
    record = state.add_bundle(
        BundleRecord(
            sid="BU" + uuid.uuid4().hex,
            account_sid=account,
            regulation_sid=sid,
            friendly_name=fields["FriendlyName"],
            email=fields["Email"],
            status_callback=fields.get("StatusCallback") or None,
            is_test=fields.get("IsTest", "").lower() == "true",
            date_created=now,
            date_updated=now,
        )
    )
    return JSONResponse(render_bundle(request, record), status_code=201)


@router.get(V2 + "/Bundles")
async def list_bundles(request: Request) -> Response:
    if isinstance(account := _account(request), JSONResponse):
        return account
    params = request.query_params
    country = (params.get("IsoCountry") or "").upper() or None
    number_type = NUMBER_TYPES.get(params.get("NumberType") or "")
    state = regulatory_state(request)
    bundles = [
        b
        for b in state.bundles(account)
        if (params.get("Status") is None or b.status == params["Status"])
        and (params.get("FriendlyName") is None or b.friendly_name == params["FriendlyName"])
        and (params.get("RegulationSid") is None or b.regulation_sid == params["RegulationSid"])
        and (country is None or _regulation_of(state, b).country == country)
        and (number_type is None or _regulation_of(state, b).number_type == number_type)
    ]
    return _page(request, [render_bundle(request, b) for b in bundles], "results")


def _regulation_of(state: RegulatoryState, bundle: BundleRecord) -> Regulation:
    regulation = state.regulation_ever(bundle.regulation_sid)
    assert regulation is not None  # a bundle is made only for a regulation in force
    return regulation


@router.get(V2 + "/Bundles/{sid}")
async def fetch_bundle(request: Request, sid: str) -> Response:
    if isinstance(account := _account(request), JSONResponse):
        return account
    record = regulatory_state(request).bundle(account, sid)
    if record is None:
        return _not_found(request)
    return JSONResponse(render_bundle(request, record))


@router.post(V2 + "/Bundles/{sid}")
async def update_bundle(request: Request, sid: str) -> Response:
    """The customer's update: its names, and `Status=pending-review` to submit a draft (or a
    rejected bundle, corrected) for review; Twilio's reviewers set every other status."""
    if isinstance(account := _account(request), JSONResponse):
        return account
    fields = await form_fields(request)
    state = regulatory_state(request)
    record = state.bundle(account, sid)
    if record is None:
        return _not_found(request)
    status = fields.get("Status")
    if status is not None and status not in BUNDLE_STATUSES:
        return twilio_error(400, 22203, f"Unable to parse bundle status {status}")
    if status is not None and status != record.status:
        if status != "pending-review" or record.status not in ("draft", "twilio-rejected"):
            return twilio_error(
                400, TW_BAD_REQUEST, f"Bundle status cannot change from {record.status} to {status}"
            )
        if record.is_test:  # Twilio: "a Test Bundle ... will be Auto-Rejected"
            status = "twilio-rejected"
    changes = {
        attr: fields[name]
        for name, attr in (
            ("FriendlyName", "friendly_name"),
            ("Email", "email"),
            ("StatusCallback", "status_callback"),
        )
        if fields.get(name)
    }
    updated = state.set_bundle_status(sid, status or record.status, account, **changes)
    assert updated is not None
    return JSONResponse(render_bundle(request, updated))


@router.delete(V2 + "/Bundles/{sid}")
async def delete_bundle(request: Request, sid: str) -> Response:
    if isinstance(account := _account(request), JSONResponse):
        return account
    if not regulatory_state(request).delete_bundle(account, sid):
        return _not_found(request)
    return Response(status_code=204)


@controls.post("/bundles/{sid}/approve")
async def approve_bundle(request: Request, sid: str) -> Response:
    """Twilio's review approves a submitted bundle."""
    state = regulatory_state(request)
    found = state.find_bundle(sid)
    status = found.status if found is not None else None
    if status is None:
        return JSONResponse({"detail": f"no bundle {sid}"}, status_code=404)
    if status == "draft":
        return JSONResponse(
            {"detail": "a draft bundle is not under review: submit it first"}, status_code=409
        )
    updated = state.set_bundle_status(sid, "twilio-approved")
    assert updated is not None
    return JSONResponse(render_bundle(request, updated))


@controls.post("/bundles/{sid}/reject")
async def reject_bundle(request: Request, sid: str) -> Response:
    """Twilio's review rejects a bundle: a submitted one, or one approved before."""
    updated = regulatory_state(request).set_bundle_status(sid, "twilio-rejected")
    if updated is None:
        return JSONResponse({"detail": f"no bundle {sid}"}, status_code=404)
    return JSONResponse(render_bundle(request, updated))


# --- Addresses --------------------------------------------------------------------------------

_ADDRESS_FIELDS = {
    "CustomerName": "customer_name",
    "Street": "street",
    "StreetSecondary": "street_secondary",
    "City": "city",
    "Region": "region",
    "PostalCode": "postal_code",
    "IsoCountry": "iso_country",
    "FriendlyName": "friendly_name",
}
_REQUIRED_ADDRESS = ("CustomerName", "Street", "City", "Region", "PostalCode", "IsoCountry")


def render_address(address: AddressRecord) -> dict[str, Any]:
    return {
        "account_sid": address.account_sid,
        "sid": address.sid,
        **{name: address.fields.get(name) for name in _ADDRESS_FIELDS.values()},
        "emergency_enabled": address.fields.get("emergency_enabled", False),
        "validated": address.validated,
        "verified": address.verified,
        "date_created": format_datetime(address.date_created),
        "date_updated": format_datetime(address.date_updated),
        "uri": f"{API}/Accounts/{address.account_sid}/Addresses/{address.sid}.json",
    }


def validate_postal_code(country: str, postal_code: str) -> tuple[bool, str | None]:
    """(valid as given, the suggested form) for a country Twilio validates; (True, None) for
    one it does not."""
    pattern = _POSTAL_CODES.get(country)
    if pattern is None:
        return True, None
    exact = pattern.match(postal_code)
    if exact is not None:
        return True, None
    loose = pattern.match(re.sub(r"\s+", "", postal_code).upper())
    if loose is None:
        return False, None
    head, tail = loose.group(1), loose.group(2)
    return False, head + (_JOIN.get(country, "") if tail else "") + tail


@router.post(API + "/Accounts/{account_sid}/Addresses.json")
async def create_address(request: Request, account_sid: str) -> Response:
    if isinstance(account := _account(request, account_sid), JSONResponse):
        return account
    fields = await form_fields(request)
    for name in _REQUIRED_ADDRESS:
        if not fields.get(name, "").strip():
            return _missing(name)
    country = fields["IsoCountry"].strip().upper()
    if len(country) != 2 or pycountry.countries.get(alpha_2=country) is None:
        return twilio_error(400, TW_BAD_REQUEST, f"IsoCountry {fields['IsoCountry']} is invalid")
    values = {
        attr: fields[name].strip() for name, attr in _ADDRESS_FIELDS.items() if name in fields
    }
    values["iso_country"] = country
    values["emergency_enabled"] = fields.get("EmergencyEnabled", "").lower() == "true"
    valid, suggestion = validate_postal_code(country, values["postal_code"])
    if not valid:
        if suggestion is None:
            return twilio_error(
                400, TW_ADDRESS_INVALID, "The address you have provided cannot be validated."
            )
        if fields.get("AutoCorrectAddress", "true").lower() == "false":
            return twilio_error(
                400,
                TW_ADDRESS_SUGGESTION,
                "The address you have provided cannot be validated. A similar address has been "
                f"found to be valid: {values['street']}, {values['city']}, {suggestion}, {country}",
            )
        values["postal_code"] = suggestion  # AutoCorrectAddress defaults to true
    now = utcnow()
    record = regulatory_state(request).add_address(
        AddressRecord(
            sid="AD" + uuid.uuid4().hex,
            account_sid=account,
            fields=values,
            date_created=now,
            date_updated=now,
            validated=True,
            verified=country in _POSTAL_CODES,
        )
    )
    return JSONResponse(render_address(record), status_code=201)


@router.get(API + "/Accounts/{account_sid}/Addresses.json")
async def list_addresses(request: Request, account_sid: str) -> Response:
    if isinstance(account := _account(request, account_sid), JSONResponse):
        return account
    params = request.query_params
    found = [
        render_address(a)
        for a in regulatory_state(request).addresses(account)
        if (
            params.get("CustomerName") is None
            or a.fields["customer_name"] == params["CustomerName"]
        )
        and (
            params.get("FriendlyName") is None
            or a.fields.get("friendly_name") == params["FriendlyName"]
        )
        and (
            params.get("IsoCountry") is None
            or a.fields["iso_country"] == params["IsoCountry"].upper()
        )
    ]
    size = parse_page_size(params.get("PageSize"), default=50)
    page = parse_page(params.get("Page"))
    if size is None or page is None:
        return twilio_error(400, TW_BAD_REQUEST, "Invalid PageSize or Page.")
    chunk = found[page * size : (page + 1) * size]
    path = request.url.path
    return JSONResponse(
        {
            "addresses": chunk,
            "end": page * size + max(0, len(chunk) - 1),
            "first_page_uri": with_query(path, [("PageSize", str(size)), ("Page", "0")]),
            "next_page_uri": with_query(path, [("PageSize", str(size)), ("Page", str(page + 1))])
            if (page + 1) * size < len(found)
            else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": None,
            "start": page * size,
            "uri": with_query(path, [("PageSize", str(size)), ("Page", str(page))]),
        }
    )


@router.get(API + "/Accounts/{account_sid}/Addresses/{sid}.json")
async def fetch_address(request: Request, account_sid: str, sid: str) -> Response:
    if isinstance(account := _account(request, account_sid), JSONResponse):
        return account
    record = regulatory_state(request).address(account, sid)
    if record is None:
        return _not_found(request)
    return JSONResponse(render_address(record))


@router.delete(API + "/Accounts/{account_sid}/Addresses/{sid}.json")
async def delete_address(request: Request, account_sid: str, sid: str) -> Response:
    if isinstance(account := _account(request, account_sid), JSONResponse):
        return account
    if not regulatory_state(request).delete_address(account, sid):
        return _not_found(request)
    return Response(status_code=204)


@controls.post("/addresses/{sid}/invalidate")
async def invalidate_address(request: Request, sid: str) -> Response:
    """The address fails Twilio's validation after it was made (`validated: false`): a
    purchase that needs it is refused with 21628."""
    record = regulatory_state(request).invalidate_address(sid)
    if record is None:
        return JSONResponse({"detail": f"no address {sid}"}, status_code=404)
    return JSONResponse(render_address(record))
