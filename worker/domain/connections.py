"""Validation of the provider connection bodies (`PUT /v0/providers/google|microsoft`): what
is kept readable (`config`, `domain`) apart from what is sealed (`secrets`); every error
names its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pycountry

from worker.domain.errors import InvalidRequest

GOOGLE = "google"
MICROSOFT = "microsoft"
PROVIDERS = (GOOGLE, MICROSOFT)  # email providers
# An account's own WhatsApp Business Account (`PUT /v0/providers/whatsapp`): no secret, no
# domain; its senders are registered under it.
WHATSAPP = "whatsapp"
# Meta's WABA ids are numeric (15 or 16 digits in practice).
_WABA_ID = re.compile(r"^[0-9]{5,20}$")

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._'+-]{1,64}@(?P<domain>[A-Za-z0-9.-]{1,253})$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SKU_PART = re.compile(r"^[A-Z0-9_]{2,64}$")
SECRET_MAX = 1024
KEY_MAX = 16 * 1024


@dataclass(frozen=True)
class ConnectionRequest:
    provider: str
    domain: str
    config: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)


def validate_connection(provider: str, body: Any) -> ConnectionRequest:
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object", {"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    domain = domain_name(body.get("domain"), "domain", errors)
    if provider == GOOGLE:
        request = _google(body, domain, errors)
    else:
        request = _microsoft(body, domain, errors)
    if errors:
        raise InvalidRequest(f"invalid field(s): {', '.join(sorted(errors))}", errors)
    return request


def domain_name(value: Any, name: str, errors: dict[str, str]) -> str:
    text = value.strip().lower().rstrip(".") if isinstance(value, str) else ""
    if not _DOMAIN.match(text):
        errors[name] = "is required: a domain name, e.g. example.com"
    return text


def is_email(value: str) -> bool:
    match = _EMAIL.match(value)
    return match is not None and _DOMAIN.match(match["domain"].lower()) is not None


def _google(body: Mapping[str, Any], domain: str, errors: dict[str, str]) -> ConnectionRequest:
    subject = body.get("admin_subject")
    if not isinstance(subject, str) or not is_email(subject.strip()):
        errors["admin_subject"] = "is required: the email address of a Workspace admin"
        subject = ""
    key = body.get("service_account")
    problem = _key_problem(key)
    if problem:
        errors["service_account"] = problem
    info: dict[str, Any] = dict(key) if isinstance(key, Mapping) else {}
    return ConnectionRequest(
        GOOGLE,
        domain,
        {
            "admin_subject": subject.strip().lower(),
            "client_email": info.get("client_email"),
            "private_key_id": info.get("private_key_id"),
        },
        {"service_account": info},
    )


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, Mapping):
        return "is required: the service account's JSON key, as downloaded"
    if len(str(key)) > KEY_MAX:
        return "is too large for a service account key"
    if key.get("type") != "service_account":
        return 'must be a service account key ("type": "service_account")'
    email = key.get("client_email")
    if not isinstance(email, str) or not is_email(email):
        return "must have client_email"
    private_key = key.get("private_key")
    if not isinstance(private_key, str) or "PRIVATE KEY-----" not in private_key:
        return "must have private_key (PEM)"
    return None


def _microsoft(body: Mapping[str, Any], domain: str, errors: dict[str, str]) -> ConnectionRequest:
    tenant = body.get("tenant_id")
    tenant_text = tenant.strip().lower() if isinstance(tenant, str) else ""
    if not (_GUID.match(tenant_text) or _DOMAIN.match(tenant_text)):
        errors["tenant_id"] = "is required: the directory (tenant) id, a GUID"
    client_id = body.get("client_id")
    client_text = client_id.strip().lower() if isinstance(client_id, str) else ""
    if not _GUID.match(client_text):
        errors["client_id"] = "is required: the application (client) id, a GUID"
    secret = body.get("client_secret")
    if not isinstance(secret, str) or not secret or len(secret) > SECRET_MAX:
        errors["client_secret"] = "is required: the client secret's value"  # noqa: S105
        secret = ""
    sku = body.get("license_sku")
    sku_text = sku.strip() if isinstance(sku, str) else ""
    if not (_GUID.match(sku_text) or _SKU_PART.match(sku_text)):
        errors["license_sku"] = "is required: a SKU id (GUID) or part number such as SPE_E3"
    location = body.get("usage_location", "US")
    location_text = location.strip().upper() if isinstance(location, str) else ""
    if len(location_text) != 2 or pycountry.countries.get(alpha_2=location_text) is None:
        errors["usage_location"] = "must be an ISO 3166-1 alpha-2 country code, e.g. US"
    return ConnectionRequest(
        MICROSOFT,
        domain,
        {
            "tenant_id": tenant_text,
            "client_id": client_text,
            "license_sku": sku_text,
            "usage_location": location_text,
        },
        {"client_secret": secret},
    )


def validate_waba(body: Any) -> str:
    """The `waba_id` of a `PUT /v0/providers/whatsapp` body."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object", {"body": "must be a JSON object"})
    value = body.get("waba_id")
    text = value.strip() if isinstance(value, str) else ""
    if not _WABA_ID.match(text):
        raise InvalidRequest(
            "invalid field(s): waba_id",
            {"waba_id": "is required: the WhatsApp Business Account id, digits only"},
        )
    return text
