"""Twilio's regulatory rules in the sandbox, over plain HTTP: bundles' life, the number lists
per country and type with their address requirements, and purchases refused as Twilio
refuses them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_http import ACCOUNT, NUMBERS

from sandbox.testing import SandboxControl

BUNDLES = "/v2/RegulatoryCompliance/Bundles"
ADDRESSES = f"/2010-04-01/Accounts/{ACCOUNT}/Addresses.json"


def listed(twilio: httpx.Client, country: str, kind: str) -> httpx.Response:
    url = f"/2010-04-01/Accounts/{ACCOUNT}/AvailablePhoneNumbers/{country}/{kind}.json"
    return twilio.get(url, params={"PageSize": 2})


def offer(twilio: httpx.Client, country: str, kind: str = "Local") -> dict[str, Any]:
    response = listed(twilio, country, kind)
    assert response.status_code == 200, response.text
    first: dict[str, Any] = response.json()["available_phone_numbers"][0]
    return first


def bundle(twilio: httpx.Client, country: str, kind: str, **extra: str) -> dict[str, Any]:
    form = {"FriendlyName": "Acme", "Email": "ops@acme.example", "IsoCountry": country}
    response = twilio.post(
        BUNDLES, data={**form, "NumberType": kind, "EndUserType": "business", **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def approved(twilio: httpx.Client, sandbox: SandboxControl, country: str, kind: str) -> str:
    sid = str(bundle(twilio, country, kind)["sid"])
    assert twilio.post(f"{BUNDLES}/{sid}", data={"Status": "pending-review"}).status_code == 200
    sandbox.approve_bundle(sid)
    return sid


def address(twilio: httpx.Client, country: str, postal_code: str, **extra: str) -> httpx.Response:
    form = {"CustomerName": "Acme", "Street": "1 Main St", "City": "Town", "Region": "R"}
    return twilio.post(
        ADDRESSES, data={**form, "PostalCode": postal_code, "IsoCountry": country, **extra}
    )


def buy(twilio: httpx.Client, number: str, **docs: str) -> httpx.Response:
    return twilio.post(NUMBERS, data={"PhoneNumber": number, "FriendlyName": "ct_x", **docs})


@pytest.mark.parametrize(
    ("country", "kind", "requirement"),
    [
        ("US", "Local", "none"),
        ("US", "TollFree", "none"),
        ("CA", "Local", "none"),
        ("GB", "Local", "any"),
        ("GB", "Mobile", "any"),
        ("GB", "National", "any"),
        ("GB", "TollFree", "any"),
        ("DE", "Local", "local"),
        ("DE", "Mobile", "any"),
        ("FR", "Local", "local"),
        ("AU", "Local", "local"),
        ("AU", "Mobile", "any"),
        ("IE", "Local", "local"),
        ("IE", "National", "any"),
    ],
)
def test_each_list_shows_its_address_requirement(
    twilio: httpx.Client, country: str, kind: str, requirement: str
) -> None:
    assert offer(twilio, country, kind)["address_requirements"] == requirement


def test_a_list_the_country_lacks_is_404_and_exclude_filters_apply(twilio: httpx.Client) -> None:
    for country, kind in (("US", "Mobile"), ("US", "National"), ("AU", "National")):
        assert listed(twilio, country, kind).status_code == 404
    url = f"/2010-04-01/Accounts/{ACCOUNT}/AvailablePhoneNumbers/DE/Local.json"
    excluded = twilio.get(url, params={"ExcludeLocalAddressRequired": "true"})
    assert excluded.json()["available_phone_numbers"] == []
    kept = twilio.get(url, params={"ExcludeAllAddressRequired": "true"})
    assert kept.json()["available_phone_numbers"]


def test_regulations_say_what_each_country_and_type_needs(twilio: httpx.Client) -> None:
    found = twilio.get(
        "/v2/RegulatoryCompliance/Regulations",
        params={"IsoCountry": "DE", "NumberType": "local", "EndUserType": "business"},
    ).json()
    [regulation] = found["results"]
    assert found["meta"]["key"] == "results"
    assert (regulation["iso_country"], regulation["number_type"]) == ("DE", "local")
    assert regulation["requirements"]["supporting_document"]  # a proof of address
    fetched = twilio.get(f"/v2/RegulatoryCompliance/Regulations/{regulation['sid']}")
    assert fetched.json()["sid"] == regulation["sid"]
    us = twilio.get("/v2/RegulatoryCompliance/Regulations", params={"IsoCountry": "US"})
    assert us.json()["results"] == []


def test_bundle_life_draft_submitted_reviewed(
    twilio: httpx.Client, sandbox: SandboxControl
) -> None:
    made = bundle(twilio, "GB", "mobile")
    assert made["status"] == "draft" and made["sid"].startswith("BU")
    assert made["regulation_sid"].startswith("RN")
    with pytest.raises(httpx.HTTPStatusError):  # a draft is not under review
        sandbox.approve_bundle(made["sid"])
    forbidden = twilio.post(f"{BUNDLES}/{made['sid']}", data={"Status": "twilio-approved"})
    assert forbidden.status_code == 400
    submitted = twilio.post(f"{BUNDLES}/{made['sid']}", data={"Status": "pending-review"})
    assert submitted.json()["status"] == "pending-review"
    assert sandbox.approve_bundle(made["sid"])["status"] == "twilio-approved"
    assert sandbox.reject_bundle(made["sid"])["status"] == "twilio-rejected"
    listing = twilio.get(BUNDLES, params={"Status": "twilio-rejected"}).json()
    assert [b["sid"] for b in listing["results"]] == [made["sid"]]
    test_bundle = bundle(twilio, "GB", "mobile", IsTest="true")
    auto = twilio.post(f"{BUNDLES}/{test_bundle['sid']}", data={"Status": "pending-review"})
    assert auto.json()["status"] == "twilio-rejected"  # Twilio: test bundles are auto-rejected
    other = httpx.get(sandbox.url + f"{BUNDLES}/{made['sid']}", auth=("AC" + "b2" * 16, "t"))
    assert other.status_code == 404
    assert twilio.post(BUNDLES, data={"FriendlyName": "x"}).json()["code"] == 20001
    no_rule = twilio.post(
        BUNDLES,
        data={"FriendlyName": "x", "Email": "a@b.example", "IsoCountry": "US"}
        | {"NumberType": "local", "EndUserType": "business"},
    )
    assert no_rule.status_code == 400 and no_rule.json()["code"] == 22200


def test_addresses_are_validated_where_twilio_validates(twilio: httpx.Client) -> None:
    assert address(twilio, "DE", "1011").json()["code"] == 21628
    suggested = address(twilio, "GB", "sw1a1aa", AutoCorrectAddress="false").json()
    assert suggested["code"] == 21629 and "SW1A 1AA" in suggested["message"]
    corrected = address(twilio, "GB", "sw1a1aa")
    assert corrected.status_code == 201 and corrected.json()["postal_code"] == "SW1A 1AA"
    assert address(twilio, "US", "anything").status_code == 201  # not validated there
    missing = twilio.post(ADDRESSES, data={"CustomerName": "x"})
    assert missing.status_code == 400 and "Street" in missing.json()["message"]
    sid = corrected.json()["sid"]
    assert twilio.get(f"/2010-04-01/Accounts/{ACCOUNT}/Addresses/{sid}.json").status_code == 200
    assert sid in [a["sid"] for a in twilio.get(ADDRESSES).json()["addresses"]]


def test_purchase_refusals(twilio: httpx.Client, sandbox: SandboxControl) -> None:
    number = offer(twilio, "DE")["phone_number"]
    berlin = address(twilio, "DE", "10117").json()["sid"]
    london = address(twilio, "GB", "SW1A 1AA").json()["sid"]
    de_local = approved(twilio, sandbox, "DE", "local")
    de_mobile = approved(twilio, sandbox, "DE", "mobile")
    draft = bundle(twilio, "DE", "local")["sid"]

    def code(**docs: str) -> int:
        answer = buy(twilio, number, **docs)
        assert answer.status_code == 400, answer.text
        return int(answer.json()["code"])

    assert code(AddressSid=berlin) == 21649  # no bundle
    assert code(BundleSid=draft, AddressSid=berlin) == 21649  # not approved
    assert code(BundleSid=de_mobile, AddressSid=berlin) == 21649  # another number type
    assert code(BundleSid=de_local) == 21631  # no address
    assert code(BundleSid=de_local, AddressSid=london) == 21631  # not local
    assert code(BundleSid=de_local, AddressSid="AD" + "0" * 32) == 21631
    sandbox.reject_bundle(de_local)
    assert code(BundleSid=de_local, AddressSid=berlin) == 21649  # rejected since
    fresh = approved(twilio, sandbox, "DE", "local")
    sandbox.invalidate_address(berlin)
    assert code(BundleSid=fresh, AddressSid=berlin) == 21628
    assert not [n for n in sandbox.resources()["phone_numbers"] if n["address"] == number]
    berlin_again = address(twilio, "DE", "10117").json()["sid"]
    bought = buy(twilio, number, BundleSid=fresh, AddressSid=berlin_again)
    assert bought.status_code == 201, bought.text
    assert bought.json()["bundle_sid"] == fresh and bought.json()["address_sid"] == berlin_again
    [held] = sandbox.resources()["phone_numbers"]
    assert (held["bundle_sid"], held["address_sid"], held["number_type"]) == (
        fresh,
        berlin_again,
        "local",
    )


def test_us_numbers_need_nothing(twilio: httpx.Client, sandbox: SandboxControl) -> None:
    bought = buy(twilio, offer(twilio, "US")["phone_number"])
    assert bought.status_code == 201
    assert bought.json()["bundle_sid"] is None and bought.json()["address_requirements"] == "none"
    gb_bundle = approved(twilio, sandbox, "GB", "local")
    wrong = buy(twilio, offer(twilio, "US", "TollFree")["phone_number"], BundleSid=gb_bundle)
    assert wrong.json()["code"] == 21649  # a bundle given must fit the number
