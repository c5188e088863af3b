"""The Twilio 2010 REST emulation: number search, purchase, list, update and release."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import phonenumbers
from sandbox_http import (
    ACCOUNT,
    NUMBERS,
    available_url,
    buy,
    first_available,
    number_url,
)

from sandbox.inventory import SUPPORTED_COUNTRIES
from sandbox.testing import SandboxControl

REQUIRED_COUNTRIES = ("US", "CA", "GB", "DE", "FR", "NL", "SE", "AU")


def test_search_offers_valid_local_numbers_for_every_country(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    assert set(REQUIRED_COUNTRIES) <= set(SUPPORTED_COUNTRIES)
    sandbox.reset(inventory_per_country=40)
    for country in SUPPORTED_COUNTRIES:
        response = twilio.get(available_url(country), params={"PageSize": 40})
        assert response.status_code == 200, (country, response.text)
        offered = response.json()["available_phone_numbers"]
        assert len(offered) == 40
        for item in offered:
            parsed = phonenumbers.parse(item["phone_number"], None)
            assert phonenumbers.is_valid_number(parsed), item
            assert phonenumbers.region_code_for_number(parsed) == country
            assert item["iso_country"] == country
            assert set(item["capabilities"]) >= {"voice", "SMS", "MMS"}


def test_search_envelope_and_page_size(twilio: httpx.Client) -> None:
    response = twilio.get(available_url("GB"), params={"PageSize": 3})
    body = response.json()
    assert len(body["available_phone_numbers"]) == 3
    assert body["page_size"] == 3
    assert body["uri"].startswith(available_url("GB"))
    assert {"first_page_uri", "next_page_uri", "previous_page_uri", "start", "end"} <= set(body)


def test_search_filters_by_area_code_and_contains(twilio: httpx.Client) -> None:
    by_area = twilio.get(available_url("US"), params={"AreaCode": "201", "PageSize": 5}).json()
    assert all(n["phone_number"].startswith("+1201") for n in by_area["available_phone_numbers"])
    none = twilio.get(available_url("US"), params={"AreaCode": "999"}).json()
    assert none["available_phone_numbers"] == []
    contains = twilio.get(available_url("US"), params={"Contains": "00*7", "PageSize": 5}).json()
    numbers = [n["phone_number"] for n in contains["available_phone_numbers"]]
    assert numbers and all(re.search(r"00\d7", n) for n in numbers)


def test_search_unknown_country_is_twilio_404(twilio: httpx.Client) -> None:
    response = twilio.get(available_url("XX"))
    assert response.status_code == 404
    assert response.json()["code"] == 20404
    assert response.json()["status"] == 404


def test_search_never_offers_sold_numbers(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    sandbox.reset(inventory_per_country=5)
    sold = buy(twilio)["phone_number"]
    for _ in range(3):
        offered = twilio.get(available_url("US"), params={"PageSize": 10}).json()
        numbers = [n["phone_number"] for n in offered["available_phone_numbers"]]
        assert sold not in numbers and len(numbers) == 4


def test_buy_returns_the_incoming_phone_number(twilio: httpx.Client) -> None:
    phone = first_available(twilio)
    response = twilio.post(
        NUMBERS,
        data={"PhoneNumber": phone, "FriendlyName": "c_1", "VoiceUrl": "https://example.com/v"},
    )
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"PN[0-9a-f]{32}", body["sid"])
    assert body["account_sid"] == ACCOUNT
    assert body["phone_number"] == phone
    assert body["friendly_name"] == "c_1"
    assert body["voice_url"] == "https://example.com/v"
    assert body["uri"] == number_url(body["sid"])
    assert body["date_created"].endswith("+0000")


def test_buy_without_friendly_name_defaults_to_formatted_number_and_no_tag(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    body = buy(twilio)
    assert body["friendly_name"].startswith("(")
    assert sandbox.resources()["phone_numbers"][0]["tag"] is None


def test_buying_a_sold_number_gives_21422(twilio: httpx.Client) -> None:
    phone = buy(twilio)["phone_number"]
    response = twilio.post(NUMBERS, data={"PhoneNumber": phone})
    assert response.status_code == 400
    assert response.json() == {
        "code": 21422,
        "message": "PhoneNumber requested is not available",
        "more_info": "https://www.twilio.com/docs/errors/21422",
        "status": 400,
    }


def test_buying_a_number_outside_the_inventory_gives_21422(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    sandbox.reset(inventory_per_country=3)
    response = twilio.post(NUMBERS, data={"PhoneNumber": "+14155550100"})
    assert response.status_code == 400 and response.json()["code"] == 21422


def test_sell_out_gives_21422_and_an_empty_search(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    sandbox.reset(inventory_per_country=2)
    first = buy(twilio, "SE")["phone_number"]
    buy(twilio, "SE")
    assert twilio.get(available_url("SE")).json()["available_phone_numbers"] == []
    response = twilio.post(NUMBERS, data={"PhoneNumber": first})
    assert response.status_code == 400 and response.json()["code"] == 21422


def test_purchase_validation_errors(twilio: httpx.Client) -> None:
    missing = twilio.post(NUMBERS, data={"FriendlyName": "x"})
    assert missing.status_code == 400 and missing.json()["code"] == 21452
    invalid = twilio.post(NUMBERS, data={"PhoneNumber": "555-0100"})
    assert invalid.status_code == 400 and invalid.json()["code"] == 21421
    too_long = twilio.post(
        NUMBERS, data={"PhoneNumber": first_available(twilio), "FriendlyName": "x" * 65}
    )
    assert too_long.status_code == 400 and too_long.json()["code"] == 20001


def test_buy_by_area_code(twilio: httpx.Client) -> None:
    response = twilio.post(NUMBERS, data={"AreaCode": "201"})
    assert response.status_code == 201 and response.json()["phone_number"].startswith("+1201")


def test_concurrent_buys_of_one_number_sell_it_once(
    sandbox: SandboxControl, twilio: httpx.Client
) -> None:
    phone = first_available(twilio)

    def attempt(i: int) -> int:
        with httpx.Client(base_url=sandbox.url, auth=(ACCOUNT, "t"), timeout=10) as client:
            return client.post(
                NUMBERS, data={"PhoneNumber": phone, "FriendlyName": f"c{i}"}
            ).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert statuses.count(201) == 1 and statuses.count(400) == 19
    owned = [n for n in sandbox.resources()["phone_numbers"] if n["address"] == phone]
    assert len(owned) == 1


def test_list_filters_by_friendly_name_and_phone_number(twilio: httpx.Client) -> None:
    a = buy(twilio, FriendlyName="c_a")
    buy(twilio, FriendlyName="c_b")
    by_name = twilio.get(NUMBERS, params={"FriendlyName": "c_a"}).json()
    assert [n["sid"] for n in by_name["incoming_phone_numbers"]] == [a["sid"]]
    by_number = twilio.get(NUMBERS, params={"PhoneNumber": a["phone_number"]}).json()
    assert [n["sid"] for n in by_number["incoming_phone_numbers"]] == [a["sid"]]
    assert (
        twilio.get(NUMBERS, params={"FriendlyName": "c_zz"}).json()["incoming_phone_numbers"] == []
    )


def test_list_pages_until_next_page_uri_is_null(twilio: httpx.Client) -> None:
    bought = [buy(twilio, FriendlyName="same")["sid"] for _ in range(5)]
    seen: list[str] = []
    page = twilio.get(NUMBERS, params={"FriendlyName": "same", "PageSize": 2}).json()
    pages = 1
    while True:
        assert page["page_size"] == 2 and page["first_page_uri"].startswith(NUMBERS)
        seen += [n["sid"] for n in page["incoming_phone_numbers"]]
        if page["next_page_uri"] is None:
            break
        page = twilio.get(page["next_page_uri"]).json()
        pages += 1
    assert seen == bought and pages == 3
    assert page["page"] == 2 and page["previous_page_uri"] is not None


def test_list_is_scoped_to_the_account(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    buy(twilio)
    other = "AC" + "b2" * 16
    with httpx.Client(base_url=sandbox.url, auth=(other, "t")) as client:
        listed = client.get(f"/2010-04-01/Accounts/{other}/IncomingPhoneNumbers.json").json()
    assert listed["incoming_phone_numbers"] == []


def test_fetch_update_and_release(sandbox: SandboxControl, twilio: httpx.Client) -> None:
    bought = buy(twilio, FriendlyName="c_1")
    url = number_url(bought["sid"])
    assert twilio.get(url).json()["phone_number"] == bought["phone_number"]

    updated = twilio.post(url, data={"VoiceUrl": "https://example.com/new", "FriendlyName": "c_2"})
    assert updated.status_code == 200
    assert updated.json()["voice_url"] == "https://example.com/new"
    assert updated.json()["friendly_name"] == "c_2"
    assert sandbox.resources()["phone_numbers"][0]["tag"] == "c_2"
    assert twilio.post(url, data={"FriendlyName": "y" * 65}).status_code == 400

    released = twilio.delete(url)
    assert released.status_code == 204 and released.content == b""
    assert sandbox.resources()["phone_numbers"] == []
    again = twilio.post(NUMBERS, data={"PhoneNumber": bought["phone_number"]})
    assert again.status_code == 201  # back in the inventory


def test_unknown_sid_is_twilio_404(twilio: httpx.Client) -> None:
    url = number_url("PN" + "0" * 32)
    for response in (
        twilio.get(url),
        twilio.post(url, data={"FriendlyName": "x"}),
        twilio.delete(url),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == 20404


def test_basic_auth_is_required(sandbox: SandboxControl) -> None:
    cases = [
        None,  # no credentials
        ("AC" + "c3" * 16, "token"),  # SID other than the path's
        (ACCOUNT, ""),  # empty token
    ]
    for auth in cases:
        with httpx.Client(base_url=sandbox.url, auth=auth) as client:
            for response in (client.get(NUMBERS), client.post(NUMBERS, data={"AreaCode": "201"})):
                assert response.status_code == 401
                assert response.json()["code"] == 20003
    assert sandbox.resources()["phone_numbers"] == []
