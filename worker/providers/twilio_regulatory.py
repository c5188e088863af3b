"""Twilio's Regulatory Compliance API (numbers.twilio.com `/v2/RegulatoryCompliance`): a
bundle and its regulation, read; and `verify_documents`, what `PUT /v0/providers/twilio/
regulatory/{country}` runs (as `PUT /v0/providers/google` runs `connections.verify`): the
bundle exists, is `twilio-approved` and is for that country and number type; the address
exists, passed validation, and is where the number's address requirement wants it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from worker.domain.regulatory import TWILIO_NUMBER_TYPE, Rule, address_meets, rule_for
from worker.providers._twilio import TwilioClient, require
from worker.providers.errors import INVALID_REQUEST, NotFound, Permanent
from worker.providers.http import timeout_from_settings
from worker.providers.twilio_numbers import TwilioNumbers
from worker.settings import Settings

APPROVED = "twilio-approved"
# What a country's numbers of one type need, for an end-user type (None: the strictest).
RuleOf = Callable[[str | None], Rule | None]


@dataclass(frozen=True)
class Bundle:
    sid: str
    status: str
    regulation_sid: str
    friendly_name: str


@dataclass(frozen=True)
class Regulation:
    sid: str
    iso_country: str
    number_type: str  # Twilio's spelling: local, mobile, national, toll-free
    end_user_type: str


class DocumentRefused(Permanent):
    """Twilio's answer refutes a regulatory document; `field` is the body field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("twilio", INVALID_REQUEST, message, 400)
        self.field = field


class TwilioCompliance(TwilioClient):
    """Client of `/v2/RegulatoryCompliance` (bundles and regulations, read only)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioCompliance:
        return cls(
            base_url=settings.twilio_numbers_url,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            timeout=timeout_from_settings(settings),
            max_connections=4,
            api_key_sid=settings.twilio_api_key_sid or None,
        )

    def fetch_bundle(self, sid: str) -> Bundle:
        body = self._request_json("GET", f"/v2/RegulatoryCompliance/Bundles/{quote(sid, safe='')}")
        return Bundle(
            sid=require(body, "sid"),
            status=require(body, "status"),
            regulation_sid=str(body.get("regulation_sid") or ""),
            friendly_name=str(body.get("friendly_name") or ""),
        )

    def fetch_regulation(self, sid: str) -> Regulation:
        body = self._request_json(
            "GET", f"/v2/RegulatoryCompliance/Regulations/{quote(sid, safe='')}"
        )
        return Regulation(
            sid=require(body, "sid"),
            iso_country=str(body.get("iso_country") or "").upper(),
            number_type=str(body.get("number_type") or ""),
            end_user_type=str(body.get("end_user_type") or ""),
        )

    def list_regulations(self, country: str, number_type: str) -> list[dict[str, Any]]:
        """Every Regulation of `country`'s `number_type` numbers (Twilio's spelling: local,
        mobile, national, toll-free), of both end-user types, as Twilio answers them, page by
        page through the v2 envelope's `meta.next_page_url`."""
        params = {"IsoCountry": country.upper(), "NumberType": number_type, "PageSize": 50}
        found: list[dict[str, Any]] = []
        pages = self._pages(
            "/v2/RegulatoryCompliance/Regulations",
            params,
            lambda page: (page.get("meta") or {}).get("next_page_url"),
        )
        for page in pages:
            found += [r for r in page.get("results") or [] if isinstance(r, dict)]
        return found


def verify_documents(
    settings: Settings,
    country: str,
    number_type: str,
    bundle_sid: str | None,
    address_sid: str | None,
    rule_of: RuleOf | None = None,
) -> dict[str, Any]:
    """Check an account's documents for `country`'s `number_type` numbers with Twilio; what
    Twilio answered (to keep), or `DocumentRefused` naming the field; `Retryable` when
    Twilio cannot be reached. `rule_of(end_user_type)` says what the numbers need (the
    caller's cached Regulations; the built-in table by default): for the bundle's end-user
    type once the bundle is read, for the strictest of them before."""
    judge = rule_of or (lambda _end_user_type: rule_for(country, number_type))
    rule = judge(None)
    if rule is None:
        raise DocumentRefused("number_type", f"{country} has no {number_type} numbers")
    learnt: dict[str, Any] = {}
    if rule.bundle and not bundle_sid:
        raise DocumentRefused(
            "bundle_sid", f"is required: {country} {number_type} numbers need an approved bundle"
        )
    if bundle_sid:
        with TwilioCompliance.from_settings(settings) as compliance:
            learnt |= _check_bundle(compliance, country, number_type, bundle_sid)
        rule = judge(learnt.get("end_user_type")) or rule
    if rule.address != "none" and not address_sid:
        raise DocumentRefused(
            "address_sid",
            f"is required: {country} {number_type} numbers need an address ({rule.address})",
        )
    if address_sid:
        with TwilioNumbers.from_settings(settings) as numbers:
            try:
                address = numbers.fetch_address(address_sid)
            except NotFound:
                raise DocumentRefused("address_sid", "Twilio has no such address") from None
        if not address.validated:
            raise DocumentRefused("address_sid", "the address failed Twilio's validation")
        if not address_meets(rule.address, country, address.iso_country):
            raise DocumentRefused(
                "address_sid",
                f"the address is in {address.iso_country}: {country} {number_type} numbers "
                f"need a {rule.address} address",
            )
        learnt["address_country"] = address.iso_country
    return learnt


def _check_bundle(
    compliance: TwilioCompliance, country: str, number_type: str, sid: str
) -> dict[str, Any]:
    try:
        bundle = compliance.fetch_bundle(sid)
    except NotFound:
        raise DocumentRefused("bundle_sid", "Twilio has no such bundle") from None
    if bundle.status != APPROVED:
        raise DocumentRefused("bundle_sid", f"the bundle is {bundle.status}, not {APPROVED}")
    try:
        regulation = compliance.fetch_regulation(bundle.regulation_sid)
    except NotFound:
        raise DocumentRefused("bundle_sid", "the bundle's regulation is unknown") from None
    wanted = TWILIO_NUMBER_TYPE[number_type]
    if (regulation.iso_country, regulation.number_type) != (country.upper(), wanted):
        raise DocumentRefused(
            "bundle_sid",
            f"the bundle is for {regulation.iso_country} {regulation.number_type} numbers, "
            f"not {country} {wanted}",
        )
    return {
        "bundle_status": bundle.status,
        "regulation_sid": regulation.sid,
        "end_user_type": regulation.end_user_type,
    }
