"""The sandbox's Regulations resource as Twilio shapes it (twilio-oai's
`numbers.v2.regulatory_compliance.regulation`, v2 list envelope), and the control that changes
what a country's number type needs: the Regulations, the numbers' `address_requirements` and
the purchase follow the change at once, and a reset brings the built-in rules back."""

from __future__ import annotations

import httpx
from sandbox_http import ACCOUNT
from test_sandbox_regulatory import listed, offer

from sandbox.testing import SandboxControl

REGULATIONS = "/v2/RegulatoryCompliance/Regulations"
NUMBERS_URL = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"


def test_a_regulation_has_twilios_fields_and_the_list_pages_in_the_v2_envelope(
    twilio: httpx.Client,
) -> None:
    first = twilio.get(REGULATIONS, params={"IsoCountry": "GB", "PageSize": 3}).json()
    assert first["meta"]["key"] == "results" and first["meta"]["page_size"] == 3
    assert first["meta"]["previous_page_url"] is None and first["meta"]["next_page_url"]
    regulation = first["results"][0]
    assert set(regulation) == {
        "sid", "friendly_name", "iso_country", "number_type", "end_user_type", "requirements",
        "url",
    }  # fmt: skip
    assert regulation["sid"].startswith("RN") and len(regulation["sid"]) == 34
    assert set(regulation["requirements"]) == {"end_user", "supporting_document"}
    [end_user] = regulation["requirements"]["end_user"]
    assert end_user["type"] == regulation["end_user_type"] and end_user["detailed_fields"]
    [[proof]] = regulation["requirements"]["supporting_document"]
    assert proof["requirement_name"] == "proof_of_address"
    assert proof["accepted_documents"][0]["type"] == "address"
    # GB: four number types, two end-user types each, on three pages of three.
    seen = list(first["results"])
    url = first["meta"]["next_page_url"]
    while url:
        page = twilio.get(url).json()
        seen += page["results"]
        url = page["meta"]["next_page_url"]
    assert len(seen) == 8 and len({r["sid"] for r in seen}) == 8
    assert {r["number_type"] for r in seen} == {"local", "mobile", "national", "toll-free"}


def test_the_filters_narrow_to_one_regulation(twilio: httpx.Client) -> None:
    found = twilio.get(
        REGULATIONS, params={"IsoCountry": "DE", "NumberType": "local", "EndUserType": "individual"}
    ).json()["results"]
    assert [(r["iso_country"], r["number_type"], r["end_user_type"]) for r in found] == [
        ("DE", "local", "individual")
    ]
    assert twilio.get(REGULATIONS, params={"NumberType": "landline"}).status_code == 400


def test_a_rule_changed_by_the_control_is_what_twilio_answers_from_then_on(
    twilio: httpx.Client, sandbox: SandboxControl
) -> None:
    assert twilio.get(REGULATIONS, params={"IsoCountry": "US"}).json()["results"] == []
    number = offer(twilio, "US")["phone_number"]
    assert offer(twilio, "US")["address_requirements"] == "none"

    changed = sandbox.set_regulation("US", "local", bundle=True, address="local")
    assert changed == {"country": "US", "number_type": "local", "bundle": True, "address": "local"}
    found = twilio.get(REGULATIONS, params={"IsoCountry": "US", "NumberType": "local"}).json()
    assert {r["end_user_type"] for r in found["results"]} == {"individual", "business"}
    assert (
        "locality"
        in found["results"][0]["requirements"]["supporting_document"][0][0]["description"]
    )
    assert offer(twilio, "US")["address_requirements"] == "local"
    refused = twilio.post(NUMBERS_URL, data={"PhoneNumber": number})
    assert refused.status_code == 400 and refused.json()["code"] == 21649

    # GB loses its bundle requirement: no regulation is left for it, only its address rule.
    sandbox.set_regulation("GB", "mobile", bundle=False, address="none")
    gb = twilio.get(REGULATIONS, params={"IsoCountry": "GB", "NumberType": "mobile"}).json()
    assert gb["results"] == []
    assert offer(twilio, "GB", "Mobile")["address_requirements"] == "none"

    sandbox.reset()
    assert twilio.get(REGULATIONS, params={"IsoCountry": "US"}).json()["results"] == []
    assert (
        listed(twilio, "US", "Local").json()["available_phone_numbers"][0]["address_requirements"]
        == "none"
    )


def test_the_control_refuses_a_type_the_country_does_not_sell_and_a_bad_rule(
    sandbox: SandboxControl,
) -> None:
    with httpx.Client(base_url=sandbox.url, timeout=5.0) as client:
        assert (
            client.put(
                "/_sandbox/twilio/regulations/US/mobile", json={"bundle": True, "address": "any"}
            ).status_code
            == 404
        )
        assert (
            client.put(
                "/_sandbox/twilio/regulations/GB/local", json={"bundle": True, "address": "near"}
            ).status_code
            == 422
        )
