"""Validation and normalisation of a contact request body; every error names its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
import pycountry

from worker.domain.contacts import ContactType
from worker.domain.errors import InvalidRequest
from worker.domain.regulatory import LOCAL, NUMBER_TYPES

# Google Workspace usernames: letters, digits, dashes, underscores, apostrophes and periods;
# no leading, trailing or consecutive periods; at most 64 characters.
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9_'\-]+(\.[A-Za-z0-9_'\-]+)*$")
EMAIL_LOCAL_MAX = 64
NAME_MAX = 60  # Google Workspace: first and last names at most 60 characters, no < or >
PHONE_INPUT_MAX = 32
DEFAULT_COUNTRY = "US"

BODY_FIELDS = (
    "contact_type",
    "phone_country",
    "user_phone",
    "email_local",
    "first_name",
    "last_name",
    "user_whatsapp_number",
    "email_provider",
    "provisioned_by",
    "address",
    "phone_number_type",
    "whatsapp_sender",
)
EMAIL_PROVIDERS = ("google", "microsoft")
WHATSAPP_SENDERS = ("dedicated", "shared")
# `provisioned_by: "user"`: the customer brings an address it already has (no provider step).
PROVISIONED_BY = ("platform", "user")
ADDRESS_MAX = 320
_ADDRESS = re.compile(
    r"^[A-Za-z0-9._'+-]{1,64}@(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


@dataclass(frozen=True)
class ContactRequest:
    """A valid request, normalised; `fields` holds only what the type uses."""

    contact_type: ContactType
    fields: dict[str, str | None]

    def as_dict(self) -> dict[str, str | None]:
        return {"contact_type": self.contact_type.value, **self.fields}


def validate_contact_request(body: Any) -> ContactRequest:
    """Check `body` (parsed JSON) against the rules of its `contact_type` and normalise it.

    Fields that do not belong to the type are ignored, as in the original API.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object", {"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    raw = {name: body.get(name) for name in BODY_FIELDS}
    for name, value in raw.items():
        if value is not None and not isinstance(value, str):
            errors[name] = "must be a string or null"
    if errors:
        raise _invalid(errors)

    type_value = raw["contact_type"]
    if type_value is None:
        raise _invalid({"contact_type": "is required: one of phone, email, whatsapp"})
    try:
        contact_type = ContactType(type_value)
    except ValueError:
        raise _invalid({"contact_type": "must be one of phone, email, whatsapp"}) from None

    fields: dict[str, str | None] = {}
    if raw["provisioned_by"] not in (None, *PROVISIONED_BY):
        raise _invalid({"provisioned_by": "must be platform or user"})
    if raw["provisioned_by"] == "user":
        return ContactRequest(contact_type, _brought(contact_type, raw["address"]))
    if contact_type in (ContactType.PHONE, ContactType.WHATSAPP):
        fields["phone_country"] = _country(raw["phone_country"], errors)
    if contact_type is ContactType.PHONE:
        fields["phone_number_type"] = _number_type(raw["phone_number_type"], errors)
        fields["user_phone"] = _e164(raw["user_phone"], "user_phone", errors, required=False)
    elif contact_type is ContactType.WHATSAPP:
        fields["user_whatsapp_number"] = _e164(
            raw["user_whatsapp_number"], "user_whatsapp_number", errors, required=True
        )
        # Optional: force a dedicated sender or a pool sender (else the account's WABA
        # decides, worker/domain/whatsapp_pool.choose_mode).
        sender = raw["whatsapp_sender"]
        if sender is not None and sender not in WHATSAPP_SENDERS:
            errors["whatsapp_sender"] = "must be dedicated or shared"
        fields["whatsapp_sender"] = sender
    else:
        fields["email_local"] = _email_local(raw["email_local"], errors)
        fields["first_name"] = _name(raw["first_name"], "first_name", errors)
        fields["last_name"] = _name(raw["last_name"], "last_name", errors)
        provider = raw["email_provider"]
        if provider is not None and provider not in EMAIL_PROVIDERS:
            errors["email_provider"] = "must be google or microsoft"
        fields["email_provider"] = provider
    if errors:
        raise _invalid(errors)
    return ContactRequest(contact_type, fields)


