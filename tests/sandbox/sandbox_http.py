"""Paths and helpers for talking to the sandbox's provider protocols with plain httpx."""

from __future__ import annotations

from typing import Any

import httpx

ACCOUNT = "AC" + "a1" * 16
NUMBERS = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
SENDERS = "/v2/Channels/Senders"
USERS = "/admin/directory/v1/users"
# The WABA every sandbox reset registers (sandbox.state.DEFAULT_WABA_ID).
DEFAULT_WABA = "100000000000001"


def available_url(country: str, account: str = ACCOUNT) -> str:
    return f"/2010-04-01/Accounts/{account}/AvailablePhoneNumbers/{country}/Local.json"


def number_url(sid: str, account: str = ACCOUNT) -> str:
    return f"/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"


def first_available(twilio: httpx.Client, country: str = "US") -> str:
    response = twilio.get(available_url(country), params={"PageSize": 1})
    assert response.status_code == 200, response.text
    number: str = response.json()["available_phone_numbers"][0]["phone_number"]
    return number


def buy(twilio: httpx.Client, country: str = "US", **fields: str) -> dict[str, Any]:
    """Buys the first available number of `country`; returns the IncomingPhoneNumber."""
    data = {"PhoneNumber": first_available(twilio, country), **fields}
    response = twilio.post(NUMBERS, data=data)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def user_body(email: str = "ada@assistants.example.com", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "primaryEmail": email,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "password": "correct horse battery",
        "changePasswordAtNextLogin": False,
        "externalIds": [{"type": "custom", "customType": "contact_id", "value": "c_123"}],
    }
    body.update(overrides)
    return body