def is_brought(request: dict[str, object]) -> bool:
    """Whether a normalised request records an address the customer already has."""
    return request.get("provisioned_by") == "user"


def _brought(contact_type: ContactType, address: str | None) -> dict[str, str | None]:
    """The fields of an existing address brought by the customer: only the address."""
    errors: dict[str, str] = {}
    if contact_type is ContactType.WHATSAPP:
        raise _invalid({"provisioned_by": "only phone and email addresses can be brought"})
    if contact_type is ContactType.PHONE:
        value = _e164(address, "address", errors, required=True)
    else:
        text = (address or "").strip()
        # Compared case-insensitively everywhere (as Google and Microsoft do): kept lower.
        value = text.lower()
        if not text or len(text) > ADDRESS_MAX or not _ADDRESS.match(value):
            errors["address"] = "is required: the email address, e.g. ada@example.com"
    if errors:
        raise _invalid(errors)
    return {"provisioned_by": "user", "address": value}


def _invalid(errors: dict[str, str]) -> InvalidRequest:
    names = ", ".join(sorted(errors))
    return InvalidRequest(f"invalid field(s): {names}", errors)


def _country(value: str | None, errors: dict[str, str]) -> str | None:
    code = (value or DEFAULT_COUNTRY).strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        errors["phone_country"] = "must be an ISO 3166-1 alpha-2 country code, e.g. US or GB"
        return None
    return code


def _number_type(value: str | None, errors: dict[str, str]) -> str | None:
    """A phone number type (`local` by default). Whether the country sells it is Twilio's
    to say (worker/app/regulations.RegulationRules.sells; `sold_types_error` words the
    refusal)."""
    kind = LOCAL if value is None else value.strip().lower()
    if kind not in NUMBER_TYPES:
        errors["phone_number_type"] = "must be one of " + ", ".join(NUMBER_TYPES)
        return None
    return kind


def unsold_type_error(
    country: str,
    kind: str,
    sold: tuple[str, ...],
    field: str = "phone_number_type",
    country_field: str = "phone_country",
) -> InvalidRequest:
    """The 422 for a number type `country` does not sell (`sold`: the ones it does; none:
    `country_field` is at fault)."""
    if not sold:
        return _invalid({country_field: f"Twilio sells no phone numbers in {country}"})
    have = ", ".join(sold)
    return _invalid({field: f"{country} has no {kind} numbers: one of {have}"})


def _e164(value: str | None, field: str, errors: dict[str, str], *, required: bool) -> str | None:
    if value is None or not value.strip():
        if required:
            errors[field] = "is required: a phone number in E.164 form, e.g. +14155552671"
        return None
    text = value.strip()
    if len(text) > PHONE_INPUT_MAX or not text.startswith("+"):
        errors[field] = "must be a phone number in E.164 form, e.g. +14155552671"
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        errors[field] = "must be a phone number in E.164 form, e.g. +14155552671"
        return None
    if not phonenumbers.is_valid_number(number):
        errors[field] = "is not a valid phone number for its country"
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email_local(value: str | None, errors: dict[str, str]) -> str | None:
    if value is None or not value:
        errors["email_local"] = "is required for email contacts"
        return None
    if len(value) > EMAIL_LOCAL_MAX:
        errors["email_local"] = f"must be at most {EMAIL_LOCAL_MAX} characters"
        return None
    if not _EMAIL_LOCAL.match(value):
        errors["email_local"] = (
            "may contain letters, digits, '.', '-', '_' and \"'\", "
            "with no leading, trailing or doubled period"
        )
        return None
    return value.lower()


def _name(value: str | None, field: str, errors: dict[str, str]) -> str | None:
    text = (value or "").strip()
    if not text:
        errors[field] = "is required for email contacts"
        return None
    if len(text) > NAME_MAX:
        errors[field] = f"must be at most {NAME_MAX} characters"
        return None
    if "<" in text or ">" in text or any(ord(c) < 32 for c in text):
        errors[field] = "must not contain '<', '>' or control characters"
        return None
    return text
